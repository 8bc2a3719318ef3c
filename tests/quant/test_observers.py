"""Calibration against hand-computed Cambricon scales, one qconfig key at a time."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from yolomlu.quant import (
    LayerScales,
    QConfig,
    calibrate,
    effective_scale,
    observe_inputs,
    quantizable_layers,
    scale_from_range,
    weight_scales,
)


def f32(x: float) -> float:
    return torch.tensor(x, dtype=torch.float32).item()


def one_conv() -> nn.Sequential:
    """Conv2d(1 -> 2, 1x1): weights 0.5 (channel 0) and -0.25 (channel 1), so per-tensor absmax 0.5."""
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.5, -0.25]).view(2, 1, 1, 1))
        conv.bias.zero_()
    return nn.Sequential(conv).eval()


def image(lo: float, hi: float) -> Tensor:
    """One 1-channel image [1, 1, 1, 2] whose min is lo and max hi."""
    return torch.tensor([lo, hi]).view(1, 1, 1, 2)


# Four images; image 3 holds the extreme values, image 1 the second batch's minimum.
IMAGES = torch.cat([image(-1.0, 2.0), image(-4.0, 1.0), image(0.0, 1.5), image(-0.5, 3.0)])


def batches(batch_size: int) -> list[Tensor]:
    return [IMAGES[i : i + batch_size] for i in range(0, len(IMAGES), batch_size)]


def input_scale(qconfig: QConfig, batch_size: int) -> float:
    return calibrate(one_conv(), batches(batch_size), qconfig)["0"].input_scale


@pytest.mark.parametrize(
    ("iteration", "batch_size", "absmax"),
    [
        (1, 1, 2.0),  # only image 0: min -1, max 2
        (2, 1, 4.0),  # images 0-1: min -4
        (1, 2, 4.0),  # the first batch is images 0-1
        (1, 4, 4.0),  # all four in one batch: min -4, max 3
        (2, 2, 4.0),
        (3, 1, 4.0),  # images 0-2
    ],
)
def test_iteration_counts_forward_calls_so_batch_size_decides_the_images(iteration, batch_size, absmax) -> None:
    assert input_scale(QConfig(iteration=iteration, firstconv=False), batch_size) == f32(127 / absmax)


def test_iteration_stops_consuming_batches_once_every_observer_is_full() -> None:
    seen = []

    def lazy():
        for b in batches(1):
            seen.append(b)
            yield b

    ranges = observe_inputs(one_conv(), lazy(), QConfig(iteration=2, firstconv=False))
    assert ranges["0"].calls == 2 and (ranges["0"].min, ranges["0"].max) == (-4.0, 2.0)
    assert len(seen) == 2  # the third batch is never drawn (not even loaded)


def test_use_avg_is_cambricons_running_average_where_the_first_batch_counts_twice() -> None:
    # Cambricon: m = (m * k + b) / (k + 1) with k the 1-based call number, counted before the update.
    # batches of 1, iteration 2: min = (-1 * 2 + -4) / 3 = -2, max = (2 * 2 + 1) / 3 = 5/3; absmax 2
    assert input_scale(QConfig(iteration=2, use_avg=True, firstconv=False), 1) == f32(127 / 2.0)
    # iteration 3: min = (-2 * 3 + 0) / 4 = -1.5, max = (5/3 * 3 + 1.5) / 4 = 1.625; absmax 1.625
    assert input_scale(QConfig(iteration=3, use_avg=True, firstconv=False), 1) == f32(127 / 1.625)
    # iteration 4: min = (-1.5 * 4 - 0.5) / 5 = -1.3, max = (1.625 * 4 + 3) / 5 = 1.9; absmax 1.9
    assert input_scale(QConfig(iteration=4, use_avg=True, firstconv=False), 1) == f32(127 / ((1.625 * 4 + 3) / 5))
    # without use_avg the same four calls keep the global range: absmax 4
    assert input_scale(QConfig(iteration=4, firstconv=False), 1) == f32(127 / 4.0)


def test_data_scale_multiplies_each_batch_min_and_max() -> None:
    # iteration 1, batch of 1: min -1, max 2 -> times 0.5 -> absmax 1; times 3 -> absmax 6
    assert input_scale(QConfig(data_scale=0.5, firstconv=False), 1) == f32(127 / 1.0)
    assert input_scale(QConfig(data_scale=3.0, firstconv=False), 1) == f32(127 / 6.0)
    # with use_avg over two batches: min = (-0.5*2 - 2)/3 = -1, max = (1*2 + 0.5)/3 = 5/6; absmax 1
    assert input_scale(QConfig(iteration=2, use_avg=True, data_scale=0.5, firstconv=False), 1) == f32(127 / 1.0)


def test_int16_uses_qmax_32767() -> None:
    assert input_scale(QConfig(dtype="int16", firstconv=False), 1) == f32(32767 / 2.0)
    scales = calibrate(one_conv(), batches(1), QConfig(dtype="int16", firstconv=False))["0"]
    assert scales == LayerScales(f32(32767 / 2.0), (f32(32767 / 0.5),), "int16", False)
    assert scales.quantized_mode == 2


def test_per_tensor_weight_scale_ignores_data_scale() -> None:
    # Cambricon builds the per-tensor weight observer with the default qscheme (data_scale 1).
    scales = calibrate(one_conv(), batches(1), QConfig(data_scale=3.0, firstconv=False))["0"]
    assert scales.weight_scale == (f32(127 / 0.5),)
    assert not scales.per_channel and scales.quantized_mode == 1


def test_per_channel_weight_scales_apply_data_scale() -> None:
    # channel 0: absmax 0.5 -> 254; channel 1: absmax 0.25 -> 508. With data_scale 2: 127 and 254.
    scales = calibrate(one_conv(), batches(1), QConfig(per_channel=True, firstconv=False))["0"]
    assert scales.weight_scale == (f32(127 / 0.5), f32(127 / 0.25)) and scales.per_channel
    assert scales.input_scale == f32(127 / 2.0)  # activations stay per tensor
    assert scales.quantized_mode == 3
    doubled = calibrate(one_conv(), batches(1), QConfig(per_channel=True, data_scale=2.0, firstconv=False))["0"]
    assert doubled.weight_scale == (f32(127 / 1.0), f32(127 / 0.5))
    int16 = calibrate(one_conv(), batches(1), QConfig(per_channel=True, dtype="int16", firstconv=False))["0"]
    assert int16.weight_scale == (f32(32767 / 0.5), f32(32767 / 0.25)) and int16.quantized_mode == 4


def test_per_channel_weights_use_each_channels_min_and_max() -> None:
    w = torch.tensor([[-0.5, 0.25], [-0.1, 0.4]]).view(2, 2, 1, 1)
    assert weight_scales(w, "int8", per_channel=True) == (f32(127 / 0.5), f32(127 / 0.4))
    assert weight_scales(w, "int8", per_channel=False) == (f32(127 / 0.5),)
    linear = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.25, -0.125]])  # nn.Linear layout [out, in]
    assert weight_scales(linear, "int8", per_channel=True) == (f32(127 / 2.0), f32(127 / 0.25))


def test_zero_input_or_weight_gives_scale_one() -> None:
    model = one_conv()
    with torch.no_grad():
        model[0].weight.zero_()
    scales = calibrate(model, [torch.zeros(2, 1, 3, 3)], QConfig(firstconv=False))["0"]
    assert scales.input_scale == 1.0 and scales.weight_scale == (1.0,)
    assert weight_scales(torch.zeros(2, 1, 1, 1), "int8", per_channel=True) == (1.0, 1.0)


def test_a_layer_that_never_runs_gets_scale_one() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Conv2d(1, 1, 1)
            self.unused = nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.used(x)

    ranges = observe_inputs(Branchy(), batches(1), QConfig(firstconv=False))
    assert ranges["unused"].calls == 0 and ranges["unused"].min is None
    assert calibrate(Branchy(), batches(1), QConfig(firstconv=False))["unused"].input_scale == 1.0


def test_scale_from_range_edge_cases() -> None:
    assert scale_from_range(None, None, "int8") == 1.0
    assert scale_from_range(-3.0, -1.0, "int8") == f32(127 / 3.0)  # absmax = max(max, -min)
    assert scale_from_range(0.0, 0.0, "int16") == 1.0
    with pytest.raises(ValueError, match="NaN"):
        scale_from_range(float("nan"), 1.0, "int8", "model.3.conv")


def test_nan_input_is_refused_naming_the_layer() -> None:
    with pytest.raises(ValueError, match=r"0: observed NaN"):
        calibrate(one_conv(), [torch.full((1, 1, 2, 2), float("nan"))], QConfig(firstconv=False))


def test_mlu370_rounds_the_step_up_to_a_power_of_two() -> None:
    # absmax 3 (int8): step 3/127 = 0.0236 -> 2**-5 = 0.03125 (scale 42.33 -> 32); absmax 2: 63.5 -> 32
    assert effective_scale(f32(127 / 3.0), "mlu370") == 32.0
    assert effective_scale(f32(127 / 2.0), "mlu370") == 32.0
    # a step that already is a power of two stays: absmax 127/64 -> scale 64
    assert effective_scale(f32(127 / (127 / 64)), "mlu370") == 64.0
    # int16, absmax 2: 16383.5 -> 8192 (step 2**-13); small scales too: absmax 300 -> 0.423 -> 0.25
    assert effective_scale(f32(32767 / 2.0), "mlu370") == 8192.0
    assert effective_scale(f32(127 / 300.0), "mlu370") == 0.25
    assert effective_scale(f32(127 / 3.0), "mlu270") == f32(127 / 3.0)
    # never finer than mlu270, at most 2x coarser, and the calibrated absmax still fits
    for absmax in (0.01, 0.3, 1.0, 2.5, 7.0, 1000.0):
        s = f32(127 / absmax)
        e = effective_scale(s, "mlu370")
        assert s / 2 < e <= s and absmax * e <= 127 + 1e-4


def test_calibrate_sees_every_conv_of_a_yolov5_once_per_batch(tiny_model, images) -> None:
    names = [n for n, _ in quantizable_layers(tiny_model)]
    ranges = observe_inputs(tiny_model, [images[:2], images[2:]], QConfig(iteration=2, firstconv=False))
    assert list(ranges) == names and len(names) == 62
    assert all(r.calls == 2 for r in ranges.values())
    assert ranges["model.0.conv.conv"].min >= 0 and ranges["model.0.conv.conv"].max <= 1  # Focus input: images
