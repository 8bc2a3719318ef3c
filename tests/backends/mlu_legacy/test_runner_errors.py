"""Settings the legacy-MLU runner refuses, by name, and what it reports when the worker fails."""

from __future__ import annotations

import sys

import pytest
import torch

from .conftest import INT8, IMG, python_cmd
from yolomlu.backends import BackendError, runner_class
from yolomlu.backends.mlu_legacy import MluLegacyRunner
from yolomlu.model import build_yolov5


def test_registered_as_mlu_legacy() -> None:
    assert runner_class("mlu_legacy") is MluLegacyRunner


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "jit"}, r"backend.mode='jit' is not supported by the mlu_legacy backend; choose one of \['eager', 'fused', 'offline'\]"),
        ({"core_version": "MLU370"}, r"backend.core_version='MLU370' is not known; choose one of \['MLU270', 'MLU220'\]"),
        ({"core_version": "MLU220", "core_number": 16}, r"backend.core_number=16 must be an integer from 1 to 4 on MLU220"),
        ({"coords": "xywh"}, r"backend.coords='xywh' is not valid; choose one of \['pixels', 'normalized'\]"),
        ({"conf_thres": 1.5}, r"backend.conf_thres=1.5 must lie in \[0, 1\]"),
        ({"input_format": 7}, r"backend.input_format=7 must be 0 \(rgba\)"),
        ({"tfu": {"Tfu": {"enabel": True}}}, r"backend.tfu: unknown key\(s\) \['enabel'\] in config.ini section \[Tfu\]"),
        ({"env": {"cnml optimize": 1}}, r"backend.env: 'cnml optimize' is not an environment variable name"),
        ({"tfu": {"Tfu": {"enable": True}}, "env": {"CNML_OPTIMIZE": "x"}}, "both set"),
        ({"qconfig": {**INT8, "scheme": "mlu370"}}, r"quant.scheme='mlu370': the legacy SDK \(MLU270/MLU220\) quantizes with step absmax/qmax"),
        ({"qconfig": {**INT8, "fallback_topk": 3, "sensitivity": {"images": 2}}}, r"quant.fallback_topk=3 is not applied by backend=mlu_legacy"),
        ({"qconfig": {**INT8, "dtype": "int4"}}, r"backend=mlu_legacy: quant.dtype='int4'"),
        ({"qconfig": {**INT8, "params_file": "a.pth"}, "quant_params": "b.pth"}, "name different files"),
        ({"python": ""}, "backend.python is empty"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, message) -> None:
    with pytest.raises(BackendError, match=message):
        MluLegacyRunner(torch.nn.Identity(), **kwargs)


def _runner(model, tmp_path, **kwargs) -> MluLegacyRunner:
    settings = {"python": python_cmd(), "qconfig": INT8, "work_dir": tmp_path, "img_size": IMG, "timeout_s": 60}
    return MluLegacyRunner(model, **{**settings, **kwargs})


def test_missing_or_unset_sdk_command_is_named(tiny_model, tmp_path) -> None:
    with pytest.raises(BackendError, match=r"backend.python: command '/opt/cambricon/venv/bin/python' not found"):
        _runner(tiny_model, tmp_path, python="/opt/cambricon/venv/bin/python -u").activate()
    with pytest.raises(BackendError, match=r"backend.python is not set: .*docker exec"):
        _runner(tiny_model, tmp_path, python=None).activate()


def test_unquantized_model_and_missing_calibration_are_refused_before_the_worker_starts(tiny_model, tmp_path) -> None:
    with pytest.raises(BackendError, match=r"quant=none: the legacy Cambricon SDK runs quantized models only"):
        _runner(tiny_model, tmp_path, qconfig={"name": "none", "enabled": False}).activate()
    with pytest.raises(BackendError, match=r"needs calibration images .* runner.set_calibration\(batches\)"):
        _runner(tiny_model, tmp_path).activate()
    assert not (tmp_path / "mlu_legacy").exists()


def test_model_settings_the_sdk_cannot_take_are_refused(tiny_model, tmp_path) -> None:
    runner = _runner(tiny_model, tmp_path, qconfig={**INT8, "firstconv": True})
    runner.set_calibration([torch.rand(1, 3, IMG, IMG)])
    with pytest.raises(BackendError, match=r"first conv \(in its Focus stem\) reads 12: with a Focus stem use transforms.focus_to_conv=true"):
        runner.activate()
    odd = build_yolov5("v5", 0.33, 0.25, nc=3, anchors=[[10.5, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]])
    runner = _runner(odd.eval(), tmp_path, detection_output=True)
    runner.set_calibration([torch.rand(1, 3, IMG, IMG)])
    with pytest.raises(BackendError, match=r"the op takes integer pixel anchors; this model's are \[10.5, 13.0"):
        runner.activate()
    runner = _runner(tiny_model, tmp_path, qconfig={**INT8, "mixed_layer": ["model.99.*"]})
    runner.set_calibration([torch.rand(1, 3, IMG, IMG)])
    with pytest.raises(BackendError, match=r"quant.mixed_layer: mixed_layer entry 'model.99.\*' selects no Conv2d/Linear layer"):
        runner.activate()


def test_a_worker_that_dies_is_reported_with_its_stderr_tail(tiny_model, tmp_path) -> None:
    crash = [sys.executable, "-c", "import sys; sys.stderr.write('cnrtInit failed: libcnrt.so not found\\n'); sys.exit(3)"]
    runner = _runner(tiny_model, tmp_path, python=crash)
    runner.set_calibration([torch.rand(1, 3, IMG, IMG)])
    with pytest.raises(BackendError, match=r"(?s)exited \(code 3\) while quantizing and compiling.*worker.log.*libcnrt.so not found"):
        runner.activate()
    assert not runner.is_active


def test_a_worker_that_hangs_is_stopped_after_timeout_s(tiny_model, tmp_path) -> None:
    hang = [sys.executable, "-c", "import time; time.sleep(120)"]
    runner = _runner(tiny_model, tmp_path, python=hang, timeout_s=1)
    runner.set_calibration([torch.rand(1, 3, IMG, IMG)])
    with pytest.raises(BackendError, match=r"gave no answer within backend.timeout_s=1 s while quantizing and compiling"):
        runner.activate()
    assert runner._proc is None  # stopped, not left running


def test_an_sdk_error_in_the_worker_is_reported_with_its_traceback(tiny_model, tmp_path, standin, monkeypatch) -> None:
    monkeypatch.setenv("YOLOMLU_STANDIN_FAIL", "ct.set_core_version")
    runner = _runner(tiny_model, tmp_path, mode="fused")
    runner.set_calibration([torch.rand(1, 3, IMG, IMG)])
    with pytest.raises(BackendError) as info:
        runner.activate()
    text = str(info.value)
    assert "the MLU worker failed while quantizing and compiling: RuntimeError: CNML error (stand-in): ct.set_core_version failed" in text
    assert "Traceback (most recent call last)" in text and "simulating an SDK failure in ct.set_core_version" in text


def test_profile_needs_an_active_runner(tiny_model, tmp_path) -> None:
    # What an active runner says when the SDK wrote no profile: test_presets (a job asking for one).
    runner = _runner(tiny_model, tmp_path)
    with pytest.raises(BackendError, match="not active"):
        runner.profile(torch.rand(1, 3, IMG, IMG))
