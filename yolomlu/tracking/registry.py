"""The MLflow Model Registry: a chosen run's files registered as a model version, and found again.

A version's source is a folder of the run's own artifacts (``registered/``): the deployable file, the
checkpoint, the resolved config, the metrics and where they came from. (MLflow 3.17's
``mlflow.register_model`` on a plain artifact path fails and leaves an empty registered model behind;
``MlflowClient.create_model_version(name, source, run_id)`` works, so that is what is called.)
``models:/<name>/<version>`` and ``models:/<name>@<alias>`` name a version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolomlu.tracking.query import _no_progress_bar
from yolomlu.tracking.store import TrackingSettings, _client

REGISTERED_DIR = "registered"  # the artifact folder a version's source points at
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_\-]+))$")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _version(model_version: Any) -> ModelVersion:
    return ModelVersion(
        name=model_version.name,
        version=str(model_version.version),
        run_id=model_version.run_id,
        source=model_version.source,
        aliases=tuple(getattr(model_version, "aliases", []) or []),
        tags=dict(model_version.tags or {}),
    )


def register(settings: TrackingSettings, name: str, run_id: str, tags: dict[str, Any], alias: str | None = None) -> ModelVersion:
    """A new version of registered model ``name`` (created if missing) whose source is the run's
    ``registered/`` artifact folder; ``alias`` (e.g. "champion") is moved to it."""
    from mlflow.exceptions import MlflowException

    client = _client(settings.uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="YOLOv5 ports registered by yolomlu task=promote")
    source = f"{client.get_run(run_id).info.artifact_uri}/{REGISTERED_DIR}"
    version = client.create_model_version(name, source, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return _version(client.get_model_version(name, version.version))


def find_version(settings: TrackingSettings, uri: str) -> ModelVersion:
    """The version ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` names; a ValueError
    naming what the registry holds when it names none."""
    from mlflow.exceptions import MlflowException

    match = _URI.match(uri)
    if not match:
        raise ValueError(f"{uri!r} is not a registered model URI: write models:/<name>/<version> or models:/<name>@<alias>")
    client = _client(settings.uri)
    name = match["name"]
    try:
        if match["version"]:
            found = client.get_model_version(name, match["version"])
        else:
            found = client.get_model_version_by_alias(name, match["alias"])
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise ValueError(f"{uri}: no such version in the registry of {settings.uri} (registered models: {known})") from None
    return _version(found)


def download_version(settings: TrackingSettings, version: ModelVersion, dst: Path) -> Path:
    """The version's ``registered/`` folder, downloaded into ``dst``; its local path."""
    client = _client(settings.uri)
    with _no_progress_bar():
        return Path(client.download_artifacts(version.run_id, REGISTERED_DIR, str(dst)))
