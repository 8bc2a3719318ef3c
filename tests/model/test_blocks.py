import pytest
import torch
from torch import nn

from yolomlu.model import C3, SPP, SPPF, Bottleneck, Concat, Conv, Detect, Focus

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def test_conv_keys_shapes_and_bn_settings():
    conv = Conv(16, 32, 3, 2)
    assert list(conv.state_dict()) == [
        "conv.weight",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    ]
    assert conv.conv.bias is None
    assert (conv.bn.eps, conv.bn.momentum) == (1e-3, 0.03)
    assert conv(torch.zeros(2, 16, 15, 16)).shape == (2, 32, 8, 8)


def test_conv_activation_is_per_instance_not_class_wide():
    a, b = Conv(4, 4), Conv(4, 4)
    assert isinstance(a.act, nn.SiLU) and a.act is not b.act
    assert "act" not in vars(Conv)  # no class attribute anyone could mutate for all instances
    assert isinstance(Conv(4, 4, act=False).act, nn.Identity)
    relu = nn.ReLU()
    assert Conv(4, 4, act=relu).act is relu


def test_focus_stacks_pixel_phases_in_official_order():
    focus = Focus(1, 8, 3)
    assert focus.conv.conv.weight.shape == (8, 4, 3, 3)
    focus.conv = nn.Identity()  # expose the space-to-depth result
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # rows (0: 1 2), (1: 3 4)
    # (row, col) phases (0,0), (1,0), (0,1), (1,1)
    assert focus(x).flatten().tolist() == [1.0, 3.0, 2.0, 4.0]


def test_bottleneck_shortcut_only_when_shapes_allow():
    assert Bottleneck(8, 8).add
    assert not Bottleneck(8, 8, shortcut=False).add
    assert not Bottleneck(8, 16).add
    b = Bottleneck(8, 16)
    assert b.cv1.conv.weight.shape == (8, 8, 1, 1) and b.cv2.conv.weight.shape == (16, 8, 3, 3)
    assert b(torch.zeros(1, 8, 5, 5)).shape == (1, 16, 5, 5)


def test_c3_layout():
    c3 = C3(64, 128, n=2, shortcut=False)
    assert c3.cv1.conv.weight.shape == (64, 64, 1, 1)
    assert c3.cv2.conv.weight.shape == (64, 64, 1, 1)
    assert c3.cv3.conv.weight.shape == (128, 128, 1, 1)
    assert len(c3.m) == 2 and all(not b.add for b in c3.m)
    # inner bottlenecks keep the branch width (e=1.0)
    assert c3.m[0].cv1.conv.weight.shape == (64, 64, 1, 1)
    assert c3(torch.zeros(1, 64, 4, 4)).shape == (1, 128, 4, 4)


def test_sppf_equals_spp_with_the_same_weights():
    torch.manual_seed(0)
    spp, sppf = SPP(16, 24, (5, 9, 13)).eval(), SPPF(16, 24, 5).eval()
    assert [k for k in spp.state_dict()] == [k for k in sppf.state_dict()]
    sppf.load_state_dict(spp.state_dict())
    x = torch.randn(2, 16, 13, 13)
    torch.testing.assert_close(sppf(x), spp(x), rtol=0, atol=1e-6)
    assert spp.cv2.conv.weight.shape == (24, 32, 1, 1)
    assert len(spp.m) == 3 and isinstance(sppf.m, nn.MaxPool2d)


def test_concat():
    assert Concat(1)([torch.zeros(1, 2, 3, 3), torch.ones(1, 5, 3, 3)]).shape == (1, 7, 3, 3)


def test_detect_raw_outputs_anchors_and_buffers():
    head = Detect(80, ANCHORS, ch=[8, 16, 32], strides=[8, 16, 32])
    assert (head.nc, head.na, head.no, head.nl) == (80, 3, 85, 3)
    xs = [torch.zeros(2, 8, 10, 12), torch.zeros(2, 16, 5, 6), torch.zeros(2, 32, 3, 3)]
    assert [tuple(y.shape) for y in head(xs)] == [(2, 255, 10, 12), (2, 255, 5, 6), (2, 255, 3, 3)]
    px = torch.tensor(ANCHORS, dtype=torch.float32).view(3, 3, 2)
    torch.testing.assert_close(head.anchors, px / torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1))
    torch.testing.assert_close(head.anchors_px, px)
    # stride travels with .to() but is not a checkpoint key; anchor_grid is not registered at all
    convs = {f"m.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert set(head.state_dict()) == {"anchors", *convs}
    assert [name for name, _ in head.named_buffers()] == ["anchors", "stride"]


def test_detect_bias_priors():
    torch.manual_seed(0)
    head = Detect(80, ANCHORS, ch=[8, 8, 8], strides=[8, 16, 32])
    b = head.m[0].bias.view(3, 85)
    # default init is uniform within +-1/sqrt(fan_in); the priors shift objectness and classes
    bound = 1 / 8**0.5
    obj = torch.log(torch.tensor(8 / (640 / 8) ** 2))
    cls = torch.log(torch.tensor(0.6 / (80 - 0.99)))
    assert ((b[:, 4] - obj).abs() <= bound).all() and ((b[:, 5:] - cls).abs() <= bound).all()
    assert (b[:, :4].abs() <= bound).all()


def test_detect_rejects_mismatched_levels():
    with pytest.raises(ValueError, match="one input and one stride per anchor level"):
        Detect(80, ANCHORS, ch=[8, 16], strides=[8, 16, 32])
