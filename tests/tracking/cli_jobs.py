"""Real ``python -m yolomlu`` processes for the store tests: tiny jobs, started side by side."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# A whole job in seconds: tiny model and images, two timed batches, no mAP, no layer profile; one
# thread each, so that many processes side by side on 2 cores share them instead of spinning.
JOB = [
    "model=yolov5n_v5", "img_size=64", "data.n_images=4", "data.image_size=128",
    "bench.iters=2", "bench.warmup=1", "eval.enabled=false", "bench.profile=false", "backend.threads=1",
]  # fmt: skip


def job_env() -> dict[str, str]:
    """The environment of a job process: no MLflow telemetry, one OpenMP thread, unbuffered output."""
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_job(cwd: Path, *overrides: str) -> subprocess.Popen:
    """Start ``python -m yolomlu <overrides>`` in ``cwd`` (created), output captured."""
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "yolomlu", *overrides]
    return subprocess.Popen(command, cwd=cwd, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout_s: float = 600) -> str:
    """Wait for a job process; raise with its output unless it exited 0; return its stdout."""
    out, err = process.communicate(timeout=timeout_s)
    if process.returncode != 0:
        raise AssertionError(f"{' '.join(process.args)} exited {process.returncode}:\n{out}\n{err}")
    return out


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 300, alive: subprocess.Popen | None = None) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` (or if ``alive`` exits first)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"{' '.join(alive.args)} exited ({alive.returncode}) before {what}:\n{alive.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def child_statuses(db: Path) -> list[str]:
    """The statuses of the child runs in the SQLite store ``db``, read with read-only SQL (a client
    here must not take part in the store's creation)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            rows = conn.execute(
                "SELECT status FROM runs WHERE run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')"
            ).fetchall()
    except sqlite3.Error:  # the schema is still being created
        return []
    return [row[0] for row in rows]
