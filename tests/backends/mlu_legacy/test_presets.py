"""conf/backend/mlu_legacy.yaml and the study's MLU presets (experiments/mlu_*.yaml) compose with the real
config, validate, reach the runner as the settings they name, and run end to end on the emulating
stand-in of torch_mlu, logging a predicted accuracy (accuracy=predicted_standin), never a measured one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from yolomlu.backends import BackendError
from yolomlu.cli import CONFIG_DIR
from yolomlu.tasks.common import make_runner, validate_config
from yolomlu.tasks.quant_stage import settings_of

ROOT = CONFIG_DIR.parent
MLU_PRESETS = sorted(p.stem for p in (ROOT / "experiments").glob("mlu_*.yaml"))
EXPECTED = {  # preset -> (mode, batch size, focus_to_conv, tfu, half, decode + NMS on the device)
    "mlu_layer_by_layer": ("eager", 1, False, False, False, True),
    "mlu_fused": ("fused", 1, False, False, False, True),
    "mlu_host_decode": ("fused", 1, False, False, False, False),
    "mlu_offline": ("offline", 1, False, False, False, True),
    "mlu_batch16": ("fused", 16, False, False, False, True),
    "mlu_focus_to_conv": ("fused", 16, True, False, False, True),
    "mlu_tfu": ("fused", 16, True, True, False, True),
    "mlu_half": ("fused", 16, True, True, True, True),
}
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_every_study_step_has_a_preset() -> None:
    assert MLU_PRESETS == sorted(EXPECTED)


def test_backend_group_documents_every_key_and_composes(compose_cfg) -> None:
    lines = (CONFIG_DIR / "backend" / "mlu_legacy.yaml").read_text().splitlines()
    settings = [line for line in lines if line and not line.startswith((" ", "#", "defaults:"))]  # defaults: the schema
    keys = [line.split(":")[0] for line in settings]
    undocumented = [line for line in settings if "#" not in line and not line.startswith("name:")]
    assert not undocumented, f"keys without a comment: {undocumented}"
    cfg = compose_cfg(["backend=mlu_legacy"])
    validate_config(cfg)  # constructing the runner checks every setting
    runner = make_runner(cfg, torch.nn.Identity())
    assert sorted(keys) == sorted(["name", *runner_settings()])
    assert runner.quant.name == "none" and runner.batch_size == cfg.bench.batch_size
    with pytest.raises(BackendError, match="backend.python is not set"):
        runner.activate()


def runner_settings() -> list[str]:
    import inspect

    from yolomlu.backends.mlu_legacy import MluLegacyRunner

    params = inspect.signature(MluLegacyRunner).parameters
    # qconfig: the Python API's shortcut for set_quantization, never a config key (the job hands its settings over)
    return [p for p in params if p not in ("model", "work_dir", "img_size", "qconfig")]


@pytest.mark.parametrize("preset", MLU_PRESETS)
def test_mlu_preset_composes_with_int8_and_names_its_command(compose_cfg, preset: str) -> None:
    if not (CONFIG_DIR / "quant" / "int8.yaml").is_file():
        pytest.skip("conf/quant/int8.yaml is not there yet")
    text = (ROOT / "experiments" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert f"python -m yolomlu experiments={preset} backend.python=" in text
    assert "NOT RUN ON MLU HARDWARE" in text
    cfg = compose_cfg([f"experiments={preset}"], tiny=False)
    validate_config(cfg)
    mode, batch, focus, tfu, half, on_device = EXPECTED[preset]
    b = cfg.backend
    assert (b.name, b.mode, b.batch_size, cfg.bench.batch_size, bool(cfg.transforms.focus_to_conv), bool(b.tfu), b.half) == (
        "mlu_legacy", mode, batch, batch, focus, tfu, half
    )
    assert cfg.quant.name == "int8" and b.detection_output == on_device and not cfg.bench.profile
    runner = make_runner(cfg, torch.nn.Identity())
    assert not runner.quant.enabled  # the config holds no copy: the job hands the settings over
    runner.set_quantization(settings_of(cfg), [])
    assert runner.quant.enabled and runner.quant.qconfig.firstconv is False  # the study's qconfig
    assert Path(runner.work_dir).name == "exports"


MLU_SWEEPS = sorted(p.stem for p in (ROOT / "experiments" / "sweep").glob("mlu_*.yaml"))


@pytest.mark.parametrize("sweep", MLU_SWEEPS)
def test_mlu_sweep_composes_with_its_header_command(sweep: str) -> None:
    """The command in the header, backend.python included, composes for the sweep's parent and every job."""
    from hydra import compose, initialize_config_dir

    text = (ROOT / "experiments" / "sweep" / f"{sweep}.yaml").read_text()
    (line,) = [line for line in text.splitlines() if f"python -m yolomlu experiments/sweep={sweep}" in line]
    args = line.split("python -m yolomlu", 1)[1].split()
    assert "backend.python=/opt/cambricon/venv/bin/python" in args and "NOT RUN ON MLU HARDWARE" in text
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        parent = compose("config", overrides=args, return_hydra_config=True)
        params = {key: str(values).split(",") for key, values in parent.hydra.sweeper.params.items()}
        assert set(params["experiments"]) <= set(MLU_PRESETS)
        for preset in params["experiments"]:
            job = compose("config", overrides=[*args, f"experiments={preset}"])
            validate_config(job)
            assert job.backend.name == "mlu_legacy" and job.backend.python == "/opt/cambricon/venv/bin/python"


