"""The openvino backend: fp32 parity with torch, the precision that ran, NNCF int8 from the typed quant
settings, profiles, the timing twin, refusals by name, and no telemetry."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from yolomlu.backends import BackendError, runner_class
from yolomlu.backends.openvino_runner import OpenVinoRunner
from yolomlu.data.coco import read_image
from yolomlu.data.letterbox import letterbox
from yolomlu.data.preprocess import to_tensor_batch
from yolomlu.data.synthetic import generate_shapes
from yolomlu.quant import QuantSettings

from tests.trained_like import trained_like_yolov5n

pytest.importorskip("openvino")
pytest.importorskip("nncf")

IMG = 64
INT8 = {
    "name": "int8", "enabled": True, "dtype": "int8", "scheme": "openvino", "firstconv": False, "per_channel": False,
    "mixed_layer": [], "iteration": 4, "calib": {"images": 4, "batch_size": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return trained_like_yolov5n()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> torch.Tensor:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, n_images=6, img_size=128, seed=0)
    return to_tensor_batch([letterbox(read_image(p), IMG)[0] for p in sorted((root / "images").glob("*.jpg"))])


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def reference(model, images) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(images)


def test_f32_matches_torch_and_says_what_ran(model, images, reference, work_dir) -> None:
    assert runner_class("openvino") is OpenVinoRunner
    with OpenVinoRunner(model, precision="f32", threads=1, work_dir=work_dir, img_size=IMG) as runner:
        got = runner.infer(images[1:4])
        evidence = runner.evidence()
        profile = runner.profile(images[:1], passes=2)
    for ref, out in zip(reference, got):
        assert out.shape == ref[1:4].shape and torch.allclose(out, ref[1:4], atol=1e-4, rtol=0)
    assert evidence["backend.compute_dtype"] == "f32" and evidence["backend.precision_asked"] == "f32"
    assert evidence["backend.threads_used"] == 1 and evidence["backend.performance_hint"] == "latency"
    assert runner.artifact.suffix == ".onnx" and runner.quantized_layers() is None
    rows = {r.layer_type: r for r in profile.rows}
    assert "CONV" in rows and rows["CONV"].time_us > 0 and sum(r.ratio for r in profile.rows) == pytest.approx(1.0)


def test_bf16_is_recorded_as_it_ran(model, images, reference, work_dir) -> None:
    with OpenVinoRunner(model, precision="bf16", threads=1, work_dir=work_dir, img_size=IMG) as runner:
        got = runner.infer(images[:1])
        ran = runner.evidence()["backend.compute_dtype"]
    assert ran == "bf16"
    err = max(float((o - r[:1]).abs().max()) for o, r in zip(got, reference))
    assert 0 < err < 0.1 * max(float(r.abs().max()) for r in reference)  # reduced precision, the same model


def _int8(model, images, work_dir, **quant) -> OpenVinoRunner:
    runner = OpenVinoRunner(model, precision="f32", threads=1, work_dir=work_dir, img_size=IMG)
    runner.set_quantization(QuantSettings.from_mapping({**INT8, **quant}), [images[0:2], images[2:4]])
    return runner


def test_int8_through_nncf_writes_an_ir_and_quantizes_every_conv(model, images, reference, work_dir) -> None:
    with _int8(model, images, work_dir) as runner:
        got = runner.infer(images[4:6])
        evidence = runner.evidence()
    assert runner.artifact.suffix == ".xml" and runner.artifact.with_suffix(".bin").is_file()
    assert runner.quantized_layers() == 62 and evidence["backend.quantized_nodes"] == 62
    assert evidence["backend.quant.activations"] == "asymmetric" and evidence["backend.compute_dtype"].startswith("int8 (NNCF)")
    for ref, out in zip(reference, got):
        err = float((out - ref[4:6]).abs().max())
        assert 0 < err < 0.1 * float(ref.abs().max())
    # The timing twin reopens the very IR, nothing rebuilt.
    twin = runner.timing_twin()
    with twin:
        again = twin.infer(images[4:6])
    assert twin.artifact == runner.artifact and all(torch.equal(a, b) for a, b in zip(again, got))


def test_mixed_layers_stay_float(model, images, work_dir) -> None:
    with _int8(model, images, work_dir, mixed_layer=["detect"], activations="symmetric") as runner:
        assert runner.quantized_layers() == 62 - 3
        assert runner.evidence()["backend.quant.activations"] == "symmetric"


@pytest.mark.parametrize(
    ("quant", "message"),
    [
        ({"scheme": "mlu270"}, r"quant.scheme='mlu270' is not OpenVINO's: set quant.scheme=openvino"),
        ({"dtype": "int16"}, r"quant.dtype='int16': NNCF's post-training quantization here is int8 only"),
        ({"use_avg": True}, r"quant.use_avg=True cannot be honoured by the openvino backend"),
        ({"data_scale": 0.8}, r"quant.data_scale=0.8 cannot be honoured"),
        ({"calib": {"images": 4, "batch_size": 2, "method": "entropy"}}, r"quant.calib.method='entropy'"),
    ],
)
def test_settings_nncf_cannot_honour_are_refused_by_name(model, images, work_dir, quant, message) -> None:
    with pytest.raises(BackendError, match=message):
        _int8(model, images, work_dir, **quant)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp8"}, r"backend.precision='fp8' is not supported by the openvino backend; choose one of \['auto', 'f32', 'bf16'\]"),
        ({"hint": "fast"}, r"backend.hint='fast'"),
        ({"half": True}, r"backend.half=true is not an openvino setting: choose backend.precision=bf16"),
        ({"threads": 0}, r"backend.threads must be a positive integer or null"),
    ],
)
def test_backend_settings_are_refused_by_name(model, work_dir, kwargs, message) -> None:
    with pytest.raises(BackendError, match=message):
        OpenVinoRunner(model, work_dir=work_dir, img_size=IMG, **kwargs)


def test_nothing_is_sent_or_written_home_while_quantizing(tmp_path) -> None:
    """openvino_telemetry is how OpenVINO and NNCF send usage data (import openvino sends an event
    unless it believes it runs in CI; NNCF's own unless NNCF_CI is set): in a plain process (NNCF
    counts this one as pytest) no backend send may run, and no consent file may appear at home."""
    code = f"""
