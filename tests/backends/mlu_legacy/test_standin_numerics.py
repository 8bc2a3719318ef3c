"""What the emulating stand-in computes, through the real worker: Cambricon's calibration as yolomlu
implements it, the quant-params state dict in Cambricon's layout, the device's outputs as yolomlu's
emulation computes them, and the op's coordinate setting."""

from __future__ import annotations

import numpy as np
import torch

from yolomlu.backends.mlu_legacy import MluLegacyRunner
from yolomlu.postprocess.detection_output import DetectionOutputSettings, yolov5_detection_output
from yolomlu.postprocess.mlu_buffer import DetectionBufferFormat
from yolomlu.quant import QConfig, calibrate, quant_state_dict
from tests.trained_like import trained_like

from .conftest import ANCHORS_18, IMG, INT8, host_emulation, python_cmd

MAX_BOX = 16


def _runner(model, tmp_path, **kwargs) -> MluLegacyRunner:
    settings = {"python": python_cmd(), "qconfig": INT8, "work_dir": tmp_path, "img_size": IMG, "timeout_s": 180, "batch_size": 2}
    return MluLegacyRunner(model, **{**settings, **kwargs})


def _batches() -> list[torch.Tensor]:
    torch.manual_seed(3)
    return [torch.rand(2, 3, IMG, IMG) for _ in range(3)]


def test_calibration_writes_what_yolomlu_calibrates_in_cambricons_layout(tiny_model, tmp_path, standin) -> None:
    """iteration=2, use_avg, data_scale 0.9, per channel: the worker's gen_quant state dict has the keys,
    order, dtypes and shapes of yolomlu.quant.quant_state_dict and its scales; the device then computes
    yolomlu's emulation of the model with them, exactly."""
    trained_like(tiny_model)
    keys = {"iteration": 2, "use_avg": True, "data_scale": 0.9, "per_channel": True, "firstconv": False}
    runner = _runner(tiny_model, tmp_path, mode="eager", qconfig={**INT8, **keys})
    runner.set_calibration(_batches())
    x = torch.rand(2, 3, IMG, IMG)
    with runner:
        got = runner.infer(x)

    with np.load(runner.generated_quant_params, allow_pickle=False) as npz:
        written = {k: npz[k] for k in npz.files}
    qconfig = QConfig(**keys)
    expected = quant_state_dict(tiny_model, calibrate(tiny_model, _batches(), qconfig), qconfig)
    assert list(written) == list(expected)  # same keys, same order: each layer's quant keys after its weights
    for key, want in expected.items():
        have = written[key]
        assert have.dtype == want.numpy().dtype and have.shape == tuple(want.shape), key
        # The worker's SiLU is x * sigmoid(x) (torch 1.3 has no nn.SiLU): ranges may differ in the last bit.
        assert np.allclose(have, want.numpy(), rtol=1e-6, atol=0), key
    assert int(written["model.2.cv1.conv.quantized_mode"][0]) == 3 and "model.2.cv1.conv.scale_weight_per_channel" in written
    assert written["model.2.cv1.conv.scale"][1] == 0.0  # per channel: s_w lives in scale_weight_per_channel
    # Only the first 2 batches count (iteration=2): calibrating on them alone gives the same scales.
    assert np.array_equal(
        quant_state_dict(tiny_model, calibrate(tiny_model, _batches()[:2], qconfig), qconfig)["model.2.cv1.conv.scale"].numpy(),
        expected["model.2.cv1.conv.scale"].numpy(),
    )

    emulated = host_emulation(tiny_model, runner.generated_quant_params, {**INT8, **keys})
    with torch.no_grad():
        for want, have, fp32 in zip(emulated(x), got, tiny_model(x)):
            assert torch.equal(have, want)
            assert (have - fp32).abs().max() > 1e-3  # and that is not the float model


def test_normalized_coordinates_when_the_sdk_writes_them(boxy_model, tmp_path, standin) -> None:
    """backend.coords=normalized reads what a build writing 0..1 coordinates (the yolov3 kernel's convention)
    writes; the stand-in writes that when told so (YOLOMLU_STANDIN_COORDS, through backend.env)."""
    runner = _runner(boxy_model, tmp_path, mode="fused", detection_output=True, max_box_num=MAX_BOX, coords="normalized",
                     env={"YOLOMLU_STANDIN_COORDS": "normalized"})  # fmt: skip
    runner.set_calibration(_batches()[:1])
    x = torch.rand(2, 3, IMG, IMG)
    with runner:
        (buffer,) = runner.infer(x)

    emulated = host_emulation(boxy_model, runner.generated_quant_params, INT8)
    with torch.no_grad():
        ys = [y.sigmoid() for y in emulated(x)]
    args = (ANCHORS_18, 3, 18, IMG, IMG, 0.25, 0.45, MAX_BOX)
    normalized = yolov5_detection_output(*ys, *args, DetectionOutputSettings(coords="normalized"), dtype=torch.float32)
    pixels = yolov5_detection_output(*ys, *args, DetectionOutputSettings(coords="pixels"), dtype=torch.float32)
    assert torch.equal(buffer, normalized) and buffer[:, 64 + 3 : 64 + 7].abs().max() <= 1.5  # 0..1 (boxes may overhang)
    read = runner.detection_buffer.decode(buffer, 2)
    for a, b in zip(read, DetectionBufferFormat(MAX_BOX, IMG, IMG, coords="pixels").decode(pixels, 2)):
        assert a.shape == b.shape and len(a) == MAX_BOX
        # x/64 rounded to float16 and back: within float16's step at 1.0 (2**-11) times 64 pixels
        assert torch.allclose(a[:, :4], b[:, :4], atol=64 * 2**-11, rtol=0) and torch.equal(a[:, 4:], b[:, 4:])
