import math

import pytest
import torch

from yolomlu.model.outputs import max_abs_difference


def test_the_largest_difference_over_all_levels() -> None:
    ref = [torch.zeros(1, 6, 4, 4), torch.zeros(1, 6, 2, 2, dtype=torch.float16)]
    cand = [torch.zeros(1, 6, 4, 4), torch.full((1, 6, 2, 2), 0.5, dtype=torch.float16)]
    cand[0][0, 1, 2, 3] = -0.75
    assert max_abs_difference(ref, cand) == 0.75


def test_a_nan_output_is_reported_not_hidden() -> None:
    cand = [torch.zeros(1, 2, 2, 2)]
    cand[0][0, 0, 0, 0] = float("nan")
    assert math.isnan(max_abs_difference([torch.zeros(1, 2, 2, 2)], cand))


def test_levels_and_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="2 output levels, candidate 1"):
        max_abs_difference([torch.zeros(1), torch.zeros(1)], [torch.zeros(1)])
    with pytest.raises(ValueError, match=r"output level 0: reference shape \(1, 2\) != candidate shape \(2, 1\)"):
        max_abs_difference([torch.zeros(1, 2)], [torch.zeros(2, 1)])
