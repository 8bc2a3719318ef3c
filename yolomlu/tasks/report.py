"""task=report: a sweep's runs -> comparison table and HTML/Markdown report, logged to the sweep's run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from yolomlu.tasks import common
from yolomlu.tracking import close_dead_runs


def report_task(cfg: DictConfig) -> dict[str, str | int]:
    """Report on ``cfg.report.parent`` (null: the newest sweep) into ``cfg.report.out_dir``; print
    the comparison table and the report's path; return the paths and the number of runs."""
    from yolomlu.report import build_report, format_table
    from yolomlu.report.build import LATEST
    from yolomlu.report.render import format_repeats, repeats_title

    settings = common.tracking_settings(cfg)
    out = common.log_stream()
    # Runs left RUNNING by dead processes are closed first: the report shows them as what they are.
    for closed in close_dead_runs(settings, finder="task=report"):
        print(f"[yolomlu] {closed}", file=out)
    result = build_report(settings, cfg.report.parent, Path(cfg.report.out_dir).expanduser(), repeats=cfg.report.repeats)
    for note in result.notes:
        print(f"[yolomlu] {note}", file=out)
    print(format_table(result.table).to_string(index=False), file=out)
    if result.repeats is not None:
        print(f"[yolomlu] {repeats_title(result.repeats)}", file=out)
        print(format_repeats(result.repeats).to_string(index=False), file=out)
    print(f"[yolomlu] report: {result.html.resolve()}", file=out)
    print(f"[yolomlu] markdown: {result.md.resolve()}", file=out)
    latest = Path(cfg.report.out_dir).expanduser() / LATEST / result.html.name
    if latest.exists():
        print(f"[yolomlu] newest report, always at: {latest}", file=out)
    return {"html": str(result.html), "md": str(result.md), "runs": len(result.table)}
