"""Sweeps that lose nothing: a parent MLflow run per sweep, failures recorded, finished jobs reused.

``SweepTracking`` is a Hydra callback (registered in conf/config.yaml). In the parent process it
creates the store, the experiment and the parent run before any worker logs, and closes the parent
when the sweep ends, with a summary, even when jobs failed. Each job finds its parent through the
environment variable ``YOLOMLU_PARENT_RUN_ID`` (inherited by joblib and submitit workers).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from yolomlu.tasks import common, errors
from yolomlu.tracking import child_runs, close_dead_runs, start_run
from yolomlu.tracking.query import BOOKKEEPING_OVERRIDES

PARENT_ENV = "YOLOMLU_PARENT_RUN_ID"
SWEEP_KEY_ENV = "YOLOMLU_SWEEP_KEY"


def parent_run_id() -> str | None:
    """The id of the sweep's parent run when this job is part of a sweep."""
    return os.environ.get(PARENT_ENV) or None


def sweep_key() -> str | None:
    """What makes this job's sweep the same sweep as an earlier one (see :func:`sweep_identity`)."""
    return os.environ.get(SWEEP_KEY_ENV) or None


def sweep_identity(preset: str, overrides: list[str], env: dict[str, str], config: DictConfig | None = None) -> str:
    """A short hash of what a sweep is: its preset, its command-line overrides that change what is
    measured (bookkeeping ones such as ``sweep.rerun=true`` aside), what its preset file sets (the
    sweep-level config and the swept values: an edited preset is another sweep), and the code, host
    and torch that measure it. A sweep may reuse a finished job only from a sweep with the same
    identity: an interrupted or repeated run of itself."""
    measured = sorted(o for o in overrides if not o.lstrip("+~").startswith(BOOKKEEPING_OVERRIDES))
    content = _sweep_content(config) if config is not None else None
    text = json.dumps([preset, measured, content, env["code_hash"], env["host"], env["torch"]], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _sweep_content(config: DictConfig) -> dict:
    """The sweep-level config without Hydra's own node and the bookkeeping groups, plus the values
    the sweeper will go through."""
    from omegaconf import OmegaConf

    skip = ("hydra", "tracking", "paths", "sweep", "report")
    body = {key: OmegaConf.to_container(config[key], resolve=True) if OmegaConf.is_config(config[key]) else config[key]
            for key in config if key not in skip}  # fmt: skip
    params = config.hydra.sweeper.get("params") if "hydra" in config else None
    body["swept"] = OmegaConf.to_container(params, resolve=True) if params is not None else None
    return body


class JobTimeout(TimeoutError):
    pass


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`JobTimeout` inside the block once ``seconds`` have passed (main thread only)."""
    if not seconds:
        yield
        return
    if seconds <= 0:
        raise ValueError(f"sweep.timeout_s={seconds} must be positive or null")

    def _expire(signum: int, frame: Any) -> None:
        raise JobTimeout(f"job ran longer than sweep.timeout_s={seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_job(cfg: DictConfig) -> Any:
    """The Hydra task function: one job, with its time limit.

    Inside a sweep a failing job does not raise: its run is already recorded as FAILED, the other
    jobs go on, and the parent's summary and the exit status report it.
    """
    from yolomlu.tasks import run_task

    try:
        with time_limit(cfg.sweep.timeout_s):
            return run_task(cfg)
    except Exception as exc:
        if parent_run_id() is None:
            message = errors.describe(exc)
            if message is None or errors.verbose():
                raise
            # One line, and out before Hydra adds its own report of a failed job.
            sys.stderr.write(f"yolomlu: {message}\n")
            raise SystemExit(errors.exit_status(exc)) from None
        print(f"[yolomlu] job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}


class SweepTracking(Callback):
    """Hydra callback: one parent run per multirun sweep."""

    def __init__(self) -> None:
        self._parent = None
        self._settings = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._settings = common.tracking_settings(config)
        # HydraConfig is not set yet in the parent at this point: read the hydra node directly.
        choices = config.hydra.runtime.choices
        preset = choices.get("experiments/sweep") or choices.get("experiments") or "adhoc"
        overrides = list(config.hydra.overrides.task)
        env = common.environment_tags()
        key = sweep_identity(preset, overrides, env, config)
        # A sweep killed outright (kill -9) left its parent and running job RUNNING: close them.
        for closed in close_dead_runs(self._settings, finder=f"the sweep {preset}"):
            print(f"[yolomlu] {closed}", file=common.log_stream())
        self._parent = start_run(
            self._settings,
            f"sweep-{preset}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"sweep": "true", "sweep_preset": preset, "sweep_overrides": " ".join(overrides), "sweep_key": key, **env},
        )
        os.environ[PARENT_ENV] = self._parent.run_id
        os.environ[SWEEP_KEY_ENV] = key
        # Keys every job shares a value of name no job's variant: only a job's own ones do. (Keys, not
        # strings: the sweeper writes a job's values anew, `eval.enabled=false` as `eval.enabled=False`.)
        shared = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o and "," not in o]
        os.environ[common.SWEEP_OVERRIDES_ENV] = "\x1f".join(shared)
        # Ctrl-C or SIGTERM skips on_multirun_end: close the parent on the way out instead.
        atexit.register(self._close_interrupted)
        print(f"[yolomlu] sweep parent run {self._parent.run_id} ({self._settings.uri})", file=common.log_stream())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._parent is None:
            return
        atexit.unregister(self._close_interrupted)
        failed, children = self._close("FINISHED")
        if failed:
            # Hydra itself would exit 0: the jobs' exceptions were recorded, not raised.
            raise SystemExit(f"[yolomlu] {len(failed)} of {len(children)} jobs failed (see the summary above)")

    def _close(self, status: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """End the parent run with ``status`` and the summary of its children so far."""
        for name in (PARENT_ENV, SWEEP_KEY_ENV, common.SWEEP_OVERRIDES_ENV):
            os.environ.pop(name, None)
        parent, self._parent = self._parent, None
        children = child_runs(self._settings, parent.run_id)
        failed = [c for c in children if c["status"] != "FINISHED"]
        reused = [c for c in children if c["reused_from"]]
        summary = format_summary(children)
        parent.set_tags({"jobs": len(children), "jobs_failed": len(failed), "jobs_reused": len(reused)})
        parent.log_text(summary, "sweep_summary.txt")
        parent.end(status)
        print(summary, file=common.log_stream())
        return failed, children

    def _close_interrupted(self) -> None:
        if self._parent is not None:
            print("[yolomlu] sweep interrupted: closing its run as KILLED", file=sys.stderr)
            self._close("KILLED")


def format_summary(children: list[dict[str, str]]) -> str:
    lines = [f"[yolomlu] sweep: {len(children)} jobs"]
    for c in children:
        note = f"  reused {c['reused_from']}" if c["reused_from"] else ""
        error = f"  {c['error']}" if c["error"] else ""
        lines.append(f"  {c['status']:<9} {c['name']}{note}{error}")
    return "\n".join(lines)
