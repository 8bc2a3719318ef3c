"""Output parity of a runner against a reference on the same inputs.

Two numbers, logged per run (metric names as ARCHITECTURE.md spells them):

- ``parity_max_abs``: :func:`max_abs_difference` of the raw Detect outputs (before decode/NMS);
- ``parity_box_agreement``: :func:`box_agreement` of the detections after NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from yolomlu.model.outputs import max_abs_difference
from yolomlu.types import Detections

__all__ = ["box_agreement", "box_iou", "max_abs_difference", "matched_pairs"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4] (x1 y1 x2 y2) -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def matched_pairs(reference: Detections, candidate: Detections, iou: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one matches (reference index, candidate index) between the boxes of one image.

    Only boxes of the same class with IoU >= ``iou`` can match; pairs are taken greedily, highest
    IoU first (ties: lower reference, then lower candidate index), each box at most once. Scores do
    not enter: both sides are already the detections the thresholds kept.
    """
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must lie in (0, 1], got {iou}")
    if len(reference) == 0 or len(candidate) == 0:
        return []
    overlap = box_iou(reference.boxes, candidate.boxes)
    overlap[reference.labels[:, None] != candidate.labels[None, :]] = -1.0
    r, c = np.nonzero(overlap >= iou)
    order = np.lexsort((c, r, -overlap[r, c]))  # last key sorts first: IoU descending
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for i, j in zip(r[order].tolist(), c[order].tolist()):
        if i not in used_r and j not in used_c:
            used_r.add(i)
            used_c.add(j)
            pairs.append((i, j))
    return pairs


def box_agreement(reference: Sequence[Detections], candidate: Sequence[Detections], iou: float = 0.5) -> float:
    """How far two runs' detections agree, 0..1: the F1 (Dice) score of matched boxes over all images.

    agreement = 2 * matched / (reference boxes + candidate boxes), summed over the images, where
    ``matched`` counts the one-to-one same-class matches at IoU >= ``iou`` (:func:`matched_pairs`).
    It is symmetric: a box the candidate loses and a box it invents cost the same. 1.0 when both
    sides found exactly the same boxes, including when neither found any.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"reference has {len(reference)} images, candidate {len(candidate)}")
    matched = sum(len(matched_pairs(r, c, iou)) for r, c in zip(reference, candidate))
    total = sum(len(r) + len(c) for r, c in zip(reference, candidate))
    return 1.0 if total == 0 else 2.0 * matched / total
