"""task=search, task=promote, task=gate on the demo model, for real: an Optuna study whose trials are
ordinary jobs, killed (kill -9) part-way and resumed; the winner registered in the MLflow Model
Registry and evaluated again from there; the gate passing the champion and failing a worse port."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from yolomlu.tasks.gate import compare
from yolomlu.tasks.search import parse_space

# The demo model small enough for a trial to take seconds; accuracy on the same 4 images in every trial.
SMALL = [
    "model=demo",
    "img_size=96",
    "data.n_images=4",
    "eval.parity_images=1",
    "bench.warmup=1",
    "bench.iters=4",
    "bench.rounds=2",
    "bench.profile=false",
    "quant.calib.images=4",
    "quant.calib.batch_size=4",
]


def _local(tmp_path: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "paths.cache_dir=cache", "paths.output_dir=outputs"]


def _finished_children(db: Path) -> int:
    """FINISHED search trials' runs, read straight from the store (while it is busy: 0)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                "where r.status = 'FINISHED' and t.key = 'search.trial'"
            ).fetchone()
        return int(rows[0])
    except sqlite3.Error:
        return 0


def test_space_and_comparison_rules() -> None:
    space = parse_space({"engine": {"a": ["experiments=fused"], "b": ["experiments=half"]}, "quant.per_channel": [False, True]})
    assert space.overrides({"engine": "b", "quant.per_channel": "true"}) == ["experiments=half", "quant.per_channel=true"]
    assert space.label({"engine": "b", "quant.per_channel": "true"}) == "b per_channel=true"  # the variant's name
    assert space.label({"engine": "a", "quant.per_channel": "false"}) == "a"  # a key's first value is left out
    with pytest.raises(ValueError, match=r"search.space.engine.a must be a list of overrides"):
        parse_space({"engine": {"a": ["fused"]}})
    with pytest.raises(ValueError, match="search.space is empty"):
        parse_space({})
    champion = {"map50_95": 0.70, "fps": 100.0}
    assert compare(champion, {"map50_95": 0.695, "fps": 95.0}, 0.01, 0.10) == []
    (line,) = compare(champion, {"map50_95": 0.68, "fps": 95.0}, 0.01, 0.10)
    assert line.startswith("map50_95 0.6800 against the champion's 0.7000: a drop of 0.0200")
    (line,) = compare(champion, {"map50_95": 0.70, "fps": 80.0}, 0.01, 0.10)
    assert line.startswith("fps 80 against the champion's 100") and "20 % slower" in line
    assert compare(champion, {"map50_95": None, "fps": 80.0}, 0.01, 0.10) == ["map50_95: not measured for the candidate: nothing to compare"]


def test_search_killed_resumes_then_promote_reproduces_and_gate_judges(run_cli, read_runs, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    command = ["task=search", "search=demo", "search.n_trials=6", *SMALL, *_local(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        [sys.executable, "-m", "yolomlu", *command], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 400
    while _finished_children(db) < 3 and first.poll() is None and time.time() < deadline:
        time.sleep(1)
    assert first.poll() is None, f"the search ended before it could be killed:\n{(tmp_path / 'first.log').read_text()}"
    os.killpg(first.pid, signal.SIGKILL)  # the search, its running trial and that trial's timing process
    first.wait()
    log.close()
    killed_at = _finished_children(db)
    assert 3 <= killed_at < 6

    proc = run_cli(*command)  # the same command again: the same study and parent, up to 6 trials
    runs = read_runs(db)
    parents = runs[runs["tags.search"] == "true"]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    parent = parents.iloc[0]["run_id"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent]
    finished = children[children["status"] == "FINISHED"]
    assert len(finished) == 6 and parents.iloc[0]["tags.search.trials_run"] == "6"
    assert set(children["status"]) <= {"FINISHED", "KILLED"}  # the trial the kill stopped, closed as KILLED
    assert finished["metrics.map50_95"].notna().all() and finished["metrics.fps"].notna().all()
    assert finished["tags.search.trial"].nunique() == 6
    assert (finished["tags.baseline"] == "true").sum() == 1  # trial 0 alone, though later trials may use its preset
    assert finished.loc[finished["tags.baseline"] == "true", "tags.variant"].item() == "torch_eager"
    study_files = list((tmp_path / "cache" / "search").glob("*.db"))
    assert len(study_files) == 1  # one study, resumed
    report = next((tmp_path / "outputs" / "report").rglob("report.md")).read_text()
    assert "Search trials" in report and "Pareto" in report
    assert "feasible Pareto front" in proc.stderr + proc.stdout

    # Promote the rule's choice: every file a deployment and a reproduction need, registered.
    proc = run_cli("task=promote", *_local(tmp_path))
    out = proc.stdout + proc.stderr
    assert "registered models:/yolomlu-demo/1" in out
    for path in ("checkpoint/demo_yolov5n_v5.pt", "config.yaml", "metrics.json", "meta.json"):
        assert f"  {path}" in out.splitlines() or any(line.strip().startswith(path) for line in out.splitlines()), path
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    version = client.get_model_version("yolomlu-demo", "1")
    registered_map = float(version.tags["map50_95"])
    files = [a.path for a in client.list_artifacts(version.run_id, "registered")]
    assert {"registered/deploy", "registered/config.yaml", "registered/metrics.json", "registered/meta.json", "registered/checkpoint"} <= set(files)
    meta = json.loads(Path(client.download_artifacts(version.run_id, "registered/meta.json", str(tmp_path))).read_text())
    assert meta["run_id"] == version.run_id and meta["dataset_fingerprint"] and meta["code_hash"]
    assert meta["metrics"]["map50_95"] == pytest.approx(registered_map)

    # Evaluating the registered version reproduces its map50_95 to the fourth decimal.
    run_cli("model.weights=models:/yolomlu-demo/1", *SMALL[2:], *_local(tmp_path))
    again = read_runs(db).sort_values("start_time").iloc[-1]
    assert round(again["metrics.map50_95"], 4) == round(registered_map, 4)

    # The gate on accuracy alone (max_fps_loss=1: no fps loss can exceed it, so no timing decides the verdict):
    # the champion against itself passes; a port worse than the tolerance fails, naming the metric.
    proc = run_cli("task=gate", f"source={version.run_id}", *SMALL[2:], *_local(tmp_path), "gate.max_fps_loss=1")
    assert "gate passed" in proc.stdout + proc.stderr
    run_cli("experiments=ort_int8", *SMALL, *_local(tmp_path))
    worse = read_runs(db).sort_values("start_time").iloc[-1]
    drop = registered_map - worse["metrics.map50_95"]
    assert drop > 0.002, f"the int8 port should lose accuracy here, lost {drop}"
    proc = run_cli("task=gate", f"source={worse['run_id']}", *SMALL[2:], *_local(tmp_path), "gate.max_map_drop=0.002", "gate.max_fps_loss=1", check=False)
    assert proc.returncode == 1
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("yolomlu: gate failed:")]
    assert line.startswith("yolomlu: gate failed: map50_95 ") and "more than gate.max_map_drop=0.002" in line
