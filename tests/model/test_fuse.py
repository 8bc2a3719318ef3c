import pytest
import torch
from torch import nn

from yolomlu.model import SIZES, Conv, build_yolov5, format_summary, fuse_conv_bn
from yolomlu.model.fuse import fused_conv

from tests.trained_like import randomise_bn


def test_fused_yolov5x_v5_matches_the_published_log(summary_of):
    # the porting notes' fused YOLOv5x (v5.0) log: "476 layers, 87730285 parameters"
    s = summary_of("v5", "x")
    assert (s.layers, s.params) == (476, 87730285)
    assert format_summary(s).startswith("476 layers, 87730285 parameters, ")


@pytest.mark.parametrize("arch", ["v5", "v6"])
def test_fusion_is_numerically_equivalent_in_eval_mode(arch):
    torch.manual_seed(0)
    model = build_yolov5(arch, *SIZES["n"])
    randomise_bn(model)
    model.eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_conv_bn(model)
        out = fused(x)
    assert fused is model
    for r, o in zip(ref, out):
        assert r.abs().max() > 1e-2  # the comparison is not between two near-zero tensors
        assert (r - o).abs().max().item() < 1e-4


def test_fused_layout():
    model = fuse_conv_bn(build_yolov5("v6", *SIZES["n"]))
    blocks = [m for m in model.modules() if isinstance(m, Conv)]
    assert blocks and all(b.bn is None and b.conv.bias is not None for b in blocks)
    keys = list(model.state_dict())
    assert not any(".bn." in k for k in keys)
    assert "model.0.conv.bias" in keys and "model.24.anchors" in keys
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fuse_conv_bn(model)  # a second pass finds nothing left to fold
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fused_conv_keeps_an_existing_bias_and_conv_settings():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    bn = nn.BatchNorm2d(6, eps=1e-3)
    randomise_bn(bn)
    bn.eval()
    fused = fused_conv(conv, bn)
    assert (fused.stride, fused.padding, fused.groups) == ((2, 2), (1, 1), 2)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
