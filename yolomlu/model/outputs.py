"""Comparing two models' outputs: the one measure of numerical equivalence every check shares."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["max_abs_difference"]


def max_abs_difference(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor]) -> float:
    """max |candidate - reference| over every element of every output level, in float64.

    Both are the per-level outputs of one batch (a YOLOv5 gives nl raw head maps
    [B, na * (nc + 5), H / s_i, W / s_i]), on any device and in any float dtype. NaN if either
    holds a NaN, so any ``< tolerance`` check fails. The number of levels and every shape must
    agree exactly (a broadcast would hide a wrong batch or layout): else ValueError.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"reference has {len(reference)} output levels, candidate {len(candidate)}")
    worst = 0.0
    for level, (r, c) in enumerate(zip(reference, candidate)):
        if r.shape != c.shape:
            raise ValueError(f"output level {level}: reference shape {tuple(r.shape)} != candidate shape {tuple(c.shape)}")
        if r.numel() == 0:
            continue
        diff = (c.double() - r.double().to(c.device)).abs().max().item()
        if diff != diff:  # NaN: report it rather than let max() drop it
            return float("nan")
        worst = max(worst, diff)
    return worst
