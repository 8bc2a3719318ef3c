import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from yolomlu.tracking import TrackingSettings, default_tracking_uri, ensure_experiment, flatten_params, job_run


@pytest.fixture
def settings(tmp_path: Path) -> TrackingSettings:
    return TrackingSettings(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="unit")


def test_default_uri_is_absolute_sqlite(tmp_path: Path) -> None:
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_flatten_params_nests_with_dots() -> None:
    flat = flatten_params({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2], "f": "x"})
    assert flat == {"a.b": "1", "a.c.d": "null", "e": "[1, 2]", "f": "x"}


def test_experiment_created_once_with_artifacts_beside_the_database(settings: TrackingSettings, tmp_path: Path) -> None:
    first = ensure_experiment(settings)
    assert ensure_experiment(settings) == first
    experiment = MlflowClient(settings.uri).get_experiment(first)
    assert experiment.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()


def test_finished_run_has_everything_logged(settings: TrackingSettings) -> None:
    with job_run(settings, "ok-run", tags={"k": "v"}) as run:
        run.log_params({f"p{i}": i for i in range(150)})  # more than one MLflow batch
        run.log_metrics({"fps": 12.5})
        run.log_dict({"a": 1}, "config.yaml")
    got = MlflowClient(settings.uri).get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "ok-run"
    assert got.data.tags["k"] == "v"
    assert len(got.data.params) == 150 and got.data.params["p149"] == "149"
    assert got.data.metrics["fps"] == 12.5


def test_failing_block_gives_failed_run_with_its_error(settings: TrackingSettings, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with job_run(settings, "bad-run") as run:
            run.log_metrics({"partial": 1.0})
            raise RuntimeError("boom at /some/file.jpg")
    client = MlflowClient(settings.uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["error"] == "RuntimeError: boom at /some/file.jpg"
    local = client.download_artifacts(run.run_id, "error.txt", str(tmp_path))
    assert "boom at /some/file.jpg" in Path(local).read_text()


def test_child_run_points_at_its_parent(settings: TrackingSettings) -> None:
    with job_run(settings, "parent") as parent:
        with job_run(settings, "child", parent_run_id=parent.run_id) as child:
            pass
    got = MlflowClient(settings.uri).get_run(child.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.run_id


def test_offline_record_round_trips_through_import(tmp_path: Path) -> None:
    import pandas as pd

    from yolomlu.tracking import import_records

    offline = TrackingSettings(uri="unused", experiment="field", offline_dir=str(tmp_path / "records"))
    with job_run(offline, "on-the-mlu-box", tags={"device": "MLU270"}) as run:
        run.log_params({"quant.name": "int8", "bench.batch_size": 16})
        run.log_metrics({"loss": 2.0}, step=0)
        run.log_metrics({"loss": 1.5, "fps": 8.7}, step=1)
        run.log_table(pd.DataFrame({"layer_type": ["CONV"], "time_us": [1.5]}), "profile.json")
        run.log_dict({"a": 1}, "config.yaml")
    with pytest.raises(ValueError):
        with job_run(offline, "broken") as run:
            raise ValueError("no such image /x.jpg")
    # A job killed mid-way leaves only a .partial folder, which is never imported.
    (tmp_path / "records" / "dead.partial").mkdir()
    (tmp_path / "records" / "dead.partial" / "run.json").write_text("{}")

    store = TrackingSettings(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="ignored")
    ids = import_records(tmp_path / "records", store)
    client = MlflowClient(store.uri)
    runs = {client.get_run(i).info.run_name: client.get_run(i) for i in ids}
    assert set(runs) == {"on-the-mlu-box", "broken"}
    ok, bad = runs["on-the-mlu-box"], runs["broken"]
    assert client.get_experiment(ok.info.experiment_id).name == "field"
    assert ok.info.status == "FINISHED" and bad.info.status == "FAILED"
    assert ok.data.params == {"quant.name": "int8", "bench.batch_size": "16"}
    assert ok.data.metrics == {"loss": 1.5, "fps": 8.7}
    assert [m.value for m in client.get_metric_history(ok.info.run_id, "loss")] == [2.0, 1.5]
    assert ok.data.tags["device"] == "MLU270" and ok.data.tags["offline_run_id"]
    assert "no such image /x.jpg" in bad.data.tags["error"]
    artifacts = {a.path for a in client.list_artifacts(ok.info.run_id)}
    assert artifacts == {"profile.json", "config.yaml"}
    assert json.loads(ok.data.tags["mlflow.loggedArtifacts"]) == [{"path": "profile.json", "type": "table"}]
    table = pd.read_json(client.download_artifacts(ok.info.run_id, "profile.json", str(tmp_path)), orient="split")
    assert list(table["layer_type"]) == ["CONV"] and list(table["time_us"]) == [1.5]


def test_imported_sweep_keeps_its_parent_child_structure(tmp_path: Path) -> None:
    from yolomlu.tracking import import_records, start_run

    offline = TrackingSettings(uri="unused", experiment="gpu", offline_dir=str(tmp_path / "records"))
    parent = start_run(offline, "sweep-gpu", tags={"sweep": "true"})
    for name in ("a", "b"):
        with job_run(offline, name, parent_run_id=parent.run_id) as run:
            run.log_metrics({"fps": 1.0})
    parent.end("FINISHED")

    store = TrackingSettings(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="gpu")
    ids = import_records(tmp_path / "records", store)
    client = MlflowClient(store.uri)
    runs = {client.get_run(i).info.run_name: client.get_run(i) for i in ids}
    parent_id = runs["sweep-gpu"].info.run_id
    assert runs["a"].data.tags["mlflow.parentRunId"] == parent_id == runs["b"].data.tags["mlflow.parentRunId"]


def test_a_finished_run_is_found_only_with_the_same_code_and_machine(settings: TrackingSettings) -> None:
    from yolomlu.tracking import find_finished_run

    machine = {"code_hash": "c0de", "host": "box", "torch": "2.13.0+cpu"}
    with job_run(settings, "measured", tags={"config_hash": "abc", **machine}) as run:
        run.log_metrics({"fps": 10.0})
    assert find_finished_run(settings, "abc", same=machine) == run.run_id
    assert find_finished_run(settings, "abc", same=machine | {"code_hash": "edited"}) is None
    assert find_finished_run(settings, "abc", same=machine | {"host": "other-box"}) is None
    assert find_finished_run(settings, "other-config", same=machine) is None
    assert find_finished_run(settings, "abc", same={"host": "it's-quoted"}) is None  # quotes are searched, not injected
