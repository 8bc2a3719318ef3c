"""Fixtures of the battery: a store per case, and commands run as the command line runs them.

Every case gets its own tracking store, copied from a template that already holds an earlier,
finished run: creating a store from nothing runs MLflow's schema migrations, seconds each time. A
job runs in this process through ``tasks.sweep.run_job``, the function the command line hands every
composed config to, which prints the one ``yolomlu:`` line and exits 1 for an expected error; a
config that does not compose is worded by ``tasks.errors.describe``, as the command line words it.
One command-line case per category checks that the real process says the same
(:class:`battery.Command`).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from yolomlu.cli import CONFIG_DIR

from .battery import EARLIER, TORCH_THREADS, VERBOSE_ENV, Command, Outcome, Store


@pytest.fixture(scope="session")
def template_store(tmp_path_factory) -> Path:
    """A store holding one FINISHED run with params and metrics, made once through the
    workbench's own tracking code."""
    from yolomlu.tracking import TrackingSettings, start_run

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    run = start_run(TrackingSettings(uri=f"sqlite:///{db}", experiment="yolomlu"), "earlier", tags={"variant": "earlier"})
    run.log_params({"model.name": "demo"})
    run.log_metrics(EARLIER)
    run.end("FINISHED")
    return db


@pytest.fixture
def store(template_store: Path, tmp_path: Path) -> Store:
    """This case's store: ``tmp_path/mlflow.db``, where the command line started in tmp_path looks."""
    shutil.copyfile(template_store, tmp_path / "mlflow.db")
    return Store(tmp_path / "mlflow.db")


@pytest.fixture
def run_job(tmp_path: Path, store: Store, monkeypatch):
    """run_job(overrides) -> Outcome: compose the real config, then the command line's task
    function, in this process, from tmp_path, with :data:`battery.TORCH_THREADS`.

    A config that does not compose is worded as the command line words it (exit 2); an error the
    workbench does not expect propagates with its traceback (a defect: the case fails)."""
    from yolomlu.tasks import errors
    from yolomlu.tasks.sweep import run_job as task

    for name in VERBOSE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    local = [f"tracking.uri={store.uri}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'outputs'}"]

    def _run(overrides: list[str]) -> Outcome:
        out, err = io.StringIO(), io.StringIO()
        status = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                    cfg = compose("config", overrides=[*overrides, *local])
            except Exception as exc:
                message = errors.describe(exc)
                if message is None:
                    raise
                return Outcome(errors.exit_status(exc), f"yolomlu: {message}\n", "", store.new_runs())
            try:
                task(cfg)
            except SystemExit as exc:
                status = exc.code
        return Outcome(status, err.getvalue(), out.getvalue(), store.new_runs())

    yield _run
    torch.set_num_threads(threads)


@pytest.fixture
def run_command(tmp_path: Path, template_store: Path):
    """run_command(*args) -> Outcome of ``python -m yolomlu`` in a subprocess, from tmp_path on a
    copy of the template store."""
    return lambda *args: Command(tmp_path, template_store, list(args)).outcome()


@pytest.fixture
def marker(tmp_path: Path):
    """The file a malicious payload would create if it ran; asserted absent after the case."""
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), f"a payload ran: {path} exists"


@pytest.fixture(scope="session")
def weights_80(tmp_path_factory) -> Path:
    """Random weights of yolov5n_v5 with COCO's 80 classes, in the workbench's own format."""
    from yolomlu.model import build_yolov5
    from yolomlu.model.checkpoint import save_state_dict

    return save_state_dict(build_yolov5("v5", 0.33, 0.25, nc=80), tmp_path_factory.mktemp("weights") / "yolov5n_v5_80.pt")
