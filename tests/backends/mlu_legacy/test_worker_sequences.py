"""The device worker, run for real through the runner, against the EMULATING STAND-IN of torch_mlu.

Each test runs ``worker.py`` as a subprocess (our Python, torch 2.x, CPU) with the stand-in first on
``PYTHONPATH``, then checks the calls the stand-in recorded (which, in which order, with which arguments)
and what it computed: the quant-params state dict yolomlu's calibration writes, and outputs equal to
yolomlu's own emulation of the MLU (``conftest.host_emulation``: int8 convs, float16 between layers) fed
to the CPU reference of ``yolov5_detection_output``. Every expected sequence says which public Cambricon
sample it follows:

- [quant.py]  CambriconECO/Pytorch_Yolov5_Inference, quantize_online/quant.py: qconfig dict,
  ``quantize_dynamic_mlu(net, qconfig_spec=qconfig, dtype='int8', gen_quant=True)``, a CPU forward, then
  the quantized state_dict saved.
- [detect.py] same repository, quantize_online/detect.py: ``quantize_dynamic_mlu(net)``,
  ``load_state_dict(state_dict, strict=False)``, ``to(ct.mlu_device())``; its jit branch
  (``set_grad_enabled(False)``, ``set_core_number``, ``torch.jit.trace(net, randn(1, ...).to(mlu),
  check_trace=False)``) and ``save_as_cambricon('')`` after the forward.
- [yolo.py]   same repository, quantize_online/yolo.py: Detect on an MLU tensor applies sigmoid and calls
  ``torch.ops.torch_mlu.yolov5_detection_output(p3, p4, p5, anchors_list (18 ints), nc, len(anchors_list),
  img_h, img_w, conf_thres, iou_thres, maxBoxNum)``.
- [genoff.py] Cambricon catch examples/offline/genoff/genoff.py, as copied in CambriconKnight/dev-env-ubuntu
  (pytorch/yolov4-416/patch/v1.7.0/cambricon_pytorch/pytorch/src/catch/examples/offline/genoff/genoff.py):
  module-level ``torch.set_grad_enabled(False)``; ``set_core_number``, ``set_core_version``, ``set_device``,
  ``save_as_cambricon(mname)``, ``set_input_format``; ``torch.jit.trace(net.to(mlu), randn(1, ...).to(mlu),
  check_trace=False)``; one forward at ``batch_size``; half precision = ``HalfTensor`` inputs, model float.
- [yolov3 eval] the MLU270 YOLOv3 evaluation sample (Cambricon torchvision ``quantization.object_detection``
  user; same call set): ``set_core_number``, ``set_core_version``, ``set_input_format`` before tracing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolomlu.backends.mlu_legacy import MluLegacyRunner
from yolomlu.postprocess.detection_output import yolov5_detection_output
from yolomlu.quant import QConfig, calibrate, quant_state_dict, save_quant_params
from yolomlu.transforms import apply_transforms

from tests.trained_like import trained_like

from .conftest import ANCHORS_18, IMG, INT8, INT8_QCONFIG, host_emulation, names, python_cmd, read_calls

MAX_BOX = 8


def _runner(model, tmp_path, **kwargs) -> MluLegacyRunner:
    settings = {"python": python_cmd(), "qconfig": INT8, "work_dir": tmp_path, "img_size": IMG, "timeout_s": 180, "batch_size": 2}
    return MluLegacyRunner(model, **{**settings, **kwargs})


def _calibration() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.rand(2, 3, IMG, IMG), torch.rand(2, 3, IMG, IMG)]


def _reference(model, x) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(x)


def _expected_buffer(emulated, x, nc: int, conf: float = 0.25, iou: float = 0.45, coords: str = "pixels") -> torch.Tensor:
    """What the device should return: yolomlu's emulation's raw maps, sigmoid, the reference op."""
    from yolomlu.postprocess.detection_output import DetectionOutputSettings

    ys = [y.sigmoid() for y in _reference(emulated, x)]
    settings = DetectionOutputSettings(coords=coords)
    return yolov5_detection_output(*ys, ANCHORS_18, nc, 18, IMG, IMG, conf, iou, MAX_BOX, settings, dtype=torch.float32)


def _npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


GEN_QUANT = [  # [quant.py] on the CPU, then [detect.py] for deployment
    "mlu_quantize.quantize_dynamic_mlu", "model.forward", "model.forward",
    "mlu_quantize.quantize_dynamic_mlu", "model.load_state_dict",
]  # fmt: skip


def test_layer_by_layer_with_decode_nms_on_the_device_and_half_inputs(boxy_model, tmp_path, standin) -> None:
    """eager: [genoff.py] set_grad_enabled(False); [quant.py] gen_quant + calibration forwards on the CPU;
    [detect.py] quantize_dynamic_mlu(net) + load_state_dict(strict=False) + to(ct.mlu_device()); per batch the
    input to ct.mlu_device() and [yolo.py] sigmoid + yolov5_detection_output; [genoff.py] half = half inputs.
    The buffer is the reference op on yolomlu's emulation of the same int8 model, value for value."""
    tiny_model = boxy_model
    runner = _runner(tiny_model, tmp_path, mode="eager", detection_output=True, max_box_num=MAX_BOX, half=True,
                     conf_thres=0.25, iou_thres=0.45)  # fmt: skip
    runner.set_calibration(_calibration())
    x = torch.rand(2, 3, IMG, IMG)
    with runner:
        (buffer,) = runner.infer(x)
        (again,) = runner.infer(x)
        evidence = runner.evidence()

    calls = read_calls(standin)
    assert names(calls) == [
        "import torch_mlu", "torch.set_grad_enabled", *GEN_QUANT,
        "ct.mlu_device",  # model.to(ct.mlu_device())
        "ct.mlu_device", "model.forward", "torch.ops.torch_mlu.yolov5_detection_output",  # batch 1
        "ct.mlu_device", "model.forward", "torch.ops.torch_mlu.yolov5_detection_output",  # batch 2
    ]  # fmt: skip
    assert calls[1]["args"] == [False]
    gen, deploy = calls[2], calls[5]
    assert gen["args"] == [{"module": "Model"}, INT8_QCONFIG] and gen["kwargs"] == {"dtype": "int8", "gen_quant": True}
    assert [c["args"][0]["device"] for c in calls[3:5]] == ["cpu", "cpu"] and calls[3]["kwargs"] == {"phase": "gen_quant"}
    assert calls[3]["args"][0]["dtype"] == "float32"  # calibration runs in float on the CPU
    assert deploy["args"] == [{"module": "Model"}] and deploy["kwargs"] == {}
    assert calls[6]["kwargs"]["strict"] is False
    assert calls[9]["args"][0] == {"tensor": [2, 3, IMG, IMG], "dtype": "float16", "device": "cpu"}
    op = calls[10]["args"]
    assert [a["tensor"] for a in op[:3]] == [[2, 24, 8, 8], [2, 24, 4, 4], [2, 24, 2, 2]]
    assert op[3:] == [ANCHORS_18, 3, 18, IMG, IMG, 0.25, 0.45, MAX_BOX]

    assert buffer.shape == (2, 64 + 7 * MAX_BOX) and buffer.dtype == torch.float32 and torch.equal(buffer, again)
    # The device's numerics: half inputs, int8 convs, float16 between layers, the reference op.
    emulated = host_emulation(tiny_model, runner.generated_quant_params, INT8)
    expected = _expected_buffer(emulated, x.half().float(), nc=3)
    assert torch.equal(buffer, expected)
    assert buffer[:, 0].tolist() == [MAX_BOX, MAX_BOX]  # more boxes survive than the buffer holds: full
    decoded = runner.detection_buffer.decode(buffer, batch_size=2)
    assert [len(d) for d in decoded] == [MAX_BOX, MAX_BOX]
    assert all(torch.equal(d[:, 4], d[:, 4].sort(descending=True).values) for d in decoded)  # the best kept, best first
    assert evidence["backend.output_dtype"] == "float16"  # half inputs, half outputs
    assert evidence["backend.input_dtype"] == "float16" and evidence["backend.nms_on_device"] == "true"
    assert evidence["backend.quant_source"] == "generated" and evidence["backend.quant_calibration_batches"] == 2
    assert evidence["backend.torch_mlu_file"].endswith("standin/torch_mlu/__init__.py")
    assert evidence["backend.sdk_standin"].startswith("true (an emulating test double of torch_mlu")
    assert evidence["timing.device"].startswith("standin (CPU)") and evidence["backend.device_time"].startswith("none")
    assert runner.last_device_seconds is None  # the stand-in prints no hardware time
    # The generated params, reusable as backend.quant_params.
    assert runner.generated_quant_params == runner.job_dir / "quant_params.npz" and runner.generated_quant_params.is_file()
    assert evidence["backend.quant_params_file"] == str(runner.generated_quant_params)
    assert not list((runner.job_dir / "requests").iterdir()) and not list((runner.job_dir / "results").iterdir())


