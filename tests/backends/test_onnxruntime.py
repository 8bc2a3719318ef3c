"""The onnxruntime backend: fp32 parity with torch, int8 from the quant config, profiles, refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from yolomlu.backends import BackendError, runner_class
from yolomlu.backends.onnxruntime_runner import OrtRunner
from yolomlu.backends.ort_quant import OrtQuantSettings
from yolomlu.quant import QuantSettings
from yolomlu.data.coco import read_image
from yolomlu.data.letterbox import letterbox
from yolomlu.data.preprocess import to_tensor_batch
from yolomlu.data.synthetic import generate_shapes

from tests.trained_like import trained_like_yolov5n

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

IMG = 64
INT8 = {
    "name": "int8", "enabled": True, "dtype": "int8", "scheme": "onnxruntime", "firstconv": False, "per_channel": False,
    "mixed_layer": [], "iteration": 4, "calib": {"images": 4, "batch_size": 2},
}  # fmt: skip


def _settings(**quant) -> QuantSettings:
    """The job's typed quant settings, from the plain group (as conf/quant/int8.yaml composes it)."""
    return QuantSettings.from_mapping({**INT8, **quant})


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return trained_like_yolov5n()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> torch.Tensor:
    """Six synthetic shapes images letterboxed to IMG, float32 [6, 3, IMG, IMG] in 0..1, as a job feeds them."""
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, n_images=6, img_size=128, seed=0)
    return to_tensor_batch([letterbox(read_image(p), IMG)[0] for p in sorted((root / "images").glob("*.jpg"))])


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")  # shared: the fp32 export is cached across tests


@pytest.fixture(scope="module")
def reference(model, images) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(images)


@pytest.mark.parametrize("graph_optimization", ["disabled", "all"])
def test_fp32_matches_torch_at_other_batch_sizes(model, images, reference, work_dir, graph_optimization) -> None:
    with OrtRunner(model, graph_optimization=graph_optimization, threads=1, work_dir=work_dir, img_size=IMG) as runner:
        for lo, hi in ((0, 1), (1, 4)):  # exported at batch 2, run at 1 and 3
            got = runner.infer(images[lo:hi])
            for ref, out in zip(reference, got):
                assert out.dtype == torch.float32 and out.shape == ref[lo:hi].shape
                assert torch.allclose(out, ref[lo:hi], atol=1e-4, rtol=0), float((out - ref[lo:hi]).abs().max())
        evidence = runner.evidence()
    assert evidence["backend.graph_optimization"] == graph_optimization
    assert evidence["backend.providers"] == "CPUExecutionProvider" and evidence["backend.threads_used"] == 1
    assert evidence["backend.compute_dtype"] == "float32" and evidence["backend.onnx_outputs"] == "p3,p4,p5"
    assert runner.artifact.suffix == ".onnx" and evidence["backend.artifact_bytes"] == runner.artifact.stat().st_size
    assert evidence["backend.model_mb"] == pytest.approx(runner.artifact.stat().st_size / 2**20, abs=1e-3)
    assert "backend.quantized_nodes" not in evidence


def test_registry_builds_it_and_a_second_runner_reuses_the_file(model, work_dir) -> None:
    cls = runner_class("onnxruntime")
    assert cls is OrtRunner
    with cls(model, work_dir=work_dir, img_size=IMG) as first:
        pass
    with cls(model, work_dir=work_dir, img_size=IMG) as second:
        assert second.artifact == first.artifact and "backend.export_s" not in second.evidence()


def test_profile_maps_ort_ops_to_the_study_taxonomy(model, images, work_dir) -> None:
    with OrtRunner(model, threads=1, work_dir=work_dir, img_size=IMG) as runner:
        profile = runner.profile(images[:1], passes=2)
    rows = {r.layer_type: r for r in profile.rows}
    assert rows["CONV"].count == 62 and rows["CONV"].time_us > 0
    assert rows["ACTIVE"].count == 59  # SiLU, fused by ORT into one QuickGelu node each
    assert sum(r.ratio for r in profile.rows) == pytest.approx(1.0)
    assert not list(work_dir.glob("ort-profile*"))  # the trace file is read and removed


def _int8(model, work_dir, images, **quant) -> tuple[OrtRunner, list[torch.Tensor], dict]:
    calibration = [images[0:2], images[2:4]]
    runner = OrtRunner(model, threads=1, work_dir=work_dir, img_size=IMG, quant_format=quant.pop("quant_format", "qdq"))
    runner.set_quantization(_settings(**quant), calibration)
    with runner:
        outputs = runner.infer(images[4:6])
        evidence = runner.evidence()
    return runner, outputs, evidence