import torch
from openvino_telemetry.backend import backend_ga, backend_ga4
sent = []
backend_ga4.GA4Backend.send = lambda self, message: sent.append(message)
backend_ga.GABackend.send = lambda self, message: sent.append(message)
from tests.trained_like import trained_like_yolov5n
from yolomlu.backends.openvino_runner import OpenVinoRunner
from yolomlu.quant import QuantSettings
runner = OpenVinoRunner(trained_like_yolov5n(), precision="f32", threads=1, work_dir={str(tmp_path / "work")!r}, img_size={IMG})
runner.set_quantization(QuantSettings.from_mapping({INT8!r}), [torch.rand(2, 3, {IMG}, {IMG})])
with runner:
    runner.infer(torch.rand(1, 3, {IMG}, {IMG}))
assert runner.quantized_layers() == 62, runner.quantized_layers()
assert not sent, sent
"""
    import os
    from pathlib import Path

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NNCF_CI", "CI")} | {"HOME": str(home)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env, cwd=str(Path(__file__).resolve().parents[2]))
    assert not any(home.iterdir()), sorted(p.name for p in home.rglob("*"))


def test_missing_openvino_names_the_package(model, work_dir, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    runner = OpenVinoRunner(model, work_dir=work_dir, img_size=IMG)  # construction needs no SDK
    with pytest.raises(BackendError, match=r"backend=openvino needs the openvino package.*pip install openvino nncf"):
        runner.activate()
