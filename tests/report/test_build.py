"""The report end to end on a real SQLite MLflow store: runs in, HTML and Markdown out, logged to the sweep."""

import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from yolomlu.report import build_report
from yolomlu.report.build import PROFILE_ARTIFACT, load_tables
from yolomlu.report.render import REUSED_NOTE
from yolomlu.tracking import TrackingSettings, fetch_runs, job_run, latest_sweep, load_table_artifact


def test_fetch_runs_gives_the_frame_mlflow_search_runs_gives(sweep_store, read_runs):
    ours = fetch_runs(sweep_store.settings).sort_values("run_id").reset_index(drop=True)
    theirs = read_runs(sweep_store.db).sort_values("run_id").reset_index(drop=True)
    assert sorted(ours.columns) == sorted(theirs.columns)
    pd.testing.assert_frame_equal(ours[theirs.columns], theirs, check_dtype=False)


def test_fetch_runs_of_a_parent_and_the_latest_sweep(sweep_store):
    assert latest_sweep(sweep_store.settings) == sweep_store.parent
    children = fetch_runs(sweep_store.settings, parent_run_id=sweep_store.parent)
    assert set(children["run_id"]) == set(sweep_store.runs.values())
    with pytest.raises(ValueError, match="no run 'nope'"):
        fetch_runs(sweep_store.settings, parent_run_id="nope")
    with pytest.raises(ValueError, match=r"no experiment 'other'.*'yolomlu'"):
        fetch_runs(sweep_store.settings, experiment="other")


def test_a_missing_store_is_refused_not_created(tmp_path: Path):
    settings = TrackingSettings(uri=f"sqlite:///{tmp_path / 'absent.db'}", experiment="yolomlu")
    with pytest.raises(FileNotFoundError, match="no MLflow store at"):
        latest_sweep(settings)
    assert not (tmp_path / "absent.db").exists()


def test_table_artifacts_round_trip(sweep_store):
    run_id = sweep_store.runs["focus_conv"]
    frame = load_table_artifact(sweep_store.settings, run_id, "per_class_ap.json")
    pd.testing.assert_frame_equal(frame, sweep_store.tables[run_id]["per_class_ap.json"])
    assert load_table_artifact(sweep_store.settings, sweep_store.runs["focus_conv"], "no/such.json") is None


def test_reused_runs_take_their_tables_from_the_source_run(sweep_store, tmp_path: Path):
    table = build_report(sweep_store.settings, sweep_store.parent, tmp_path / "r").table
    profiles = load_tables(sweep_store.settings, table, PROFILE_ARTIFACT)
    assert list(profiles) == ["cpu_reference", "focus_conv", "fused†"]  # no table for the failed run
    source = MlflowClient(sweep_store.settings.uri).get_run(sweep_store.runs["fused"]).data.tags["reused_from"]
    pd.testing.assert_frame_equal(profiles["fused†"], sweep_store.tables[source][PROFILE_ARTIFACT])


def test_build_report_writes_html_and_markdown_and_logs_them_to_the_sweep(sweep_store, tmp_path: Path):
    result = build_report(sweep_store.settings, None, tmp_path / "report")  # None: the newest sweep
    assert result.parent_run_id == sweep_store.parent
    assert list(result.table["variant"]) == ["cpu_reference", "focus_conv", "fused", "broken"]

    html = result.html.read_text()
    assert html.count('<img src="data:image/png;base64,') == 3  # Pareto, per-class AP, layer profiles
    assert "fused†" in html and REUSED_NOTE.format(csv="comparison.csv") in html
    assert re.search(r'<tr class="failed">.*MemoryError: out of memory at batch 64', html)
    assert "+0.0000" in html and "-0.0002" in html and "1.10×" in html and "<td>baseline</td>" in html

    md = result.md.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) == 3 and all((result.md.parent / name).is_file() for name in images)
    assert "| fused† |" in md and "MemoryError: out of memory at batch 64" in md

    logged = {a.path for a in MlflowClient(sweep_store.settings.uri).list_artifacts(sweep_store.parent, "report")}
    assert {"report/report.html", "report/report.md", "report/comparison.csv"} <= logged
    assert {f"report/{name}" for name in images} <= logged


def test_an_older_sweep_by_its_parent_id(sweep_store, tmp_path: Path):
    result = build_report(sweep_store.settings, sweep_store.old_parent, tmp_path / "old")
    assert list(result.table["variant"]) == ["fused"] and not result.table["reused"].any()
    assert any("no baseline run" in n for n in result.notes)


def test_without_any_sweep_all_runs_of_the_experiment_are_compared(tmp_path: Path):
    settings = TrackingSettings(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="solo")
    for name, fps in (("a", 10.0), ("b", 20.0)):
        with job_run(settings, name, tags={"baseline": str(name == "a").lower()}) as run:
            run.log_metrics({"fps": fps, "latency_ms_p50": 100 / fps})
    result = build_report(settings, None, tmp_path / "report")
    assert result.parent_run_id is None
    assert list(result.table["speedup_fps"]) == [1.0, 2.0]
    assert any("all runs of experiment 'solo'" in n for n in result.notes)
    assert result.html.is_file() and result.md.is_file()