def test_int8_is_smaller_quantizes_every_conv_and_stays_close(model, images, reference, work_dir) -> None:
    runner, outputs, evidence = _int8(model, work_dir, images)
    assert evidence["backend.compute_dtype"].startswith("int8")
    assert evidence["backend.quantized_nodes"] == evidence["backend.conv_nodes"] == 62
    assert evidence["backend.model_mb"] < 0.35 * evidence["backend.fp32_model_mb"]
    assert evidence["backend.quant.calib_images_used"] == 4 and evidence["backend.quant.calibrate_method"] == "MinMax"
    assert runner.artifact != runner.export.path and "int8" in runner.artifact.name
    proto = onnx.load(str(runner.artifact), load_external_data=False)
    types = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= types
    init = {t.name: t for t in proto.graph.initializer}

    def zero_point_dtypes(nodes) -> set[np.dtype]:
        return {onnx.helper.tensor_dtype_to_np_dtype(init[n.input[2]].data_type) for n in nodes}

    activations = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_quantized")]
    assert len(weights) == 62
    assert zero_point_dtypes(activations) == {np.dtype("uint8")} and zero_point_dtypes(weights) == {np.dtype("int8")}
    for ref, out in zip(reference, outputs):
        err = float((out - ref[4:6]).abs().max())
        assert 0 < err < 0.05 * float(ref.abs().max())  # really quantized, and still the same model
    assert runner.quantized_layers() == 62


def test_symmetric_activations_and_the_qoperator_format(model, images, work_dir) -> None:
    runner, _, evidence = _int8(model, work_dir, images, activations="symmetric", quant_format="qoperator")
    assert evidence["backend.quant.activations"] == "symmetric" and evidence["backend.quant.format"] == "qoperator"
    assert evidence["backend.compute_dtype"] == "int8 (qoperator: int8 activations, int8 weights)"
    types = {n.op_type for n in onnx.load(str(runner.artifact), load_external_data=False).graph.node}
    assert "QLinearConv" in types and runner.quantized_layers() == 62


def test_per_channel_gives_one_weight_scale_per_output_channel(model, images, work_dir) -> None:
    runner, _, evidence = _int8(model, work_dir, images, per_channel=True)
    assert evidence["backend.quant.per_channel"] is True and evidence["backend.quantized_nodes"] == 62
    proto = onnx.load(str(runner.artifact), load_external_data=False)
    scales = {t.name: t for t in proto.graph.initializer}
    head_scale = scales["model.24.m.0.weight_scale"]
    assert list(head_scale.dims) == [33]  # 3 anchors x (5 + 6 classes) output channels


@pytest.mark.parametrize("head", ["detect", "model.24.m.*"])
def test_mixed_layer_keeps_the_selected_convs_in_float(model, images, work_dir, head) -> None:
    # Entries select layers as the MLU emulation does: names, fnmatch patterns, or 'detect'.
    _, _, evidence = _int8(model, work_dir, images, mixed_layer=[head, "model.0.conv.conv"])
    assert evidence["backend.quantized_nodes"] == 62 - 4
    assert evidence["backend.quant.excluded_nodes"].split(",") == [
        "/model.0/conv/conv/Conv", "/model.24/m.0/Conv", "/model.24/m.1/Conv", "/model.24/m.2/Conv",
    ]  # fmt: skip


def test_mixed_layer_entry_that_selects_nothing_is_refused(model, images, work_dir) -> None:
    with pytest.raises(BackendError, match=r"quant.mixed_layer entry 'model\.99' selects no Conv2d/Linear layer"):
        _int8(model, work_dir, images, mixed_layer=["model.99"])


def test_iteration_feeds_only_the_first_batches(model, images, work_dir) -> None:
    _, _, evidence = _int8(model, work_dir, images, iteration=1, calib={"images": 4, "batch_size": 2, "method": "percentile"})
    assert evidence["backend.quant.calib_batches_used"] == 1 and evidence["backend.quant.calib_images_used"] == 2
    assert evidence["backend.quant.calibrate_method"] == "Percentile"


