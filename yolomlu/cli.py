"""Command line: ``python -m yolomlu [overrides]`` or ``yolomlu [overrides]`` (Hydra).

An expected error — a bad value, a key or type the config does not have, a missing or corrupt file,
a backend that cannot do what was asked — ends the command with one line on stderr naming the bad
thing (``tasks/errors.py``), and exit status 1 (2 for a config that does not compose). A traceback
is printed only for a bug, or always with ``HYDRA_FULL_ERROR=1`` (or ``YOLOMLU_VERBOSE=1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig

# conf/ lives at the project root, beside the package (installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def _task(cfg: DictConfig):
    from yolomlu.tasks.sweep import run_job

    return run_job(cfg)


def prepare_process() -> None:
    """What every process that composes or runs a job needs first: the config schemas in Hydra's
    ConfigStore, and MLflow's usage telemetry off (the workbench sends nothing anywhere; a user who
    set the switch keeps their value)."""
    from yolomlu.tasks.schema import register

    register()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def main() -> None:
    if not (CONFIG_DIR / "config.yaml").is_file():
        sys.exit(f"yolomlu: no config at {CONFIG_DIR}; install the project in editable mode (make setup)")
    import hydra

    from yolomlu import interrupts
    from yolomlu.tasks import errors

    prepare_process()
    interrupts.install()
    verbose = errors.verbose()
    # Hydra then raises instead of printing its own report: the errors are ours to word.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(_task)()
    except KeyboardInterrupt as exc:  # the running job's run and an open sweep are closed as KILLED by now
        sys.stderr.write(f"yolomlu: stopped: {str(exc) or 'interrupted (Ctrl-C)'}\n")  # a bare KeyboardInterrupt() is truthy, its text empty
        sys.exit(143 if isinstance(exc, interrupts.Terminated) else 130)
    except Exception as exc:
        message = errors.describe(exc)
        if verbose or message is None:
            raise
        sys.stderr.write(f"yolomlu: {message}\n")
        sys.exit(errors.exit_status(exc))


