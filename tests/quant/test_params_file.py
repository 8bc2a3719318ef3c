"""The quant-params file: Cambricon's state-dict layout, exact round trip, refusal of a file that does
not fit the model or the qconfig."""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict

import pytest
import torch

from yolomlu.quant import (
    QConfig,
    calibrate,
    check_quant_params,
    load_quant_params,
    quant_state_dict,
    quantize_model,
    save_quant_params,
)

INT8 = QConfig(firstconv=False)


@pytest.fixture(scope="module")
def scales_pair(tiny_conv_model_base, images):
    """Per-tensor int8 and per-channel int16 scales of the Focus->Conv tiny model (calibrated once)."""
    batch = images[:2]
    return (
        calibrate(tiny_conv_model_base, [batch], INT8),
        calibrate(tiny_conv_model_base, [batch], QConfig(firstconv=False, dtype="int16", per_channel=True)),
    )


@pytest.fixture
def calibrated(tiny_conv_model, scales_pair):
    """(fresh model, per-tensor int8 scales, per-channel int16 scales)."""
    return (tiny_conv_model, *scales_pair)


def test_layout_is_the_float_state_dict_plus_cambricons_keys(calibrated) -> None:
    model, scales, _ = calibrated
    qconfig = QConfig(firstconv=True, mixed_layer=("detect",))
    state = quant_state_dict(model, scales, qconfig)
    float_state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in float_state.items())
    s = scales["model.2.cv1.conv"]
    assert state["model.2.cv1.conv.scale"].dtype == torch.float32
    assert state["model.2.cv1.conv.scale"].tolist() == [s.input_scale, s.weight_scale[0]]
    assert state["model.2.cv1.conv.quantized_mode"].tolist() == [1]
    assert state["model.2.cv1.conv.quantized_mode"].dtype == torch.int32
    assert state["model.2.cv1.conv.use_symmetry"].tolist() == [1]
    assert "model.2.cv1.conv.scale_weight_per_channel" not in state
    # each group follows its layer's tensors
    keys = list(state)
    i = keys.index("model.2.cv1.conv.bias")
    assert keys[i + 1 : i + 4] == ["model.2.cv1.conv.scale", "model.2.cv1.conv.quantized_mode", "model.2.cv1.conv.use_symmetry"]
    # firstconv: mean*255 and std*255 on the first conv, shaped [1, C, 1, 1]
    assert state["model.0.conv.input_mean"].tolist() == [[[[0.0]], [[0.0]], [[0.0]]]]
    assert state["model.0.conv.input_std"].flatten().tolist() == [255.0] * 3
    # mixed layers stay float: no quantization keys
    assert "model.24.m.0.scale" not in state and "model.24.m.0.weight" in state
    assert sum(k.endswith(".quantized_mode") for k in state) == 59


def test_per_channel_layout(calibrated) -> None:
    model, _, scales = calibrated
    state = quant_state_dict(model, scales, QConfig(firstconv=False, dtype="int16", per_channel=True))
    s = scales["model.1.conv"]
    assert state["model.1.conv.scale"].tolist() == [s.input_scale, 0.0]  # s_w lives per channel
    assert state["model.1.conv.quantized_mode"].tolist() == [4]
    assert state["model.1.conv.quantized_by_channel"].tolist() == [1]
    assert state["model.1.conv.scale_weight_per_channel"].tolist() == list(s.weight_scale)
    assert len(s.weight_scale) == model.model[1].conv.out_channels


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor_int8", "per_channel_int16"])
def test_round_trip_is_exact_and_a_job_evaluates_from_the_file_without_recalibrating(calibrated, images, tmp_path, per_channel) -> None:
    model, int8, int16_pc = calibrated
    scales = int16_pc if per_channel else int8
    qconfig = QConfig(firstconv=True, dtype="int16" if per_channel else "int8", per_channel=per_channel)
    path = save_quant_params(tmp_path / "sub" / "yolov5_int8.pth", model, scales, qconfig)
    assert path.read_bytes()[:2] != b"PK"  # legacy serialization, readable by the SDK's torch 1.3

    loaded, info = load_quant_params(path)
    assert loaded == scales and list(loaded) == list(scales)
    assert (info.dtype, info.per_channel, info.firstconv_layer) == (qconfig.dtype, per_channel, "model.0.conv")
    assert info.mean == (0.0, 0.0, 0.0) and info.std == (1.0, 1.0, 1.0)
    check_quant_params(model, info, qconfig)
    # writing what was read gives the same file content
    again = quant_state_dict(model, loaded, qconfig)
    original = torch.load(path, weights_only=True)
    assert list(again) == list(original) and all(torch.equal(again[k], original[k]) for k in original)

    from_calibration, from_file = copy.deepcopy(model), copy.deepcopy(model)
    quantize_model(from_calibration, scales, qconfig)
    quantize_model(from_file, loaded, qconfig)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(from_calibration(images[:1]), from_file(images[:1])))


