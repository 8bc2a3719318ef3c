"""task=train end to end on a tiny generated set: one tracked run, a checkpoint that loads."""

from pathlib import Path

from yolomlu.model import build_yolov5
from yolomlu.model.checkpoint import load_weights
from yolomlu.tasks.train import train_job


def test_train_job_records_epochs_and_writes_a_loadable_checkpoint(compose_cfg, read_runs, tmp_path: Path) -> None:
    out = tmp_path / "tiny.pt"
    cfg = compose_cfg(
        [
            "model.nc=6", "train.epochs=2", "train.img_size=64", "train.batch_size=8", "train.n_train_images=16",
            "train.n_val_images=4", "train.eval_every=1", "train.bf16=false", f"train.out={out}",
        ]
    )  # fmt: skip
    metrics = train_job(cfg)
    run = read_runs(tmp_path / "mlflow.db").iloc[0]
    assert run["status"] == "FINISHED" and run["tags.task"] == "train"
    assert 0.0 <= metrics["map50_95"] <= 1.0 and run["metrics.map50_95"] == metrics["map50_95"]
    info = load_weights(build_yolov5("v5", 0.33, 0.25, nc=6), out)  # the written file matches the architecture
    assert info.names is not None and len(info.names) == 6
