"""task=gate: does a candidate port hold up against the registered champion? For a porting team's CI.

The candidate is ``source=<run id>``, or by the rule of ``tasks.choose`` the fastest job within the
budget of the newest sweep or search. The champion is the registered version ``gate.name`` (default
``yolomlu-<model name>``) with alias ``gate.alias``. Both are measured again, one after the other in
one gate run (two child jobs), on the gate command's own data, evaluation and benchmark settings: the
same data, and fps measured in the same sweep. The gate passes (exit 0) when the candidate's
map50_95 is at most ``gate.max_map_drop`` below the champion's and its fps at most ``gate.max_fps_loss``
(a fraction) below; otherwise it exits 1 with one line per metric that failed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from omegaconf import DictConfig

from yolomlu.tasks import common, jobs
from yolomlu.tasks.choose import chosen_run, run_config, with_port
from yolomlu.tracking import start_run
from yolomlu.tracking.lookup import child_with_tag
from yolomlu.tracking.registry import download_version, find_version


class GateFailed(SystemExit):
    """The candidate lost more than the tolerances allow (exit status 1)."""


def gate_task(cfg: DictConfig) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    import yaml

    settings = common.tracking_settings(cfg)
    g = cfg.gate
    candidate, why = chosen_run(settings, cfg.source, cfg.report.parent, g.max_map_drop)
    candidate_config = run_config(settings, candidate)
    name = g.name or f"yolomlu-{candidate_config['model']['name']}"
    champion = find_version(settings, f"models:/{name}@{g.alias}")
    base = {**common.to_plain(cfg), "task": "evaluate", "source": None, "search": None}
    base["tracking"] = {**base["tracking"], "uri": settings.uri}
    out = common.log_stream()
    with tempfile.TemporaryDirectory(prefix="yolomlu-gate-") as tmp:
        folder = download_version(settings, champion, Path(tmp))
        registered = yaml.safe_load((folder / "config.yaml").read_text())
        checkpoints = sorted((folder / "checkpoint").glob("*")) if (folder / "checkpoint").is_dir() else []
        parent = start_run(
            settings,
            f"gate-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"gate": "true", "gate.champion": champion.uri, "gate.candidate": candidate, **common.environment_tags()},
        )
        status = "KILLED"
        try:
            measured = {}
            for role, config in (
                ("champion", with_port(base, registered, weights=str(checkpoints[0]) if checkpoints else None)),
                ("candidate", with_port(base, candidate_config)),
            ):
                print(f"[yolomlu] gate: measuring the {role}", file=out)
                jobs.run_job([], parent.run_id, {"gate.role": role}, config={**config, "baseline": role == "champion"})
                run = child_with_tag(settings, parent.run_id, "gate.role", role)
                if run is None or run["status"] != "FINISHED":
                    raise ValueError(f"gate: the {role}'s job failed: {run['error'] if run else 'no run recorded'}")
                measured[role] = run
            failures = compare(measured["champion"], measured["candidate"], g.max_map_drop, g.max_fps_loss)
            parent.set_tags({"gate.passed": str(not failures).lower(), "gate.failures": " | ".join(failures) or "none"})
            status = "FINISHED"
        finally:
            parent.end(status)
    c, k = measured["champion"], measured["candidate"]
    print(f"[yolomlu] gate: candidate run {candidate} ({why}) against {champion.uri} (run {champion.run_id})", file=out)
    print(f"  champion : map50_95 {_fmt(c['map50_95'])}, fps {_fmt(c['fps'], 3)}", file=out)
    print(f"  candidate: map50_95 {_fmt(k['map50_95'])}, fps {_fmt(k['fps'], 3)}", file=out)
    if failures:
        for line in failures:
            print(f"yolomlu: gate failed: {line}", file=sys.stderr)
        raise GateFailed(1)
    print("[yolomlu] gate passed", file=out)
    return {"passed": True}


def compare(champion: dict, candidate: dict, max_map_drop: float, max_fps_loss: float) -> list[str]:
    """One line per metric where ``candidate`` loses more than allowed against ``champion``."""
    lines = []
    for key in ("map50_95", "fps"):
        if candidate.get(key) is None or champion.get(key) is None:
            lines.append(f"{key}: not measured for the {'candidate' if candidate.get(key) is None else 'champion'}: nothing to compare")
    if lines:
        return lines
    drop = champion["map50_95"] - candidate["map50_95"]
    if drop > max_map_drop:
        lines.append(
            f"map50_95 {candidate['map50_95']:.4f} against the champion's {champion['map50_95']:.4f}: a drop of "
            f"{drop:.4f}, more than gate.max_map_drop={max_map_drop}"
        )
    loss = (champion["fps"] - candidate["fps"]) / champion["fps"]
    if loss > max_fps_loss:
        lines.append(
            f"fps {candidate['fps']:.3g} against the champion's {champion['fps']:.3g} (measured in the same gate run): "
            f"{100 * loss:.0f} % slower, more than gate.max_fps_loss={max_fps_loss}"
        )
    return lines


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else (f"{value:.{digits}f}" if digits == 4 else f"{value:.{digits}g}")