def _report_group() -> str:
    """``report=default`` once conf/config.yaml lists the group in its defaults, else added with ``+``."""
    from omegaconf import OmegaConf

    from yolomlu.cli import CONFIG_DIR

    defaults = OmegaConf.load(CONFIG_DIR / "config.yaml").get("defaults", [])
    listed = any(isinstance(d, dict) and "report" in d or d == "report" for d in OmegaConf.to_container(defaults))
    return "report=default" if listed else "+report=default"


def test_report_task_prints_the_table_and_the_path(sweep_store, compose_cfg, capsys, tmp_path: Path):
    from yolomlu.tasks.report import report_task

    out_dir = tmp_path / "task-report"
    overrides = ["task=report", _report_group(), f"report.out_dir={out_dir}", f"tracking.uri={sweep_store.settings.uri}"]
    cfg = compose_cfg(overrides)
    result = report_task(cfg)
    printed = capsys.readouterr().out
    folder = out_dir / f"sweep-new-{sweep_store.parent[:8]}"  # the sweep's own folder: reports never overwrite
    assert result == {"html": str(folder / "report.html"), "md": str(folder / "report.md"), "runs": 4}
    assert re.search(r"cpu_reference\s+FINISHED", printed) and "fused†" in printed
    assert f"report: {folder / 'report.html'}" in printed
    assert f"newest report, always at: {out_dir / 'latest' / 'report.html'}" in printed


def test_repeated_sweeps_show_how_each_speed_up_spreads(tmp_path: Path):
    from yolomlu.report.build import REPEAT_TITLE
    from yolomlu.report.render import figure_filename
    from yolomlu.tracking import start_run

    settings = TrackingSettings(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="repeat")

    def sweep(preset, fused_fps, reuse_fused=False, code="c0de", reuse_all=False, overrides="", status="FINISHED") -> str:
        tags = {"sweep": "true", "sweep_preset": preset, "sweep_overrides": overrides, "code_hash": code, "host": "box"}
        parent = start_run(settings, f"sweep-{preset}", tags=tags)
        for variant, fps in (("ref", 50.0), ("fused", fused_fps)):
            tags = {"variant": variant, "baseline": str(variant == "ref").lower()}
            if reuse_fused and variant == "fused":
                tags["reused_from"] = "earlier"
            with job_run(settings, variant, tags=tags, parent_run_id=parent.run_id) as run:
                run.log_metrics({"fps": fps, "latency_ms_p50": 1000 / fps})
        parent.set_tags({"jobs": 2, "jobs_reused": 2 if reuse_all else int(reuse_fused)})
        parent.end(status)
        return parent.run_id

    sweep("study", 70.0, code="older")  # measured by other code: not a repeat either
    first = sweep("study", 60.0)
    sweep("other", 500.0)  # another preset: not a repeat of "study"
    sweep("study", 75.0, reuse_fused=True)  # a copied result is no second sample
    sweep("study", 77.0, reuse_all=True)  # a sweep that measured nothing is not a run at all
    sweep("study", 65.0, overrides="bench.iters=5")  # it measured something else
    sweep("study", 33.0, status="KILLED")  # a sweep that did not finish is no repeat
    last = sweep("study", 90.0, overrides="sweep.rerun=true")  # bookkeeping: the same measurement
    sweep("study", 10.0)  # newer than the sweep reported on: left out

    result = build_report(settings, last, tmp_path / "r", repeats=3)
    repeats = result.repeats.set_index("variant")
    assert list(repeats.columns[:3]) == ["sweep 1", "sweep 2", "sweep 3"]
    assert repeats.loc["fused", "sweep 1"] == pytest.approx(60 / 50)
    assert pd.isna(repeats.loc["fused", "sweep 2"])
    assert repeats.loc["fused", "sweep 3"] == pytest.approx(90 / 50)
    assert repeats.loc["fused", "spread"] == pytest.approx((1.8 - 1.2) / 1.5)
    assert repeats.loc["ref", "median"] == 1.0
    assert any(first[:8] in n for n in result.notes)
    md = result.md.read_text()
    assert "## Repeatability: speedup_fps in 3 runs of this sweep" in md and "1.80×" in md and "40 %" in md
    assert (result.html.parent / figure_filename(REPEAT_TITLE)).is_file()

    asked_too_many = build_report(settings, last, tmp_path / "r5", repeats=5)
    assert any("holds 3 runs of this sweep" in n for n in asked_too_many.notes)
    with pytest.raises(ValueError, match="report.repeats=0"):
        build_report(settings, last, tmp_path / "r0", repeats=0)


def test_each_sweep_keeps_its_own_report_and_latest_points_at_the_newest(sweep_store, tmp_path: Path):
    first = build_report(sweep_store.settings, sweep_store.parent, tmp_path / "reports")
    second = build_report(sweep_store.settings, sweep_store.old_parent, tmp_path / "reports")
    assert first.html.parent != second.html.parent
    assert first.html.is_file() and second.html.is_file()  # the first report was not overwritten
    assert first.html.parent.name.endswith(sweep_store.parent[:8])
    assert (tmp_path / "reports" / "latest" / "report.html").resolve() == second.html.resolve()
