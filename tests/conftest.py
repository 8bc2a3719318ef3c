"""Shared fixtures: the real Hydra config, composed and shrunk for tests, and a throwaway store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from yolomlu.cli import CONFIG_DIR, prepare_process

ROOT = CONFIG_DIR.parent
# The config schemas in Hydra's ConfigStore (as the command line does first), and no telemetry from
# the MLflow clients the tests open in this process.
prepare_process()

# Small enough that a whole job runs in seconds on 2 cores.
TINY = [
    "model=yolov5n_v5",
    "img_size=64",
    "data.n_images=4",
    "data.image_size=128",
    "eval.batch_size=2",
    "bench.warmup=1",
    "bench.iters=2",
]


@pytest.fixture
def compose_cfg(tmp_path: Path):
    """compose(overrides) -> the real config, with tracking and caches inside tmp_path."""

    def _compose(overrides: list[str] = (), tiny: bool = True) -> DictConfig:
        local = [
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.output_dir={tmp_path / 'outputs'}",
        ]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("config", overrides=(TINY if tiny else []) + local + list(overrides))

    return _compose


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run ``python -m yolomlu`` for real in a subprocess, from tmp_path."""

    def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "yolomlu", *args],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"yolomlu {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return _run


@pytest.fixture
def read_runs():
    """read_runs(db) -> all runs of an experiment in the SQLite store ``db`` (pandas, via MLflow)."""

    def _read(db: Path, experiment: str = "yolomlu"):
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{db}")
        try:
            return mlflow.search_runs(experiment_names=[experiment])
        finally:
            mlflow.set_tracking_uri(None)

    return _read
