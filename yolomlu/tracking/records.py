"""Self-contained run records, for machines that cannot reach the tracking store.

A record is a folder ``<offline_dir>/<record_id>/`` holding ``run.json`` (name, status, times,
params, metrics, tags) and ``artifacts/`` (every logged file, at its artifact path). The record is
written under a ``.partial`` name and renamed when the run ends, so an interrupted job never leaves
a record that looks complete. :func:`import_records` loads finished records into MLflow.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECORD_FILE = "run.json"
PARTIAL_SUFFIX = ".partial"


class OfflineRunLogger:
    """Same calls as :class:`yolomlu.tracking.store.RunLogger`, writing into a record folder."""

    def __init__(self, offline_dir: Path, run_name: str, tags: Mapping[str, Any], experiment: str) -> None:
        self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.final_dir = Path(offline_dir) / self.run_id
        self.dir = self.final_dir.with_name(self.run_id + PARTIAL_SUFFIX)
        (self.dir / "artifacts").mkdir(parents=True)
        self.record: dict[str, Any] = {
            "format": 1,
            "run_name": run_name,
            "experiment": experiment,
            "status": "RUNNING",
            "start_time": int(time.time() * 1000),
            "end_time": None,
            "params": {},
            "metrics": [],  # every logged value: {key, value, step, timestamp}
            "tags": {str(k): str(v) for k, v in tags.items()},
        }
        self._flush()

    def _flush(self) -> None:
        (self.dir / RECORD_FILE).write_text(json.dumps(self.record, indent=1, sort_keys=True))

    def _artifact(self, artifact_file: str) -> Path:
        path = self.dir / "artifacts" / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.record["params"].update({k: str(v) for k, v in params.items()})
        self._flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.record["metrics"] += [{"key": k, "value": float(v), "step": step, "timestamp": now} for k, v in metrics.items()]
        self._flush()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.record["tags"].update({k: str(v) for k, v in tags.items()})
        self._flush()

    def log_table(self, data, artifact_file: str) -> None:
        import pandas as pd

        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        # MLflow's own table layout and tag, so the imported run is what log_table would have made.
        frame.to_json(self._artifact(artifact_file), orient="split", index=False, date_format="iso")
        tables = json.loads(self.record["tags"].get("mlflow.loggedArtifacts", "[]"))
        if {"path": artifact_file, "type": "table"} not in tables:
            tables.append({"path": artifact_file, "type": "table"})
        self.set_tags({"mlflow.loggedArtifacts": json.dumps(tables)})

    def log_text(self, text: str, artifact_file: str) -> None:
        self._artifact(artifact_file).write_text(text)

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        path = self._artifact(artifact_file)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(dict(dictionary), sort_keys=False))
        else:
            path.write_text(json.dumps(dict(dictionary), indent=2))

    def log_figure(self, figure, artifact_file: str) -> None:
        figure.savefig(self._artifact(artifact_file), bbox_inches="tight")

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        target = self._artifact(f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name)
        shutil.copy2(path, target)

    def end(self, status: str) -> Path:
        """Close the record with ``status`` and give it its final name."""
        self.record["status"] = status
        self.record["end_time"] = int(time.time() * 1000)
        self._flush()
        self.dir.rename(self.final_dir)
        return self.final_dir


def find_records(source: Path) -> list[Path]:
    """Finished record folders at ``source`` (a record itself, or a folder of records)."""
    source = Path(source)
    if (source / RECORD_FILE).is_file() and not source.name.endswith(PARTIAL_SUFFIX):
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"no run record or folder of records at {source}")
    return sorted(p.parent for p in source.glob(f"*/{RECORD_FILE}") if not p.parent.name.endswith(PARTIAL_SUFFIX))


def read_record(folder: Path) -> dict[str, Any]:
    path = Path(folder) / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read run record {path}: {exc}") from exc
    missing = {"run_name", "status", "params", "metrics", "tags"} - set(record)
    if missing:
        raise ValueError(f"run record {path} lacks {sorted(missing)}")
    return record
