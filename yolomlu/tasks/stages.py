"""What a job stage produced, and the one place that records it.

Each stage of a job (model, data, transforms, quantization, port, parity, accuracy, timing,
fallback) returns a :class:`StageResult` instead of writing to the run itself; :func:`record` logs it
the moment the stage finishes. So a job that fails late keeps everything measured before the
failure, and every stage's output takes the same road into the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageResult:
    """Metrics, tags and files of one stage; every field is optional.

    tables: artifact file -> pandas DataFrame (MLflow tables); texts: artifact file -> text;
    dicts: artifact file -> mapping (JSON/YAML); figures: artifact file -> matplotlib Figure;
    artifacts: (local file, artifact folder or None) pairs to copy into the run.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    dicts: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)


def record(run, result: StageResult, metrics: dict[str, float]) -> None:
    """Log ``result`` to ``run`` now, and add its metrics to the job's ``metrics`` (a later stage's
    value of the same key replaces an earlier one, in the store as in ``metrics``)."""
    if result.tags:
        run.set_tags(result.tags)
    for name, table in result.tables.items():
        run.log_table(table, name)
    for name, text in result.texts.items():
        run.log_text(text, name)
    for name, mapping in result.dicts.items():
        run.log_dict(mapping, name)
    for name, figure in result.figures.items():
        run.log_figure(figure, name)
    for path, folder in result.artifacts:
        run.log_artifact(path, folder)
    if result.metrics:
        run.log_metrics(result.metrics)
        metrics.update(result.metrics)
