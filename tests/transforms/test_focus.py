"""Focus -> Conv(2k, 2s, 2p): the kernel mapping by hand, equivalence on yolov5n_v5, layout as in v6."""

from __future__ import annotations

import itertools

import pytest
import torch

from yolomlu.model import Conv, Focus, fuse_conv_bn
from yolomlu.transforms import focus_as_conv, focus_kernel_to_conv_kernel, focus_to_conv, parity_max_abs


class _Shifted(torch.nn.Module):
    """`model` fed the input moved one pixel to the right (wrapping): a phase error of one pixel."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x.roll(1, dims=-1))


def test_kernel_mapping_by_hand():
    # K[o, c, 2u + a, 2v + b] = W[o, (a + 2b) * c1 + c, u, v], checked element by element
    c1, c2, k = 3, 2, 3
    w = torch.randn(c2, 4 * c1, k, k)
    big = focus_kernel_to_conv_kernel(w)
    assert big.shape == (c2, c1, 2 * k, 2 * k)
    for o, c, u, v, a, b in itertools.product(range(c2), range(c1), range(k), range(k), (0, 1), (0, 1)):
        assert big[o, c, 2 * u + a, 2 * v + b] == w[o, (a + 2 * b) * c1 + c, u, v]
    # Focus's group 1 is the [1::2, ::2] phase: odd rows, even columns
    w = torch.zeros(1, 4, 1, 1)
    w[0, 1] = 1.0
    assert focus_kernel_to_conv_kernel(w)[0, 0].tolist() == [[0.0, 0.0], [1.0, 0.0]]


@pytest.mark.parametrize(
    ("k", "s", "expect"),
    [(3, 1, ((6, 6), (2, 2), (2, 2))), (1, 1, ((2, 2), (2, 2), (0, 0))), (3, 2, ((6, 6), (4, 4), (2, 2)))],
)
@pytest.mark.parametrize("training", [False, True])
def test_lone_focus_equals_its_conv(randomise_bn, k, s, expect, training):
    torch.manual_seed(0)
    focus = Focus(3, 8, k, s)
    randomise_bn(focus)
    focus.train(training)  # in training mode BN uses batch statistics: the conv outputs must agree too
    x = torch.randn(2, 3, 20, 14)
    with torch.no_grad():
        ref = focus(x)
        block = focus_as_conv(focus)
        out = block(x)
    assert isinstance(block, Conv) and block.training == training
    assert (block.conv.kernel_size, block.conv.stride, block.conv.padding) == expect
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-5


def test_grouped_focus_is_refused_and_the_model_left_alone():
    model = torch.nn.Sequential(Focus(3, 8, 3), Focus(4, 8, 3, g=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="groups=2"):
        focus_to_conv(model)
    assert all(isinstance(m, Focus) for m in model)  # the first (convertible) one was not swapped either
    assert model.state_dict().keys() == before.keys()


@pytest.mark.parametrize("fused_first", [False, True], ids=["unfused", "fused_first"])
@pytest.mark.parametrize("hw", [(64, 64), (96, 96), (64, 96)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_yolov5n_v5_focus_to_conv_is_equivalent(yolov5n, real_batch, fused_first, hw):
    reference = yolov5n("v5")
    model = yolov5n("v5")
    if fused_first:
        fuse_conv_bn(model)
    assert focus_to_conv(model) == 1
    batch = real_batch(*hw)
    # The check has teeth: the outputs depend on the input's pixel phase far beyond the tolerance.
    assert parity_max_abs(reference, _Shifted(reference), batch) > 1e-3
    # vs the untransformed, unfused model: covers fusion too where it was applied first
    assert parity_max_abs(reference, model, batch) < 1e-4


def test_the_parity_check_catches_a_wrong_interleave(yolov5n, real_batch):
    # The likeliest mistake: reading Focus's phases as (0,0), (0,1), (1,0), (1,1), i.e. swapping groups
    # 1 and 2. Made here on purpose by permuting the Focus kernel's input channels before converting.
    reference, wrong = yolov5n("v5"), yolov5n("v5")
    w = wrong.model[0].conv.conv.weight
    with torch.no_grad():
        w.copy_(w.view(w.shape[0], 4, -1, *w.shape[2:])[:, [0, 2, 1, 3]].reshape(w.shape))
    focus_to_conv(wrong)
    assert parity_max_abs(reference, wrong, real_batch(64, 96)) > 1e-3


@pytest.mark.parametrize("fused_first", [False, True], ids=["unfused", "fused_first"])
def test_converted_stem_has_the_v6_layout(yolov5n, fused_first):
    model = yolov5n("v5")
    if fused_first:
        fuse_conv_bn(model)
    focus_to_conv(model)
    assert not any(isinstance(m, Focus) for m in model.modules())
    stem = model.model[0]
    assert type(stem) is Conv and (stem.i, stem.f) == (0, -1)
    assert (stem.conv.kernel_size, stem.conv.stride, stem.conv.padding) == ((6, 6), (2, 2), (2, 2))
    assert (stem.bn is None) == fused_first and (stem.conv.bias is not None) == fused_first

    v6 = yolov5n("v6")
    if fused_first:
        fuse_conv_bn(v6)
    ours = {k: v.shape for k, v in model.state_dict().items() if k.startswith("model.0.")}
    theirs = {k: v.shape for k, v in v6.state_dict().items() if k.startswith("model.0.")}
    assert ours == theirs
    assert ours["model.0.conv.weight"] == (16, 3, 6, 6)
    v6.model[0].load_state_dict(stem.state_dict())  # strict: a converted stem drops into a v6 model


def test_nothing_to_convert_returns_zero(yolov5n):
    v6 = yolov5n("v6")
    before = {k: v.clone() for k, v in v6.state_dict().items()}
    assert focus_to_conv(v6) == 0
    assert all(torch.equal(before[k], v) for k, v in v6.state_dict().items())
    v5 = yolov5n("v5")
    assert focus_to_conv(v5) == 1
    assert focus_to_conv(v5) == 0  # already converted


def test_a_lone_focus_is_not_rewritten_in_place():
    with pytest.raises(ValueError, match="focus_as_conv"):
        focus_to_conv(Focus(3, 8, 3))
