"""SPP -> SPPF: exact on its own and inside yolov5n_v5; pools that do not chain are refused by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolomlu.model import SPP, SPPF, fuse_conv_bn
from yolomlu.transforms import parity_max_abs, spp_as_sppf, spp_to_sppf, sppf_kernel_for


@pytest.mark.parametrize(("kernels", "k"), [((5, 9, 13), 5), ((3, 5, 7), 3), ((7, 13, 19), 7)])
def test_lone_spp_equals_sppf(randomise_bn, kernels, k):
    torch.manual_seed(0)
    spp = SPP(16, 8, kernels)
    randomise_bn(spp)
    spp.eval()
    x = torch.randn(2, 16, 13, 11)  # odd, non-square, smaller than the largest pool: the borders matter
    with torch.no_grad():
        ref = spp(x)
        sppf = spp_as_sppf(spp)
        out = sppf(x)
    assert isinstance(sppf, SPPF) and sppf.m.kernel_size == k and not sppf.training
    assert sppf.cv1 is spp.cv1 and sppf.cv2 is spp.cv2  # the same weights, not copies
    assert (out - ref).abs().max().item() < 1e-6


@pytest.mark.parametrize(
    ("kernels", "message"),
    [
        ((5, 9), "exactly 3 times"),
        ((5, 9, 13, 17), "exactly 3 times"),
        ((5, 7, 9), r"\(5, 7, 9\) do not chain.*\(5, 9, 13\)"),
        ((4, 7, 10), r"do not chain.*k=4"),
        ((1, 1, 1), "do not chain"),
    ],
)
def test_kernels_that_do_not_chain_are_refused(kernels, message):
    with pytest.raises(ValueError, match=message):
        sppf_kernel_for(kernels)


def test_a_refusal_leaves_the_model_unchanged():
    model = nn.Sequential(SPP(8, 8, (5, 9, 13)), SPP(8, 8, (5, 7, 9)))
    with pytest.raises(ValueError, match="do not chain"):
        spp_to_sppf(model)
    assert all(type(m) is SPP for m in model)


def test_pools_other_than_same_stride_1_are_refused():
    spp = SPP(8, 8)
    spp.m[1] = nn.MaxPool2d(9, stride=2, padding=4)
    with pytest.raises(ValueError, match="stride-1 'same' max pools"):
        spp_as_sppf(spp)


@pytest.mark.parametrize("fused_first", [False, True], ids=["unfused", "fused_first"])
@pytest.mark.parametrize("hw", [(64, 64), (64, 96)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_yolov5n_v5_spp_to_sppf_is_exact(yolov5n, real_batch, fused_first, hw):
    model = yolov5n("v5")
    if fused_first:
        fuse_conv_bn(model)
    reference = yolov5n("v5")
    if fused_first:
        fuse_conv_bn(reference)  # same fusion on both sides: what is left is the SPP rewrite alone
    keys = list(model.state_dict())
    assert spp_to_sppf(model) == 1
    layer = model.model[8]
    assert type(layer) is SPPF and layer.m.kernel_size == 5 and (layer.i, layer.f) == (8, -1)
    assert not any(isinstance(m, SPP) for m in model.modules())
    assert list(model.state_dict()) == keys  # pools have no parameters: the keys stay as they were
    assert parity_max_abs(reference, model, real_batch(*hw)) < 1e-6


def test_nothing_to_convert_returns_zero(yolov5n):
    assert spp_to_sppf(yolov5n("v6")) == 0
