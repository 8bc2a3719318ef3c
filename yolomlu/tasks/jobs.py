"""Ordinary jobs started by a task: each one a ``python -m yolomlu`` process of its own, a child run of
the task's parent run, found again in the store by a tag.

A search trial or a gate's measurement is a job like any other (composed from the config, validated,
timed in a fresh process, recorded stage by stage); running it as its own process keeps one job's
memory, threads and crashes away from the task that asked for it and from the next job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from yolomlu.processes import preexec_die_with_parent
from yolomlu.tasks.common import SWEEP_OVERRIDES_ENV
from yolomlu.tasks.sweep import PARENT_ENV, SWEEP_KEY_ENV

# A JSON object of tags a job adds to its run (set by the task that starts it).
RUN_TAGS_ENV = "YOLOMLU_RUN_TAGS"


def run_tags_from_env() -> dict[str, str]:
    """The tags a starting task asked this job to carry (none when started by hand)."""
    text = os.environ.get(RUN_TAGS_ENV)
    return {str(k): str(v) for k, v in json.loads(text).items()} if text else {}


def run_job(
    overrides: Sequence[str],
    parent_run_id: str,
    tags: Mapping[str, Any],
    key: str | None = None,
    config: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    shared: Sequence[str] = (),
) -> int:
    """Run one job as ``python -m yolomlu [overrides]`` (or, with ``config``, a job whose whole
    resolved config is given, e.g. a registered run's, with ``overrides`` on top); return its exit
    status. Its run is a child of ``parent_run_id`` carrying ``tags``; ``key`` is its sweep key (the
    runs it may reuse); ``shared``: overrides every job of the task shares, which name no job's
    variant. Output goes to this process's stdout/stderr."""
    env = {**os.environ, PARENT_ENV: parent_run_id, RUN_TAGS_ENV: json.dumps({k: str(v) for k, v in tags.items()})}
    env.pop(SWEEP_KEY_ENV, None)
    if key:
        env[SWEEP_KEY_ENV] = key
    env[SWEEP_OVERRIDES_ENV] = "\x1f".join(o.split("=", 1)[0].lstrip("+~") for o in shared if "=" in o)
    args = list(overrides)
    with tempfile.TemporaryDirectory(prefix="yolomlu-job-") as folder:
        if config is not None:
            path = Path(folder) / "job.yaml"
            path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
            args = ["--config-dir", folder, "--config-name", "job", *args]
        # The job dies with this process (kill -9 included): no orphan keeps measuring into the store.
        proc = subprocess.Popen([sys.executable, "-m", "yolomlu", *args], env=env, preexec_fn=preexec_die_with_parent)
        try:
            return proc.wait(timeout=timeout_s)
        except BaseException:
            proc.terminate()  # SIGTERM: the job closes its run as KILLED before it goes
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
