"""``model.weights=models:/<name>/<version>`` (or ``@<alias>``): a job runs a registered port.

The version's files come down once into ``<paths.cache_dir>/registry/<name>-<version>/``. The job
then runs the registered config's port — its model, rewrites, quantization, backend and input size
(``tasks.choose.PORT_KEYS``) — with the registered checkpoint, on its own data and settings; keys
of the port given on the command line (``backend.threads=1``) still win. So an evaluation of the
version on the same data reproduces the registered numbers.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from yolomlu.tasks import common
from yolomlu.tasks.choose import PORT_KEYS
from yolomlu.tracking.registry import download_version, find_version

PREFIX = "models:/"


def adopt(cfg: DictConfig) -> tuple[DictConfig, dict[str, str]]:
    """``cfg`` running the registered port its ``model.weights`` names (unchanged for any other
    weights), and the tags that say which version it is."""
    uri = str(cfg.model.weights or "")
    if not uri.startswith(PREFIX):
        return cfg, {}
    settings = common.tracking_settings(cfg)
    version = find_version(settings, uri)
    folder = Path(cfg.paths.cache_dir).expanduser() / "registry" / f"{version.name}-{version.version}"
    if not (folder / "meta.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=folder.parent) as tmp:
            got = download_version(settings, version, Path(tmp))
            shutil.rmtree(folder, ignore_errors=True)
            got.rename(folder)  # whole, or not at all
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    checkpoints = sorted((folder / "checkpoint").glob("*")) if (folder / "checkpoint").is_dir() else []
    adopted = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(adopted):
        for key in PORT_KEYS:
            if key in saved:
                adopted[key] = saved[key]
        adopted.model.weights = str(checkpoints[0].resolve()) if checkpoints else None
        for key, value in _port_overrides().items():
            OmegaConf.update(adopted, key, value, merge=True)
    return adopted, {"registered_model": version.uri, "registered_run": version.run_id}


def _port_overrides() -> dict[str, object]:
    """Command-line values of keys inside the port (not group choices, not model.weights)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    chosen = {}
    for item in HydraConfig.get().overrides.task:
        key, _, value = item.lstrip("+~").partition("=")
        if "." in key and key.split(".")[0] in PORT_KEYS and key != "model.weights":
            chosen[key] = yaml.safe_load(value) if value else None
    return chosen