def test_fused_with_tfu_config_firstconv_and_mixed_layers_computes_the_emulated_int8_model(tiny_model, tmp_path, standin) -> None:
    """fused: [quant.py]/[detect.py] quantization (mixed_layer as quantize_dynamic_mlu's argument, REFERENCE
    section 3); [yolov3 eval] set_core_number, set_core_version, set_input_format; [detect.py] jit branch:
    trace on the device with a batch-1 input, check_trace=False; [genoff.py] one forward at batch_size.
    The TFU config.ini reaches CNML as CNML_OPTIMIZE before torch_mlu is imported (the porting study).
    The traced graph computes yolomlu's emulation of the int8 model (firstconv on raw pixels, the head in float)."""
    trained_like(tiny_model)  # weights whose int8 rounding shows in the outputs
    apply_transforms(tiny_model, ["focus_to_conv"], None)  # a 3-channel first conv: firstconv applies
    qconfig = {**INT8, "firstconv": True, "mixed_layer": ["detect"]}
    tfu = {"Tfu": {"enable": True, "maxBlockNum": 5}, "OpOpt": {"highPrecision": False}}
    runner = _runner(tiny_model, tmp_path, mode="fused", core_number=4, qconfig=qconfig, tfu=tfu)
    runner.set_calibration(_calibration()[:1])
    x = torch.rand(3, 3, IMG, IMG)  # another batch size than the compiled one
    with runner:
        got = runner.infer(x)
        evidence = runner.evidence()

    config = runner.job_dir / "config.ini"
    assert config.read_text().splitlines()[1:] == ["", "[Tfu]", "enable=1", "maxBlockNum=5", "", "[OpOpt]", "highPrecision=0"]
    calls = read_calls(standin)
    assert calls[0] == {"call": "import torch_mlu", "args": [], "kwargs": {"env": {"CNML_OPTIMIZE": f"USE_CONFIG:{config}"}}}
    assert names(calls) == [
        "import torch_mlu", "torch.set_grad_enabled",
        "mlu_quantize.quantize_dynamic_mlu", "model.forward", "mlu_quantize.quantize_dynamic_mlu", "model.load_state_dict",
        "ct.set_core_number", "ct.set_core_version", "ct.set_input_format",
        "ct.mlu_device", "ct.mlu_device", "torch.jit.trace", "model.forward",  # trace (runs the model once)
        "ct.mlu_device",  # the compiling forward at the job's batch size
        "ct.mlu_device",  # the batch
    ]  # fmt: skip
    mixed = {"model.24.m.0": "float16", "model.24.m.1": "float16", "model.24.m.2": "float16"}
    assert calls[2]["args"][1] == {**INT8_QCONFIG, "firstconv": True}
    assert calls[2]["kwargs"] == {"dtype": "int8", "gen_quant": True, "mixed_layer": mixed}
    assert calls[4]["kwargs"] == {"mixed_layer": mixed}
    assert [c["args"] for c in calls[6:9]] == [[4], ["MLU270"], [0]]
    trace = calls[11]
    assert trace["args"] == [{"module": "Model"}, {"tensor": [1, 3, IMG, IMG], "dtype": "float32", "device": "cpu"}]
    assert trace["kwargs"] == {"check_trace": False}
    # With firstconv the worker feeds 0..255 pixels and the first conv divides by std*255; yolomlu's emulation
    # normalises 0..1 inputs by std: the same numbers up to float rounding of x*255/255, which may move an
    # activation across an int8 rounding boundary here and there. The float model is much further away.
    emulated = host_emulation(tiny_model, runner.generated_quant_params, qconfig)
    for want, b, fp32 in zip(_reference(emulated, x), got, _reference(tiny_model, x)):
        assert want.shape == b.shape
        near = (want - b).abs().max().item()
        assert near < 0.05 * (fp32 - b).abs().max().item() and (want - b).abs().mean() < 1e-3 * want.abs().mean()
        assert torch.equal(b, b.half().float())  # float16 between layers, float16 out
    assert evidence["backend.graph"].startswith("torch.jit.trace") and evidence["backend.compiled_batch_size"] == 2
    assert evidence["backend.cnml_optimize"] == f"USE_CONFIG:{config}" and evidence["backend.tfu_config"] == "Tfu,OpOpt"
    assert evidence["backend.quant_mixed_layers"] == 3 and evidence["backend.quant_missing_keys"] == 0


