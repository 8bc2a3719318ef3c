"""Entry tasks. The only package that reads Hydra config objects."""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig


def _tasks() -> dict[str, Callable[[DictConfig], Any]]:
    # Imported here so that `import yolomlu.tasks` stays cheap.
    from yolomlu.tasks.detect import detect
    from yolomlu.tasks.evaluate import evaluate
    from yolomlu.tasks.export import export_task
    from yolomlu.tasks.gate import gate_task
    from yolomlu.tasks.info import info
    from yolomlu.tasks.promote import promote_task
    from yolomlu.tasks.records import import_task
    from yolomlu.tasks.report import report_task
    from yolomlu.tasks.search import search_task
    from yolomlu.tasks.time_engine import time_engine_task
    from yolomlu.tasks.train import train_job

    return {
        "evaluate": evaluate,
        "detect": detect,
        "info": info,
        "import": import_task,
        "report": report_task,
        "export": export_task,
        "train": train_job,
        "time_engine": time_engine_task,
        "search": search_task,
        "promote": promote_task,
        "gate": gate_task,
    }


def run_task(cfg: DictConfig) -> Any:
    """Dispatch on ``cfg.task``; an unknown task names the known ones."""
    from yolomlu.tasks.common import validate_config

    tasks = _tasks()
    if cfg.task not in tasks:
        raise ValueError(f"task={cfg.task!r} is not a task; choose one of {sorted(tasks)}")
    if cfg.task != "evaluate":  # evaluate validates inside its run, so a bad value is recorded
        validate_config(cfg)
    return tasks[cfg.task](cfg)
