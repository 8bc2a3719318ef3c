"""Command line: ``python -m yolomlu [overrides]`` or ``yolomlu [overrides]`` (Hydra)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from omegaconf import DictConfig

# conf/ lives at the project root, beside the package (installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `timeout`, `kill`), handled like Ctrl-C: the running job's run ends
    KILLED with this error, and an open sweep is closed, instead of both staying RUNNING forever."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated(f"terminated by signal {signum} (SIGTERM)")


def _task(cfg: DictConfig):
    from yolomlu.tasks.sweep import run_job

    return run_job(cfg)


def main() -> None:
    if not (CONFIG_DIR / "config.yaml").is_file():
        sys.exit(f"yolomlu: no config at {CONFIG_DIR}; install the project in editable mode (make setup)")
    import hydra

    signal.signal(signal.SIGTERM, _on_sigterm)
    hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(_task)()
