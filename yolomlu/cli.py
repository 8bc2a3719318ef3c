"""Command line: ``python -m yolomlu [overrides]`` or ``yolomlu [overrides]`` (Hydra)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

# conf/ lives at the project root, beside the package (installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def _task(cfg: DictConfig):
    from yolomlu.tasks.sweep import run_job

    return run_job(cfg)


def main() -> None:
    if not (CONFIG_DIR / "config.yaml").is_file():
        sys.exit(f"yolomlu: no config at {CONFIG_DIR}; install the project in editable mode (make setup)")
    import hydra

    from yolomlu import interrupts

    interrupts.install()
    hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(_task)()
