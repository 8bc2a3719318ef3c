"""parity_max_abs by hand, and apply_transforms reporting each step of a chain on real-ish images."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from yolomlu.model import SPP, SPPF, Conv, Focus
from yolomlu.transforms import TransformReport, apply_transforms, parity_max_abs


class _Const(nn.Module):
    """Returns fixed tensors whatever the input (to give parity_max_abs hand-made outputs)."""

    def __init__(self, *outs: torch.Tensor) -> None:
        super().__init__()
        self.outs = list(outs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.outs


def test_parity_is_the_largest_difference_over_all_levels():
    a = _Const(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 1, 1))
    b = _Const(torch.full((1, 3, 2, 2), -0.25), torch.tensor([0.0, 0.5, -0.125]).view(1, 3, 1, 1))
    assert parity_max_abs(a, b, torch.zeros(1)) == 0.5
    assert parity_max_abs(a, a, torch.zeros(1)) == 0.0


def test_parity_of_a_perturbed_head_bias(yolov5n, real_batch):
    model, other = yolov5n("v5"), yolov5n("v5")
    with torch.no_grad():
        other.detect.m[1].bias[7] += 0.25  # moves exactly one output channel of level 1 by 0.25
    p = parity_max_abs(model, other, real_batch(64, 64))
    assert abs(p - 0.25) < 1e-5


def test_parity_mismatches_and_nan():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="2 output levels, candidate 1"):
        parity_max_abs(_Const(torch.zeros(2), torch.zeros(2)), _Const(torch.zeros(2)), x)
    with pytest.raises(ValueError, match=r"output level 0: reference shape \(2,\) != candidate shape \(3,\)"):
        parity_max_abs(_Const(torch.zeros(2)), _Const(torch.zeros(3)), x)
    assert math.isnan(parity_max_abs(_Const(torch.zeros(2)), _Const(torch.tensor([1.0, math.nan])), x))


def test_parity_measures_in_eval_mode_and_restores_the_flags(yolov5n, real_batch):
    model = yolov5n("v5").train()
    model.model[3].eval()  # a mixed state must come back as it was, not as model.train()
    flags = [m.training for m in model.modules()]
    stats = model.model[1].bn.running_mean.clone()
    assert parity_max_abs(model, model, real_batch(64, 64)) == 0.0
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(model.model[1].bn.running_mean, stats)  # eval mode: BN statistics did not move


def test_apply_transforms_reports_each_step(yolov5n, real_batch):
    model = yolov5n("v5")
    n_conv = sum(isinstance(m, Conv) for m in model.modules())  # the Focus's inner Conv included
    reports = apply_transforms(model, ["focus_to_conv", "spp_to_sppf", "fuse"], real_batch(64, 96))
    assert [(r.name, r.replaced) for r in reports] == [("focus_to_conv", 1), ("spp_to_sppf", 1), ("fuse", n_conv)]
    assert all(isinstance(r, TransformReport) and r.parity_max_abs < 1e-4 for r in reports)
    assert reports[1].parity_max_abs < 1e-6  # SPP -> SPPF takes maxima of the same values
    assert not any(isinstance(m, (Focus, SPP)) for m in model.modules())
    assert isinstance(model.model[8], SPPF)
    assert all(m.bn is None for m in model.modules() if isinstance(m, Conv))
    # the whole chain against the untouched model: no worse than the steps added up
    total = parity_max_abs(yolov5n("v5"), model, real_batch(64, 96))
    assert total <= sum(r.parity_max_abs for r in reports) + 1e-6


def test_apply_transforms_without_a_batch_measures_nothing(yolov5n):
    model = yolov5n("v5")
    reports = apply_transforms(model, ["focus_to_conv"], None)
    assert reports == [TransformReport("focus_to_conv", 1, None)]
    assert isinstance(model.model[0], Conv)


def test_a_step_with_nothing_to_do_is_reported_not_refused(yolov5n, real_batch):
    reports = apply_transforms(yolov5n("v6"), ["focus_to_conv", "spp_to_sppf"], real_batch(64, 64))
    assert reports == [TransformReport("focus_to_conv", 0, 0.0), TransformReport("spp_to_sppf", 0, 0.0)]
