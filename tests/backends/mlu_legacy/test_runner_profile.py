"""The runner reads the SDK's timing and profile lines from the worker log, batch by batch.

The stand-in writes none of them; here it replays a fixture of their documented text
(``fixtures/sdk_replay.log``: the yolov5 offline demo's ``HardwareTime`` line and the study's
layer-type table) each time the worker asks for the device, as the SDK's printf would land in the
log. Nothing is measured: the point is the road from the log to device_ms and the profile table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolomlu.backends.mlu_legacy import MluLegacyRunner

from .conftest import IMG, INT8, python_cmd

REPLAY = Path(__file__).resolve().parent / "fixtures" / "sdk_replay.log"


def test_hardware_time_and_layer_table_from_the_worker_log(tiny_model, tmp_path, standin) -> None:
    runner = MluLegacyRunner(
        tiny_model, python=python_cmd(), qconfig=INT8, work_dir=tmp_path, img_size=IMG, timeout_s=180, mode="fused",
        batch_size=2, env={"YOLOMLU_STANDIN_SDK_LOG": str(REPLAY), "CNRT_GET_HARDWARE_TIME": "on"},
    )  # fmt: skip
    runner.set_calibration([torch.rand(2, 3, IMG, IMG)])
    x = torch.rand(2, 3, IMG, IMG)
    with runner:
        _, seconds = runner.timed_infer(x)
        device = runner.last_device_seconds
        profile = runner.profile(x, passes=2)
        evidence = runner.evidence()

    # One HardwareTime line per forward: 24.356 ms for the batch (the worker's own seconds are CPU time).
    assert device == pytest.approx(0.024356) and seconds > 0  # noqa: timing (a measurement exists, no speed claim)
    assert evidence["backend.device_time"].startswith("HardwareTime (CambriconECO yolov5 offline main.cpp)")
    assert evidence["timing.device"].startswith("standin (CPU)")
    rows = {r.layer_type: (r.count, r.time_us) for r in profile.rows}
    assert rows["TFU"] == (72, 155041.4) and rows["PLUGIN"] == (1, 8790.8) and rows["POLL"] == (159, 113639.6)
    assert [r.layer_type for r in profile.rows][:3] == ["STRIDEDSLICE", "ACTIVE", "TFU"]  # as the tool printed it
    # The log still holds everything the worker and the "SDK" wrote.
    assert (runner.job_dir / "worker.log").read_text().count("HardwareTime:24.356000(ms)") >= 4