@pytest.mark.parametrize(
    ("quant", "message"),
    [
        ({"dtype": "int16"}, r"quant.dtype='int16' is not supported by the onnxruntime backend"),
        ({"scheme": "mlu270"}, r"quant.scheme='mlu270' is a Cambricon MLU quantization scheme.*quant.scheme=onnxruntime"),
        ({"scheme": "mlu370"}, r"quant.scheme='mlu370' is a Cambricon"),
        ({"firstconv": True}, r"quant.firstconv=True cannot be honoured"),
        ({"data_scale": 0.9}, r"quant.data_scale=0.9 cannot be honoured"),
        ({"use_avg": True, "calib": {"images": 4, "batch_size": 2, "method": "entropy"}}, r"use_avg=true needs quant.calib.method=minmax"),
        ({"params_file": "yolov5x_int8.pth"}, r"quant.params_file='yolov5x_int8.pth' cannot be honoured"),
        ({"fallback_topk": 3}, r"quant.fallback_topk=3 cannot be honoured"),
        ({"float_dtype": "float16"}, r"quant.float_dtype='float16': ONNX Runtime computes what is not int8 in float32"),
    ],
)
def test_settings_ort_cannot_honour_are_refused_by_name(model, work_dir, quant, message) -> None:
    runner = OrtRunner(model, work_dir=work_dir, img_size=IMG)
    with pytest.raises(BackendError, match=message):
        runner.set_quantization(_settings(**quant), [torch.rand(1, 3, IMG, IMG)])


@pytest.mark.parametrize("preset", ["int8", "int8_per_channel", "int8_mixed"])
def test_the_jobs_quant_presets_drive_it_with_the_onnxruntime_scheme(compose_cfg, preset) -> None:
    from omegaconf import OmegaConf

    def typed(*overrides: str) -> QuantSettings:
        return QuantSettings.from_mapping(OmegaConf.to_container(compose_cfg([f"quant={preset}", *overrides]).quant, resolve=True))

    settings = OrtQuantSettings.from_settings(typed("quant.scheme=onnxruntime"))
    assert settings.per_channel == (preset == "int8_per_channel")
    assert settings.mixed_layer == (("detect",) if preset == "int8_mixed" else ())
    assert settings.calibrate_method == "MinMax" and settings.iteration == 1 and settings.activations == "asymmetric"
    with pytest.raises(BackendError, match=r"quant.scheme='mlu270' is a Cambricon MLU quantization scheme"):
        OrtQuantSettings.from_settings(typed())  # the MLU's scheme, as the preset leaves it
    with pytest.raises(BackendError, match=r"quant.dtype='int16' is not supported"):
        OrtQuantSettings.from_settings(typed("quant.scheme=onnxruntime", "quant.dtype=int16"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"half": True}, r"backend.half=true is not supported by the onnxruntime backend"),
        ({"graph_optimization": "max"}, r"backend.graph_optimization='max' is not supported.*'disabled', 'basic'"),
        ({"threads": 0}, r"backend.threads must be a positive integer or null"),
        ({"opset": 11}, r"backend.opset=11 must be an integer >= 13"),
    ],
)
def test_backend_settings_are_refused_by_name(model, work_dir, kwargs, message) -> None:
    with pytest.raises(BackendError, match=message):
        OrtRunner(model, work_dir=work_dir, img_size=IMG, **kwargs)


def test_int8_without_calibration_or_with_the_wrong_size_is_refused(model, images, work_dir) -> None:
    runner = OrtRunner(model, work_dir=work_dir, img_size=IMG)
    runner.set_quantization(_settings(), [])
    with pytest.raises(BackendError, match=r"needs calibration batches"):
        runner.activate()
    runner.set_quantization(_settings(), [torch.rand(1, 3, 32, 32)])
    with pytest.raises(BackendError, match=r"calibration batch \(1, 3, 32, 32\) does not match the model input \[B, 3, 64, 64\]"):
        runner.activate()


def test_missing_onnxruntime_names_the_package_and_what_is_installed(model, work_dir, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    runner = OrtRunner(model, work_dir=work_dir, img_size=IMG)  # construction needs no SDK
    with pytest.raises(BackendError, match=r"needs the onnxruntime package.*installed: python 3\.\d+.*, torch 2\."):
        runner.activate()


def test_import_needs_neither_onnx_nor_onnxruntime() -> None:
    code = (
        "import sys; sys.modules['onnxruntime'] = None; sys.modules['onnx'] = None\n"
        "import yolomlu, yolomlu.backends.onnxruntime_runner, yolomlu.backends.ort_quant, yolomlu.backends.onnx_export\n"
        "from yolomlu.backends import runner_class; runner_class('onnxruntime')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
