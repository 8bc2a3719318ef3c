"""Parity helpers, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolomlu.evaluate.parity import box_agreement, box_iou, matched_pairs, max_abs_difference
from yolomlu.types import Detections


def dets(*rows: tuple[float, float, float, float, int]) -> Detections:
    """Detections from (x1, y1, x2, y2, label) rows; scores are irrelevant to agreement."""
    if not rows:
        return Detections.empty()
    array = np.array(rows, dtype=np.float64)
    return Detections(array[:, :4].astype(np.float32), np.full(len(rows), 0.9, np.float32), array[:, 4].astype(np.int64))


def test_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    # [5,0,15,10]: intersection 5x10 = 50, union 100 + 100 - 50 = 150; a zero-area box: IoU 0, not NaN
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1.0, 0.0, 0.0]])


def test_identical_detections_agree_fully_and_empty_images_count_as_agreement() -> None:
    image = dets((0, 0, 10, 10, 0), (20, 20, 40, 40, 1))
    assert box_agreement([image, dets()], [image, dets()]) == 1.0
    assert box_agreement([dets()], [dets()]) == 1.0


def test_one_missing_and_one_invented_box() -> None:
    reference = [dets((0, 0, 10, 10, 0), (20, 20, 40, 40, 1))]
    candidate = [dets((1, 0, 11, 10, 0), (50, 50, 60, 60, 1))]
    # (1,0,11,10) vs (0,0,10,10): inter 9x10 = 90, union 110, IoU 0.818 -> a match; the other two
    # boxes do not overlap. matched 1 of 2 + 2 boxes: 2 * 1 / 4.
    assert box_agreement(reference, candidate) == pytest.approx(0.5)
    assert box_agreement(candidate, reference) == pytest.approx(0.5)  # symmetric


def test_a_box_of_another_class_does_not_match() -> None:
    assert box_agreement([dets((0, 0, 10, 10, 0))], [dets((0, 0, 10, 10, 3))]) == 0.0


def test_iou_threshold_is_inclusive_and_configurable() -> None:
    reference = [dets((0, 0, 10, 10, 0))]
    candidate = [dets((5, 0, 15, 10, 0))]  # IoU exactly 1/3
    assert box_agreement(reference, candidate, iou=0.5) == 0.0
    assert box_agreement(reference, candidate, iou=1 / 3) == 1.0
    with pytest.raises(ValueError, match=r"iou must lie in \(0, 1\], got 0"):
        box_agreement(reference, candidate, iou=0)


def test_each_box_matches_once_best_overlap_first() -> None:
    # Two candidate boxes over one reference box: one match, the closer one; the duplicate costs.
    reference = dets((0, 0, 10, 10, 0))
    candidate = dets((0, 0, 10, 9, 0), (0, 0, 10, 10, 0))  # IoU 0.9 and 1.0
    assert matched_pairs(reference, candidate) == [(0, 1)]
    assert box_agreement([reference], [candidate]) == pytest.approx(2 * 1 / 3)


def test_greedy_pairs_highest_iou_first_across_boxes() -> None:
    # r0 overlaps c0 (IoU 60/100) and c1 (70/130 = 0.54); r1 overlaps c1 (90/110 = 0.82) and c0
    # (20/140, below 0.5). Highest first: (r1, c1), then (r0, c0); (r0, c1) is skipped, c1 is taken.
    reference = dets((0, 0, 10, 10, 0), (4, 0, 14, 10, 0))
    candidate = dets((0, 0, 6, 10, 0), (3, 0, 13, 10, 0))
    overlap = box_iou(reference.boxes, candidate.boxes)
    np.testing.assert_allclose(overlap, [[0.6, 70 / 130], [20 / 140, 90 / 110]], rtol=1e-6)
    assert matched_pairs(reference, candidate) == [(1, 1), (0, 0)]
    assert box_agreement([reference], [candidate]) == 1.0


def test_agreement_pools_boxes_over_images() -> None:
    # Image 1: 3 boxes each side, all matched. Image 2: 1 reference box, none found.
    a = dets((0, 0, 10, 10, 0), (20, 0, 30, 10, 1), (40, 0, 50, 10, 2))
    reference = [a, dets((0, 0, 10, 10, 0))]
    candidate = [a, dets()]
    assert box_agreement(reference, candidate) == pytest.approx(2 * 3 / (4 + 3))


def test_image_counts_must_agree() -> None:
    with pytest.raises(ValueError, match="reference has 2 images, candidate 1"):
        box_agreement([dets(), dets()], [dets()])


def test_max_abs_difference_checks_shapes() -> None:
    ref = [torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 1, 1)]
    cand = [torch.zeros(1, 3, 2, 2), torch.full((1, 3, 1, 1), -0.25)]
    assert max_abs_difference(ref, cand) == 0.25
    with pytest.raises(ValueError, match=r"output level 1: reference shape \(1, 3, 1, 1\) != candidate shape \(2, 3, 1, 1\)"):
        max_abs_difference(ref, [cand[0], torch.zeros(2, 3, 1, 1)])
    with pytest.raises(ValueError, match="reference has 2 output levels, candidate 1"):
        max_abs_difference(ref, cand[:1])
