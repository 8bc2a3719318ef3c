"""Emulation: hand-quantized layers, rounding and clamping, mixed layers, SQNR evidence."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from yolomlu.quant import (
    LayerScales,
    QConfig,
    QuantConv2d,
    QuantLinear,
    calibrate,
    fake_quantize,
    layer_sqnr,
    quantize_model,
    quantized_layers,
    resolve_layers,
    restore_float,
    sqnr_db,
    sqnr_summary,
)

INT8 = QConfig(firstconv=False)


def f32(x: float) -> float:
    return torch.tensor(x, dtype=torch.float32).item()


def test_fake_quantize_rounds_half_to_even_and_clamps_to_the_dtype_range() -> None:
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 0.49, 126.6, 127.4, 200.0, -127.6, -128.4, -300.0])
    out = fake_quantize(x, 1.0, "int8")
    assert out.tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, 0.0, 127.0, 127.0, 127.0, -128.0, -128.0, -128.0]
    assert fake_quantize(torch.tensor([40000.0, -40000.0]), 1.0, "int16").tolist() == [32767.0, -32768.0]
    # scale 4 (step 0.25): 0.3 -> code 1 -> 0.25; 0.375 -> 1.5 -> 2 -> 0.5; 0.625 -> 2.5 -> 2 -> 0.5
    assert fake_quantize(torch.tensor([0.3, 0.375, 0.625]), 4.0, "int8").tolist() == [0.25, 0.5, 0.5]
    half = torch.tensor([0.3], dtype=torch.float16)
    assert fake_quantize(half, 4.0, "int8").dtype == torch.float16


def test_a_quantized_conv_equals_the_hand_quantized_conv() -> None:
    conv = nn.Conv2d(1, 1, 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.5, -0.25], [0.125, 1.0]]).view(1, 1, 2, 2))
        conv.bias.fill_(0.1)
    model = nn.Sequential(conv).eval()
    x = torch.tensor([[0.30, -0.52], [0.77, 1.00]]).view(1, 1, 2, 2)
    scales = calibrate(model, [x], INT8)
    assert scales["0"] == LayerScales(127.0, (127.0,))  # absmax 1 for both
    assert quantize_model(model, scales, INT8) == 1
    # input codes round(x*127): 38.1 -> 38, -66.04 -> -66, 97.79 -> 98, 127
    # weight codes round(w*127): 63.5 -> 64 (tie, to even), -31.75 -> -32, 15.875 -> 16, 127
    expected = (38 * 64 + (-66) * (-32) + 98 * 16 + 127 * 127) / 127**2 + 0.1
    assert model(x).item() == pytest.approx(expected, abs=1e-6)
    # beyond the calibrated range the input codes saturate at -128 and +127
    wide = torch.tensor([[-1.5, 0.0], [0.0, 1.5]]).view(1, 1, 2, 2)
    assert model(wide).item() == pytest.approx((-128 * 64 + 127 * 127) / 127**2 + 0.1, abs=1e-6)


def test_per_channel_and_mlu370_and_int16_quantize_as_computed_by_hand() -> None:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.3, -0.9]).view(2, 1, 1, 1))
    x = torch.tensor([0.7, -0.3]).view(1, 1, 1, 2)  # absmax 0.7

    def run(qconfig: QConfig) -> list[float]:
        model = nn.Sequential(copy.deepcopy(conv)).eval()
        quantize_model(model, calibrate(model, [x], qconfig), qconfig)
        return model(x).flatten().tolist()  # [channel 0 at both pixels, channel 1 at both pixels]

    def hand(s_in: float, s_w: list[float]) -> list[float]:
        xs = [round(v * s_in) / s_in for v in (0.7, -0.3)]  # no ties here: Python round is fine
        return [xv * (round(w * s) / s) for w, s in zip((0.3, -0.9), s_w) for xv in xs]

    s_in = f32(127 / 0.7)
    assert run(INT8) == pytest.approx(hand(s_in, [f32(127 / 0.9)] * 2), abs=1e-6)
    per_channel = QConfig(firstconv=False, per_channel=True)
    assert run(per_channel) == pytest.approx(hand(s_in, [f32(127 / 0.3), f32(127 / 0.9)]), abs=1e-6)
    # mlu370: 181.4 -> 128, 141.1 -> 128 (steps 2**-7)
    assert run(QConfig(firstconv=False, scheme="mlu370")) == pytest.approx(hand(128.0, [128.0, 128.0]), abs=1e-6)
    int16 = QConfig(firstconv=False, dtype="int16")
    assert run(int16) == pytest.approx(hand(f32(32767 / 0.7), [f32(32767 / 0.9)] * 2), abs=1e-7)


def test_linear_layers_are_quantized_too() -> None:
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    x = torch.tensor([[0.2, -1.0, 0.55]])
    scales = calibrate(model, [x], INT8)
    quantize_model(model, scales, INT8)
    assert isinstance(model[0], QuantLinear)
    w = model[0].weight.detach()
    s_w = scales["0"].weight_scale[0]
    expected = (torch.round(x * 127) / 127) @ (torch.round(w * s_w) / s_w).T + model[0].bias.detach()
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_quantize_model_keeps_names_state_dict_and_parameters(tiny_model, images) -> None:
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    params = dict(tiny_model.named_parameters())
    scales = calibrate(tiny_model, [images[:2]], INT8)
    assert quantize_model(tiny_model, scales, INT8) == 62
    assert set(quantized_layers(tiny_model)) == set(scales)
    after = tiny_model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)
    assert all(p is params[n] for n, p in tiny_model.named_parameters())  # shared, not copied
    assert isinstance(tiny_model.model[1].conv, QuantConv2d) and isinstance(tiny_model.model[1].conv, nn.Conv2d)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(tiny_model, scales, INT8)
    assert restore_float(tiny_model, ["model.1.conv"]) == 1 and type(tiny_model.model[1].conv) is nn.Conv2d
    assert restore_float(tiny_model) == 61 and not quantized_layers(tiny_model)


def test_mixed_layer_names_patterns_and_the_detect_keyword(tiny_model, images) -> None:
    head = ["model.24.m.0", "model.24.m.1", "model.24.m.2"]
    assert resolve_layers(tiny_model, ["detect"]) == head
    assert resolve_layers(tiny_model, ["model.24.m.*"]) == head
    assert resolve_layers(tiny_model, ["model.24.m.1", "model.0.*"]) == ["model.0.conv.conv", "model.24.m.1"]
    with pytest.raises(ValueError, match=r"mixed_layer entry 'model.99.conv' selects no Conv2d/Linear layer"):
        resolve_layers(tiny_model, ["model.99.conv"])
    scales = calibrate(tiny_model, [images[:2]], INT8)
    mixed = QConfig(firstconv=False, mixed_layer=("detect",))
    assert quantize_model(tiny_model, scales, mixed) == 59
    assert all(type(tiny_model.get_submodule(n)) is nn.Conv2d for n in head)


def test_quantize_model_refuses_missing_foreign_or_mismatched_scales(tiny_model, images) -> None:
    scales = calibrate(tiny_model, [images[:2]], INT8)
    partial = {k: v for k, v in scales.items() if k != "model.24.m.0"}
    with pytest.raises(ValueError, match=r"no scales for 1 layer\(s\) to quantize, e.g. \['model.24.m.0'\]"):
        quantize_model(tiny_model, partial, INT8)
    with pytest.raises(ValueError, match=r"layer\(s\) this model lacks, e.g. \['model.99.conv'\]"):
        quantize_model(tiny_model, {**scales, "model.99.conv": scales["model.1.conv"]}, INT8)
    with pytest.raises(ValueError, match=r"model.0.conv.conv: scales are int8 but the qconfig asks for int16"):
        quantize_model(tiny_model, scales, QConfig(firstconv=False, dtype="int16"))
    assert not quantized_layers(tiny_model)  # refusals change nothing


def test_sqnr_db() -> None:
    ref = torch.tensor([3.0, 4.0])
    assert sqnr_db(ref, torch.tensor([3.0, 4.5])) == pytest.approx(10 * math.log10(25 / 0.25))
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(torch.zeros(2), torch.ones(2)) == -math.inf


def test_layer_sqnr_is_each_layers_own_error_and_int16_is_far_cleaner(tiny_model, images) -> None:
    batch = images[:2]
    frames = {}
    for dtype in ("int8", "int16"):
        qconfig = QConfig(firstconv=False, dtype=dtype)
        quant = copy.deepcopy(tiny_model)
        quantize_model(quant, calibrate(tiny_model, [batch], qconfig), qconfig)
        frames[dtype] = layer_sqnr(tiny_model, quant, batch)
    frame = frames["int8"]
    assert list(frame.columns) == ["name", "sqnr_db"] and len(frame) == 62
    summary = {k: sqnr_summary(f) for k, f in frames.items()}
    # int8 keeps ~6 dB per bit: tens of dB; int16 adds 8 bits, ~48 dB more
    assert 20 < summary["int8"]["sqnr_min_db"] <= summary["int8"]["sqnr_mean_db"] < 70
    assert summary["int16"]["sqnr_mean_db"] > summary["int8"]["sqnr_mean_db"] + 35

    # a layer's own SQNR: its emulated version on the float layer's input, by hand for model.1.conv
    quant = copy.deepcopy(tiny_model)
    quantize_model(quant, calibrate(tiny_model, [batch], INT8), INT8)
    seen = {}
    handle = tiny_model.model[1].conv.register_forward_hook(lambda m, a, o: seen.update(x=a[0], y=o))
    tiny_model(batch)
    handle.remove()
    own = sqnr_db(seen["y"], quant.model[1].conv(seen["x"]))
    assert layer_sqnr(tiny_model, quant, batch).set_index("name").loc["model.1.conv", "sqnr_db"] == own


def test_emulated_model_traces_and_keeps_exact_scales_in_reduced_precision(tiny_model, images) -> None:
    qconfig = QConfig(firstconv=False, per_channel=True)
    quantize_model(tiny_model, calibrate(tiny_model, [images[:1]], qconfig), qconfig)
    batch = images[:1]
    with torch.no_grad():
        eager = tiny_model(batch)
        traced = torch.jit.trace(tiny_model, batch, check_trace=False, strict=False)(batch)  # backend.mode=fused
    assert all(torch.equal(a, b) for a, b in zip(eager, traced))
    conv = tiny_model.model[1].conv
    before = conv.weight_scale.clone()
    tiny_model.to(dtype=torch.bfloat16)  # backend.half on the CPU
    assert conv.weight_scale.dtype == torch.float32 and torch.equal(conv.weight_scale, before)
    with torch.no_grad():
        assert tiny_model(batch.bfloat16())[0].dtype == torch.bfloat16


def test_float16_emulation_rounds_every_layers_output_and_survives_pickling(images) -> None:
    import pickle

    from yolomlu.model import build_yolov5
    from yolomlu.quant import emulate_float_precision

    torch.manual_seed(0)
    tiny_model = build_yolov5("v5", 0.33, 0.25, nc=6).eval()  # BatchNorm unfolded, as the MLU quantizes it
    model = copy.deepcopy(tiny_model)
    hooked = emulate_float_precision(model, "float16")
    assert hooked == len(list(model.named_modules())) - 1  # every module but the root
    seen = []
    first_bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    spy = first_bn.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        outputs = model(images)
    spy.remove()
    assert all(torch.equal(y, y.half().float()) for y in outputs)  # the head's maps: float16 values
    assert torch.equal(seen[0], seen[0].half().float())  # a BatchNorm's output too
    with torch.no_grad():
        reference = tiny_model(images)
    assert 0 < max(float((a - b).abs().max()) for a, b in zip(outputs, reference)) < 0.05
    # The hook is a module-level function: the emulated model travels to the timing process.
    clone = pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(clone(images), outputs))
    assert emulate_float_precision(copy.deepcopy(tiny_model), "float32") == 0
    with pytest.raises(ValueError, match="float_dtype='bfloat8'"):
        emulate_float_precision(model, "bfloat8")
