"""A fresh SQLite store used first by many processes at the same moment loses no run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.tracking.cli_jobs import JOB, finish, start_job


def test_eight_jobs_started_at_once_on_a_fresh_store_are_all_recorded(read_runs, tmp_path: Path) -> None:
    # Eight separate job processes, one store that does not exist yet (./mlflow.db of tmp_path):
    # without the store's lock, MLflow's schema creation raced and 6 of 8 runs were lost.
    jobs = [
        start_job(tmp_path, *JOB, f"tracking.run_name=job-{i}", f"paths.cache_dir={tmp_path / f'cache-{i}'}")
        for i in range(8)
    ]
    for job in jobs:
        finish(job)
    runs = read_runs(tmp_path / "mlflow.db")
    assert sorted(runs["tags.mlflow.runName"]) == [f"job-{i}" for i in range(8)]
    assert set(runs["status"]) == {"FINISHED"}
    assert (tmp_path / "mlflow.db.lock").is_file()
    # No migration was left half done.
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        leftovers = conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '\\_alembic\\_tmp%' ESCAPE '\\'").fetchall()
    assert leftovers == []