def test_offline_model_from_a_workbench_quant_params_file(boxy_model, tmp_path, standin) -> None:
    """offline: [detect.py] a saved quant-params file loaded with quantize_dynamic_mlu(net) +
    load_state_dict(strict=False), no gen_quant; [genoff.py] set_core_number, set_core_version, set_device,
    save_as_cambricon(name), set_input_format, trace with batch 1, one forward at batch_size; [detect.py]
    save_as_cambricon('') after it. The .cambricon (+ _twins) is the runner's artifact. A per-channel file's
    keys load (quantized_by_channel, scale_weight_per_channel) and the device computes with its scales."""
    tiny_model = boxy_model
    qconfig = QConfig(firstconv=False, per_channel=True)
    params = save_quant_params(tmp_path / "yolov5_int8.pth", tiny_model, calibrate(tiny_model, _calibration(), qconfig), qconfig)
    runner = _runner(tiny_model, tmp_path, mode="offline", core_version="MLU220", core_number=4, device_id=0,
                     detection_output=True, max_box_num=MAX_BOX, quant_params=str(params),
                     qconfig={**INT8, "per_channel": True})  # fmt: skip
    x = torch.rand(2, 3, IMG, IMG)
    with runner:
        (buffer,) = runner.infer(x)
        evidence = runner.evidence()

    calls = read_calls(standin)
    op = "torch.ops.torch_mlu.yolov5_detection_output"
    assert names(calls) == [
        "import torch_mlu", "torch.set_grad_enabled",
        "mlu_quantize.quantize_dynamic_mlu", "model.load_state_dict",
        "ct.set_core_number", "ct.set_core_version", "ct.set_device", "ct.save_as_cambricon", "ct.set_input_format",
        "ct.mlu_device", "ct.mlu_device", "torch.jit.trace", "model.forward", op,
        "ct.mlu_device", op,  # the forward at batch_size that writes the offline model
        "ct.save_as_cambricon",
        "ct.mlu_device", op,  # the batch
    ]  # fmt: skip
    assert calls[2]["args"] == [{"module": "Model"}] and calls[2]["kwargs"] == {}
    assert calls[3]["kwargs"]["strict"] is False
    assert [c["args"] for c in calls[4:9]] == [[4], ["MLU220"], [0], ["offline/yolov5_mlu220_bs2c4"], [0]]
    assert calls[15]["args"][0]["tensor"] == [2, 24, 8, 8]  # generated at the job's batch size
    assert calls[16]["args"] == [""]

    assert runner.artifact == runner.job_dir / "offline" / "yolov5_mlu220_bs2c4.cambricon" and runner.artifact.is_file()
    assert evidence["backend.artifact"] == "yolov5_mlu220_bs2c4.cambricon" and evidence["backend.artifact_bytes"] > 0
    assert evidence["backend.artifact_twins"].endswith("yolov5_mlu220_bs2c4.cambricon_twins")
    assert evidence["backend.quant_source"] == "file" and evidence["backend.quant_missing_keys"] == 0
    assert evidence["backend.quant_layers"] == sum(isinstance(m, torch.nn.Conv2d) for m in tiny_model.modules())
    emulated = host_emulation(tiny_model, params, {**INT8, "per_channel": True})
    assert torch.equal(buffer, _expected_buffer(emulated, x, nc=3))
    # The job folder holds what crossed over: plain files only, no pickles.
    with np.load(runner.job_dir / "quant_params_in.npz", allow_pickle=False) as npz:
        assert "model.0.conv.conv.scale" in npz.files


def test_a_quant_params_file_for_another_model_is_refused(tiny_model, tmp_path, standin) -> None:
    other = {"model.99.conv.scale": np.ones(2, np.float32)}
    np.savez(tmp_path / "other.npz", **other)
    runner = _runner(tiny_model, tmp_path, quant_params=str(tmp_path / "other.npz"))
    with pytest.raises(Exception, match=r"does not fit this model: 1 of its keys match no layer \(e.g. \['model.99.conv.scale'\]\)"):
        runner.activate()
    assert not runner.is_active
