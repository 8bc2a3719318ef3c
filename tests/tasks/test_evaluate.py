"""End to end: the real config, a real job on a tiny generated COCO set, read back from MLflow."""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from yolomlu.backends import BackendError
from yolomlu.evaluate.coco_eval import METRIC_NAMES
from yolomlu.model import build_yolov5
from yolomlu.model.checkpoint import save_state_dict
from yolomlu.tasks.evaluate import evaluate

SPEED = ("fps", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "pre_ms", "infer_ms", "post_ms", "e2e_fps", "peak_rss_mb")


def test_random_weights_log_speed_but_no_accuracy(compose_cfg, read_runs, tmp_path: Path) -> None:
    metrics = evaluate(compose_cfg())
    runs = read_runs(tmp_path / "mlflow.db")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["tags.mlflow.runName"] == "yolov5n_v5-torch-cpu-eager-fp32-bs1-64"
    for key in SPEED + ("params", "gflops", "model_mb"):
        assert run[f"metrics.{key}"] == pytest.approx(metrics[key])
    assert run["metrics.fps"] > 0  # noqa: timing (a measurement exists, no speed claim)
    # No mAP from untrained weights: tagged, never logged as a number.
    assert run["tags.accuracy"] == "not_measured"
    assert not any(f"metrics.{m}" in runs.columns for m in METRIC_NAMES)
    assert len(run["tags.config_hash"]) == 12 and run["tags.dataset_fingerprint"]
    assert run["params.model.name"] == "yolov5n_v5" and run["params.img_size"] == "64"
    assert run["tags.torch"] and run["tags.threads"]
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(run["run_id"])}
    assert {"config.yaml", "dataset_stats.json"} <= artifacts


def test_weights_from_a_file_give_coco_metrics(compose_cfg, read_runs, tmp_path: Path) -> None:
    # An untrained checkpoint scores ~0 mAP: this checks the plumbing, not the model.
    weights = tmp_path / "w.pt"
    save_state_dict(build_yolov5("v5", 0.33, 0.25, nc=80), weights)
    metrics = evaluate(compose_cfg([f"model.weights={weights}", "bench.enabled=false"]))
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["tags.accuracy"] == "measured"
    for name in METRIC_NAMES:
        assert 0.0 <= run[f"metrics.{name}"] <= 1.0
        assert run[f"metrics.{name}"] == pytest.approx(metrics[name])
    assert "metrics.fps" not in run  # benchmark switched off: nothing invented
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(run["run_id"])}
    assert {"per_class_ap.json", "per_class_ap.csv", "coco_eval.txt"} <= artifacts


def test_corrupt_image_gives_failed_run_naming_the_file(compose_cfg, read_runs, tmp_path: Path) -> None:
    cfg = compose_cfg()
    evaluate(cfg)  # generates the dataset into the cache
    images = sorted((tmp_path / "cache").rglob("images/*.jpg"))
    images[0].write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(Exception, match=images[0].name):
        evaluate(cfg)
    runs = read_runs(tmp_path / "mlflow.db").sort_values("start_time")
    assert list(runs["status"]) == ["FINISHED", "FAILED"]
    assert images[0].name in runs.iloc[1]["tags.error"]


def test_unknown_value_fails_the_run_and_names_the_key(compose_cfg, read_runs, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"backend.mode=.warp."):
        evaluate(compose_cfg(["backend.mode=warp"]))
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["status"] == "FAILED" and "warp" in run["tags.error"]


def _profile(tmp_path: Path, run_id: str):
    import pandas as pd

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    local = client.download_artifacts(run_id, "layer_profile.json", str(tmp_path / run_id))
    return pd.read_json(local, orient="split")


def test_focus_to_conv_removes_strided_slices_and_keeps_parity(compose_cfg, read_runs, tmp_path: Path) -> None:
    evaluate(compose_cfg(["experiments=cpu_reference"]))
    evaluate(compose_cfg(["experiments=focus_to_conv"]))
    runs = read_runs(tmp_path / "mlflow.db").sort_values("start_time")
    reference, focus = runs.iloc[0], runs.iloc[1]
    assert reference["tags.baseline"] == "true" and focus["tags.baseline"] == "false"
    assert "STRIDEDSLICE" in set(_profile(tmp_path, reference["run_id"])["layer_type"])
    assert "STRIDEDSLICE" not in set(_profile(tmp_path, focus["run_id"])["layer_type"])
    assert focus["tags.transform.focus_to_conv.replaced"] == "1"
    assert focus["metrics.parity_focus_to_conv"] < 1e-3
    assert focus["metrics.parity_max_abs"] < 1e-3  # the whole variant vs the fp32 eager reference


def test_offline_variant_runs_from_a_logged_file(compose_cfg, read_runs, tmp_path: Path) -> None:
    evaluate(compose_cfg(["experiments=offline"]))
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["tags.backend.graph"] == "torchscript file loaded back"
    assert run["metrics.artifact_mb"] > 0.5
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    files = client.list_artifacts(run["run_id"], "offline_model")
    assert len(files) == 1 and files[0].path.endswith(".pt")
    assert run["metrics.parity_max_abs"] < 1e-3


def test_half_precision_variant_reports_its_dtype_and_error(compose_cfg, read_runs, tmp_path: Path) -> None:
    fp32 = evaluate(compose_cfg(["bench.enabled=false"]))
    half = evaluate(compose_cfg(["experiments=half"]))
    run = read_runs(tmp_path / "mlflow.db").sort_values("start_time").iloc[-1]
    assert run["tags.backend.output_dtype"] == "bfloat16"
    assert 0 < run["metrics.parity_max_abs"]  # bf16 is not exact, and the log says by how much
    assert half["model_mb"] == pytest.approx(fp32["model_mb"] / 2, rel=0.01)  # the size of what runs


def test_int8_quantizes_the_unfolded_model_and_its_params_file_loads_as_is(compose_cfg, read_runs, tmp_path: Path) -> None:
    import torch

    weights = tmp_path / "w.pt"
    save_state_dict(build_yolov5("v5", 0.33, 0.25, nc=80), weights)
    base = [f"model.weights={weights}", "quant=int8", "bench.enabled=false", "bench.profile=false"]
    evaluate(compose_cfg(base))
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["tags.quant.bn"].startswith("unfolded") and run["tags.transform.fuse"].startswith("not applied")
    assert run["tags.quant.float_dtype"].startswith("float16")
    (params,) = (tmp_path / "cache" / "quant").glob("*.pth")
    state = torch.load(params, weights_only=True)
    assert any(".bn.running_var" in key for key in state)  # the study's layout: BatchNorm beside the int8 conv
    # ... so the file evaluates with the default settings, without recalibrating.
    evaluate(compose_cfg([*base, f"quant.params_file={params}"]))
    runs = read_runs(tmp_path / "mlflow.db").sort_values("start_time")
    assert runs.iloc[1]["status"] == "FINISHED" and runs.iloc[1]["tags.quant.source"] == f"params_file {params}"
    assert runs.iloc[1]["metrics.map50_95"] == pytest.approx(runs.iloc[0]["metrics.map50_95"])


def test_folding_batchnorm_before_quantizing_is_a_variant_that_says_so(compose_cfg, read_runs, tmp_path: Path) -> None:
    evaluate(compose_cfg(["quant=int8", "quant.fold_bn=true", "bench.enabled=false", "bench.profile=false"]))
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["tags.quant.bn"].startswith("folded") and run["tags.transform.fuse.replaced"] != "0"