def test_a_cambricon_written_per_channel_file_is_read(calibrated, tmp_path) -> None:
    # catch writes quantized_mode 1 (not 3) with quantized_by_channel = 1 for a per-channel int8 layer
    model, _, int16_pc = calibrated
    scales = {name: dataclasses.replace(s, dtype="int8") for name, s in int16_pc.items()}
    state = quant_state_dict(model, scales, QConfig(firstconv=False, per_channel=True))
    cambricon = OrderedDict((k, torch.tensor([1], dtype=torch.int32) if k.endswith("quantized_mode") else v) for k, v in state.items())
    torch.save(cambricon, tmp_path / "catch.pth", _use_new_zipfile_serialization=False)
    loaded, info = load_quant_params(tmp_path / "catch.pth")
    assert loaded == scales and info.per_channel and info.dtype == "int8" and info.firstconv_layer is None


def test_a_file_that_does_not_fit_is_refused(calibrated, tmp_path) -> None:
    model, scales, _ = calibrated
    path = save_quant_params(tmp_path / "q.pth", model, scales, QConfig(firstconv=False, mixed_layer=("detect",)))
    _, info = load_quant_params(path)
    loaded, _ = load_quant_params(path)
    with pytest.raises(ValueError, match=r"holds int8 scales but the qconfig asks for int16"):
        check_quant_params(model, info, QConfig(firstconv=False, dtype="int16"))
    with pytest.raises(ValueError, match=r"written with firstconv=False but quant.firstconv=True"):
        check_quant_params(model, info, QConfig(firstconv=True))
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model[3].conv.weight.mul_(1.01)
    with pytest.raises(ValueError, match=r"written for other weights: model.3.conv.weight differs"):
        check_quant_params(other, info, INT8)
    with pytest.raises(ValueError, match=r"written for another model or transform set"):
        check_quant_params(calibrated_focus_model(), info, INT8)
    # written with the head in float, evaluated with a qconfig that quantizes it: no scales for the head
    with pytest.raises(ValueError, match=r"no scales for 3 layer\(s\) to quantize, e.g. \['model.24.m.0'"):
        quantize_model(copy.deepcopy(model), loaded, INT8)
    assert quantize_model(copy.deepcopy(model), loaded, dataclasses.replace(INT8, mixed_layer=("detect",))) == 59


def calibrated_focus_model():
    from yolomlu.model import build_yolov5
    from yolomlu.transforms import fuse

    model = build_yolov5("v5", 0.33, 0.25, nc=6).eval()
    fuse(model)
    return model


def test_firstconv_mean_and_std_come_back_to_float32_precision(calibrated, tmp_path) -> None:
    model, scales, _ = calibrated
    qconfig = QConfig(firstconv=True, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    _, info = load_quant_params(save_quant_params(tmp_path / "q.pth", model, scales, qconfig))
    assert info.mean == pytest.approx(qconfig.mean, rel=1e-7) and info.std == pytest.approx(qconfig.std, rel=1e-7)
    check_quant_params(model, info, qconfig)
    with pytest.raises(ValueError, match=r"firstconv mean=.* differs from quant.mean"):
        check_quant_params(model, info, dataclasses.replace(qconfig, mean=(0.5, 0.456, 0.406)))


def test_not_a_params_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_quant_params(tmp_path / "missing.pth")
    torch.save({"w": torch.zeros(1)}, tmp_path / "float.pth")
    with pytest.raises(ValueError, match="holds no quantized layer"):
        load_quant_params(tmp_path / "float.pth")
