"""Every file in conf/ and experiments/ composes, and its values validate."""

from pathlib import Path

import pytest

from yolomlu.backends import BackendError
from yolomlu.cli import CONFIG_DIR
from yolomlu.tasks.common import validate_config

ROOT = CONFIG_DIR.parent
GROUP_FILES = sorted(
    (p.parent.name, p.stem) for p in CONFIG_DIR.glob("*/*.yaml") if p.parent.name != "experiments"
)
PRESETS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (ROOT / "experiments" / "sweep").glob("*.yaml"))
# Groups whose options need a value only the user can give.
REQUIRED = {("data", "coco"): ["data.root=/nonexistent/coco"]}


@pytest.mark.parametrize(("group", "option"), GROUP_FILES, ids=[f"{g}={o}" for g, o in GROUP_FILES])
def test_every_group_option_composes_and_validates(compose_cfg, group: str, option: str) -> None:
    cfg = compose_cfg([f"{group}={option}", *REQUIRED.get((group, option), [])], tiny=False)
    validate_config(cfg)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(compose_cfg, preset: str) -> None:
    text = (ROOT / "experiments" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_"), "presets override the whole config"
    assert "python -m yolomlu" in text, "each preset names the command that runs it"
    cfg = compose_cfg([f"experiments={preset}"], tiny=False)
    validate_config(cfg)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_preset_composes_and_each_of_its_jobs_validates(compose_cfg, sweep: str) -> None:
    from hydra import compose, initialize_config_dir

    text = (ROOT / "experiments" / "sweep" / f"{sweep}.yaml").read_text()
    assert text.startswith("# @package _global_") and "python -m yolomlu" in text
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        full = compose("config", overrides=[f"experiments/sweep={sweep}"], return_hydra_config=True)
    assert full.hydra.mode.name == "MULTIRUN"
    params = {key: str(values).split(",") for key, values in full.hydra.sweeper.params.items()}
    if "experiments" in params:
        assert set(params["experiments"]) <= set(PRESETS)
    # Every value of every swept key, each in turn (not the whole grid), composes and validates.
    for key, values in params.items():
        for value in values:
            validate_config(compose_cfg([f"experiments/sweep={sweep}", f"{key}={value}"], tiny=False))


def test_experiments_folder_is_the_experiments_group() -> None:
    assert (CONFIG_DIR / "experiments").resolve() == (ROOT / "experiments").resolve()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task=fly", r"task='fly' is not valid"),
        ("img_size=100", r"img_size=100 must be a positive multiple of 32"),
        ("backend.device=tpu", r"backend.device='tpu'"),
        ("eval.conf_thres=2", r"eval.conf_thres=2.0 must be a number between 0 and 1"),
        ("bench.iters=0", r"bench.iters=0 must be a positive integer"),
    ],
)
def test_bad_values_are_named(compose_cfg, override: str, message: str) -> None:
    with pytest.raises((ValueError, BackendError), match=message):
        validate_config(compose_cfg([override]))
