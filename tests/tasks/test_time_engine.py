"""task=time_engine: an engine file timed alone in a fresh process, recorded as a run."""

from pathlib import Path

TINY = ["model=yolov5n_v5", "img_size=64", "data.n_images=4", "data.image_size=128", "bench.warmup=1", "bench.iters=4"]


def test_an_exported_file_is_timed_alone_and_recorded(run_cli, read_runs, tmp_path: Path) -> None:
    run_cli("task=export", *TINY)
    onnx = tmp_path / "outputs" / "export" / "yolov5n_v5-64.onnx"
    proc = run_cli("task=time_engine", *TINY, f"source={onnx}", "bench.rounds=2", "backend=onnxruntime", "backend.threads=1")
    assert "ONNX Runtime (yolov5n_v5-64.onnx, threads 1), batch 1, alone in a fresh process" in proc.stdout
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["status"] == "FINISHED" and run["tags.timing"] == "engine_alone"
    assert run["metrics.fps"] > 0 and run["metrics.latency_ms_p50"] > 0  # noqa: timing (a measurement exists)
    # a tiny model runs too briefly for the load to be judged: "unknown" is an honest answer
    assert run["tags.contended"] in ("true", "false", "unknown") and run["tags.timing.rounds"] == "2"
    assert run["tags.accuracy"] == "not_measured"


def test_without_a_source_the_model_groups_eager_module_is_timed(run_cli, read_runs, tmp_path: Path) -> None:
    proc = run_cli("task=time_engine", *TINY)
    assert "torch eager (YOLOv5, float32, cpu" in proc.stdout
    assert read_runs(tmp_path / "mlflow.db").iloc[0]["tags.source"].startswith("model=yolov5n_v5")


def test_a_checkpoint_is_not_an_engine_file(run_cli, tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not a torch archive")
    proc = run_cli("task=time_engine", *TINY, f"source={weights}", check=False)
    assert proc.returncode != 0 and "holds no engine" in proc.stderr