def _header_command(preset: str) -> list[str]:
    """The command line a preset's header gives, as a list of arguments after ``python -m yolomlu``."""
    text = (ROOT / "experiments" / f"{preset}.yaml").read_text()
    (line,) = [line for line in text.splitlines() if f"python -m yolomlu experiments={preset}" in line]
    return line.split("python -m yolomlu", 1)[1].split()


# Shrinks the data and the timing, nothing else: the rest is the header's command as written.
SMALL = ["data.n_images=4", "eval.parity_images=1", "bench.warmup=1", "bench.iters=2"]


@pytest.mark.parametrize("preset", MLU_PRESETS)
def test_every_mlu_command_runs_as_written_from_a_fresh_folder(preset: str, run_cli, read_runs, tmp_path: Path, monkeypatch) -> None:
    """The header's command with backend.python set to this Python and the stand-in on PYTHONPATH, run
    from an empty folder with the default relative paths: it finishes through the real worker and files,
    logs the stand-in's accuracy as a prediction, and says what it is."""
    import sys

    _standin_on_path(monkeypatch)
    args = [a if not a.startswith("backend.python=") else f"backend.python={sys.executable}" for a in _header_command(preset)]
    run_cli(*args, *SMALL)
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["status"] == "FINISHED"
    assert run["tags.backend.sdk_standin"].startswith("true (an emulating test double")
    # The emulating stand-in predicts the device's accuracy: logged, tagged as a prediction, never as measured.
    assert run["tags.accuracy"] == "predicted_standin" and "not on an MLU" in run["tags.accuracy_reason"]
    assert 0.0 <= run["metrics.map50_95"] <= 1.0 and 0.0 <= run["metrics.parity_box_agreement"] <= 1.0
    assert run["tags.quant.bn"].startswith("unfolded")
    on_device = EXPECTED[preset][5]
    if on_device:  # box agreement taken at the thresholds the on-device op was compiled with
        assert float(run["tags.parity.conf_thres"]) == float(run["params.backend.conf_thres"])
    assert run["tags.backend.nms_on_device"] == str(on_device).lower()
    # Its times are CPU times: tagged so, and no device time (the stand-in prints no hardware time).
    assert run["tags.timing.device"].startswith("standin (CPU)") and run["tags.backend.device_time"].startswith("none")
    assert "metrics.device_ms" not in run or math.isnan(run["metrics.device_ms"])
    assert (tmp_path / ".cache" / "yolomlu" / "exports" / "mlu_legacy").is_dir()  # relative to where it ran


