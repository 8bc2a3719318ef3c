"""task=promote: a chosen run registered in the MLflow Model Registry with what deploying and
reproducing it takes.

The run is ``source=<run id>``, or by the rule of ``tasks.choose`` the fastest job within the budget
of the newest sweep or search (``report.parent`` names another). Its ``registered/`` artifact folder,
the version's source, holds:

- ``deploy/``: what its backend runs (the offline model: ONNX, OpenVINO IR, TorchScript / .pt2,
  .cambricon) and the quant-params file where there is one;
- ``checkpoint/``: the torch weights the job loaded (none for random weights: said in ``meta.json``);
- ``config.yaml``: the resolved config; ``metrics.json``; ``meta.json``: the run, its variant, the
  dataset fingerprint, the code commit and hash, the weights' origin.

``model.weights=models:/<name>/<version>`` (or ``@<alias>``) then evaluates or detects with that
port: the registered config's model, rewrites, quantization, backend and input size, the checkpoint
from the registry (``tasks.registered``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from yolomlu.tasks import common
from yolomlu.tasks.choose import chosen_run, run_config
from yolomlu.tracking.lookup import download_artifact, log_folder, run_metrics
from yolomlu.tracking.registry import REGISTERED_DIR, register

# Artifact folders of a job's run that hold what its backend runs.
DEPLOY_FOLDERS = ("offline_model", "quant_params")


def promote_task(cfg: DictConfig) -> dict[str, Any]:
    settings = common.tracking_settings(cfg)
    p = cfg.promote
    run_id, why = chosen_run(settings, cfg.source, cfg.report.parent, p.max_drop)
    config = run_config(settings, run_id)
    name = p.name or f"yolomlu-{config['model']['name']}"
    from yolomlu.tracking import run_tags

    tags = run_tags(settings, run_id)
    with tempfile.TemporaryDirectory(prefix="yolomlu-promote-") as tmp:
        folder = Path(tmp) / REGISTERED_DIR
        folder.mkdir()
        meta = _package(settings, run_id, config, tags, folder)
        log_folder(settings, run_id, folder, REGISTERED_DIR)
    version = register(
        settings,
        name,
        run_id,
        tags={"variant": meta["variant"], "map50_95": meta["metrics"].get("map50_95", "not measured"), "fps": meta["metrics"].get("fps", "")},
        alias=p.alias,
    )
    out = common.log_stream()
    print(f"[yolomlu] registered {version.uri} (alias {p.alias}): run {run_id}, {why}", file=out)
    for path in sorted(meta["files"]):
        print(f"  {path}", file=out)
    return {"name": name, "version": version.version, "run_id": run_id}


def _package(settings, run_id: str, config: dict, tags: dict, folder: Path) -> dict[str, Any]:
    """Fill ``folder`` with the version's files; the meta it wrote."""
    run_name, metrics = run_metrics(settings, run_id)
    deploy = folder / "deploy"
    deploy.mkdir()
    for sub in DEPLOY_FOLDERS:
        got = download_artifact(settings, run_id, sub, deploy)
        if got is not None and got.name != sub:
            got.rename(deploy / sub)
    weights = tags.get("weights", "random-init")
    if weights != "random-init":
        source = common.DEMO_WEIGHTS if weights == "demo" else Path(weights)
        if not source.is_file():
            raise FileNotFoundError(f"the run's checkpoint {weights} is not on this machine: register from where it is")
        (folder / "checkpoint").mkdir()
        shutil.copy2(source, folder / "checkpoint" / source.name)
    _write_yaml(folder / "config.yaml", config)
    meta = {
        "run_id": run_id,
        "variant": tags.get("variant", run_name),
        "dataset_fingerprint": tags.get("dataset_fingerprint"),
        "git_commit": tags.get("git_commit"),
        "code_hash": tags.get("code_hash"),
        "weights": weights,
        "accuracy": tags.get("accuracy"),
        "metrics": metrics,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    meta["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) + ["meta.json"]
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def _write_yaml(path: Path, data: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
