"""task=import: load run records written with tracking.offline_dir into the MLflow store."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from yolomlu.tasks import common
from yolomlu.tracking import TrackingSettings, import_records


def import_task(cfg: DictConfig) -> dict[str, int]:
    if cfg.source is None:
        raise ValueError("task=import needs source=<a run record folder, or a folder of them>")
    settings = common.tracking_settings(cfg)
    store = TrackingSettings(uri=settings.uri, experiment=settings.experiment, artifact_root=settings.artifact_root)
    run_ids = import_records(Path(cfg.source).expanduser(), store)
    print(f"[yolomlu] imported {len(run_ids)} run records from {cfg.source} into {store.uri}", file=common.log_stream())
    return {"imported": len(run_ids)}
