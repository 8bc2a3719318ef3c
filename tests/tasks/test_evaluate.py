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
    assert run["metrics.fps"] > 0
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