def test_a_job_failing_late_keeps_what_its_earlier_stages_measured(run_cli, read_runs, tmp_path: Path, monkeypatch) -> None:
    import sys

    _standin_on_path(monkeypatch)
    # The stand-in prints no profile: asking for one fails the timing stage, the last one, saying why.
    proc = run_cli("experiments=mlu_fused", f"backend.python={sys.executable}", *SMALL, "bench.profile=true", check=False)
    assert proc.returncode != 0
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["status"] == "FAILED" and "no per-layer profile" in run["tags.error"]
    assert "stand-in, which writes no profile" in run["tags.error"]
    assert run["tags.accuracy"] == "predicted_standin" and run["metrics.map50_95"] >= 0
    assert run["metrics.params"] > 0 and not math.isnan(run["metrics.parity_box_agreement"])  # logged as each stage ended
    assert run["tags.quant.source"] == "calibrated by the backend"


def _standin_on_path(monkeypatch) -> None:
    """The stand-in first on PYTHONPATH, what was there after it (the yolomlu under test, for one)."""
    import os

    standin = str(Path(__file__).resolve().parent / "standin")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (standin, os.environ.get("PYTHONPATH")) if p))


def test_the_sdks_hardware_time_and_profile_reach_the_run(run_cli, read_runs, tmp_path: Path, monkeypatch) -> None:
    """Where the SDK prints its hardware time and layer table (here: the stand-in replays their documented
    text, fixtures/sdk_replay.log), the job logs device_ms / device_fps and the layer profile with the
    MLU's own rows. The numbers are the fixture's, not a measurement."""
    import sys

    import pandas as pd
    from mlflow import MlflowClient

    _standin_on_path(monkeypatch)
    run_cli("experiments=mlu_fused", f"backend.python={sys.executable}", *SMALL, "eval.enabled=false", "bench.profile=true",
            f"+backend.env.YOLOMLU_STANDIN_SDK_LOG={FIXTURES / 'sdk_replay.log'}", "+backend.env.CNRT_GET_HARDWARE_TIME=on")  # fmt: skip
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["status"] == "FINISHED"
    # HardwareTime:24.356000(ms) per forward, here of a batch of 1
    assert run["metrics.device_ms"] == pytest.approx(24.356) and run["metrics.device_fps"] == pytest.approx(1 / 0.024356)
    assert run["tags.backend.device_time"].startswith("HardwareTime (CambriconECO yolov5 offline main.cpp)")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    profile = pd.read_json(client.download_artifacts(run["run_id"], "layer_profile.json", str(tmp_path / "dl")), orient="split")
    rows = dict(zip(profile["layer_type"], profile["time_us"]))
    assert rows["TFU"] == 155041.4 and rows["PLUGIN"] == 8790.8 and {"POLL", "NOTIFY", "INIT_SYNC"} <= set(rows)


def test_the_stand_in_predicts_what_the_int8_emulation_scores(run_cli, read_runs, tmp_path: Path, monkeypatch) -> None:
    """mlu_fused on the stand-in (int8 in the worker, decode + NMS by the op's reference) against quant=int8 on
    the torch backend (yolomlu's emulation, host decode + NMS), same images: the same mAP to within 0.03
    (the issue's bar; the differences are the op's float16 buffer and its NMS choices)."""
    import sys

    _standin_on_path(monkeypatch)
    small = ["data.n_images=8", "eval.parity_images=1", "bench.enabled=false", "bench.profile=false"]
    run_cli("experiments=mlu_fused", f"backend.python={sys.executable}", *small)
    run_cli("quant=int8", *small)
    runs = read_runs(tmp_path / "mlflow.db").set_index("tags.backend.sdk_standin", drop=False)
    mlu = runs[runs["params.backend.name"] == "mlu_legacy"].iloc[0]
    emulated = runs[runs["params.backend.name"] == "torch"].iloc[0]
    assert mlu["tags.accuracy"] == "predicted_standin" and emulated["tags.accuracy"] == "measured"
    assert emulated["tags.quant_emulated"] == "true" and mlu["metrics.map50_95"] > 0.3
    assert abs(mlu["metrics.map50_95"] - emulated["metrics.map50_95"]) <= 0.03
