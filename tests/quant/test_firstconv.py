"""firstconv: the fold is exact in float (borders included), Focus is refused with the way out, and
calibration/emulation quantize the normalised input as the MLU does."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yolomlu.quant import (
    FoldedFirstConv,
    QConfig,
    QuantConv2d,
    calibrate,
    first_conv,
    fold_first_conv,
    normalize,
    observe_inputs,
    quantize_model,
    scales_from_ranges,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def raw_and_normalised(mean=MEAN, std=STD, seed: int = 0):
    """Raw pixels r in 0..255 (integers, as a camera gives them) [2, 3, 64, 64] and the normalised
    n = (r - 255 mean) / (255 std) the float model is fed, both float64."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (2, 3, 64, 64), generator=g).double()
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    return raw, (raw - 255 * m) / (255 * s)


def test_fold_is_exact_on_a_yolov5_borders_included(tiny_conv_model) -> None:
    model = tiny_conv_model.double()
    raw, normalised = raw_and_normalised()
    with torch.no_grad():
        expected = model(normalised)
    assert fold_first_conv(model, MEAN, STD) is None
    assert isinstance(model.model[0].conv, FoldedFirstConv)
    with torch.no_grad():
        got = model(raw)
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, rtol=0, atol=1e-9 * e.abs().max().item())


def test_the_fold_pads_raw_pixels_with_the_mean_because_zero_padding_would_differ_at_borders() -> None:
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    raw, normalised = raw_and_normalised()
    folded_model = nn.Sequential(copy.deepcopy(conv))
    fold_first_conv(folded_model, MEAN, STD)
    folded = folded_model[0]
    assert folded.pad_value.tolist() == pytest.approx([255 * m for m in MEAN])
    with torch.no_grad():
        expected = conv(normalised)
        exact = folded(raw)
        # the same folded weights with plain zero padding: raw 0 at the border is normalised -m/s, not 0
        naive = F.conv2d(raw, folded.weight, folded.bias, padding=1)
    assert torch.allclose(exact, expected, atol=1e-9)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(naive[interior], expected[interior], atol=1e-9)
    assert (naive - expected)[..., 0, :].abs().max() > 0.01  # borders differ


def test_with_mean_zero_and_std_one_the_fold_is_a_division_by_255(tiny_conv_model) -> None:
    model = tiny_conv_model.double()
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        fold_first_conv(model, (0, 0, 0), (1, 1, 1))
        got = model(x * 255)
    assert all(torch.allclose(e, o, atol=1e-9) for e, o in zip(expected, got))


def test_focus_stem_is_refused_with_the_transform_that_makes_it_applicable(tiny_model, images) -> None:
    assert first_conv(tiny_model)[0] == "model.0.conv.conv" and first_conv(tiny_model)[1].in_channels == 12
    hint = r"takes 12\. A v5\.0 Focus stem .* set transforms\.focus_to_conv=true"
    with pytest.raises(ValueError, match=r"firstconv needs the first conv \(model\.0\.conv\.conv\) to take 1, 3 or 4 input channels"):
        fold_first_conv(tiny_model, MEAN, STD)
    with pytest.raises(ValueError, match=hint):
        fold_first_conv(tiny_model, MEAN, STD)
    # calibration and emulation refuse the same way (Cambricon's default is firstconv=True)
    with pytest.raises(ValueError, match=hint):
        calibrate(tiny_model, [images[:1]], QConfig())
    with pytest.raises(ValueError, match=hint):
        quantize_model(tiny_model, {}, QConfig())


def test_fold_refuses_a_mean_of_the_wrong_length_and_a_second_fold(tiny_conv_model) -> None:
    with pytest.raises(ValueError, match=r"need one value per input channel of the first conv \(model.0.conv\), which takes 3"):
        fold_first_conv(tiny_conv_model, (0.5,), (0.5,))
    fold_first_conv(tiny_conv_model, MEAN, STD)
    with pytest.raises(ValueError, match="already folded"):
        fold_first_conv(tiny_conv_model, MEAN, STD)
    with pytest.raises(ValueError, match="quantize the unfolded model with firstconv=true"):
        calibrate(tiny_conv_model, [torch.rand(1, 3, 64, 64)], QConfig(firstconv=False))


def test_firstconv_calibrates_and_quantizes_the_normalised_input(tiny_conv_model, images) -> None:
    qconfig = QConfig(firstconv=True, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    batch = images[:2].clone()
    batch[0, 0, 0, 0], batch[1, 2, 5, 5] = 0.0, 1.0  # normalised range exactly [-2, 2]
    ranges = observe_inputs(tiny_conv_model, [batch], qconfig)
    assert (ranges["model.0.conv"].min, ranges["model.0.conv"].max) == (-2.0, 2.0)
    scales = scales_from_ranges(tiny_conv_model, ranges, qconfig)
    assert scales["model.0.conv"].input_scale == 127 / 2

    with_norm = copy.deepcopy(tiny_conv_model)
    assert quantize_model(with_norm, scales, qconfig) == 62
    first = with_norm.model[0].conv
    assert isinstance(first, QuantConv2d) and first.norm == ((0.5,) * 3, (0.25,) * 3)
    # same as normalising outside and quantizing without firstconv: the emulated layer takes the job's
    # input (raw/255), the device raw pixels; both normalise before the int8 conv
    without = copy.deepcopy(tiny_conv_model)
    quantize_model(without, scales, dataclasses.replace(qconfig, firstconv=False))
    with torch.no_grad():
        a = with_norm(batch)
        b = without(normalize(batch, qconfig.mean, qconfig.std))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match=r"the first conv \(model.0.conv\) is in mixed_layer"):
        quantize_model(copy.deepcopy(tiny_conv_model), scales, dataclasses.replace(qconfig, mixed_layer=("model.0.conv",)))
