"""QConfig / QuantSettings: Cambricon's defaults, validation messages, and the quant config group files."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from yolomlu.cli import CONFIG_DIR
from yolomlu.quant import QConfig, QuantSettings, qrange

QUANT_FILES = sorted(p.stem for p in (CONFIG_DIR / "quant").glob("*.yaml"))


def test_defaults_are_cambricons() -> None:
    q = QConfig()
    assert (q.iteration, q.use_avg, q.data_scale, q.mean, q.std, q.firstconv, q.per_channel) == (
        1, False, 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), True, False,
    )  # fmt: skip
    assert (q.dtype, q.scheme, q.mixed_layer, q.qmax) == ("int8", "mlu270", (), 127)
    assert qrange("int8") == (-128, 127) and qrange("int16") == (-32768, 32767)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"use_avgg": True}, r"unknown qconfig key\(s\) \['use_avgg'\]; known: \[.*'use_avg'"),
        ({"iteration": 0}, r"iteration=0 must be an integer >= 1"),
        ({"iteration": True}, r"iteration=True must be an integer >= 1"),
        ({"use_avg": "yes"}, r"use_avg='yes' must be true or false"),
        ({"data_scale": 0}, r"data_scale=0 must be a positive finite number"),
        ({"dtype": "int4"}, r"dtype='int4' is not valid; choose one of \['int8', 'int16'\]"),
        ({"scheme": "mlu220"}, r"scheme='mlu220' is not valid; choose one of \['mlu270', 'mlu370', 'onnxruntime', 'openvino'\]"),
        ({"mean": [0.5, 0.5]}, r"mean=\[0.5, 0.5\] must be a list of 1 or 3 or 4 numbers in \[0, 1\]"),
        ({"mean": [0, 0, 128]}, r"mean=\[0, 0, 128\] must be a list .*\(fractions of 255"),
        ({"std": [1, 0, 1]}, r"std=\[1, 0, 1\] must be a list .* in \(0, 1\]"),
        ({"mean": [0.5], "std": [1, 1, 1]}, r"mean=\[0.5\] and std=\[1.0, 1.0, 1.0\] must have one value per channel"),
        ({"mixed_layer": "detect"}, r"mixed_layer='detect' must be a list of layer names or patterns"),
    ],
)
def test_bad_qconfig_values_are_named(mapping, message) -> None:
    with pytest.raises(ValueError, match=message):
        QConfig.from_mapping(mapping)


def test_quant_settings_from_a_plain_group() -> None:
    s = QuantSettings.from_mapping(
        {"name": "int8", "enabled": True, "firstconv": False, "iteration": 2, "calib": {"images": 40, "batch_size": 8},
         "sensitivity": {"images": 1}, "fallback_topk": 3, "params_file": None, "mixed_layer": ["detect"]}
    )  # fmt: skip
    assert s.qconfig == QConfig(firstconv=False, iteration=2, mixed_layer=("detect",))
    assert (s.calib_images, s.calib_batch_size, s.sensitivity_images, s.fallback_topk) == (40, 8, 1, 3)
    assert s.observed_images == 16  # iteration 2 x batch 8, of the 40 offered


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"name": "int8", "enabled": True, "bits": 8}, r"unknown quant key\(s\) \['bits'\]"),
        ({"name": "int8", "enabled": True, "calib": {"image": 4}}, r"unknown quant.calib key\(s\) \['image'\]; known: \['batch_size', 'data', 'images', 'method', 'root'\]"),
        ({"name": "int8", "enabled": True, "dtype": "fp8"}, r"quant.dtype='fp8' is not valid; choose one of"),
        ({"name": "none", "enabled": True}, r"quant.enabled=True contradicts quant.name='none'"),
        ({"name": "int8", "enabled": False}, r"quant.enabled=False contradicts quant.name='int8'"),
        ({"name": "int8", "enabled": True, "calib": {"batch_size": 0}}, r"quant.calib.batch_size=0 must be an integer >= 1"),
        ({"name": "int8", "enabled": True, "fallback_topk": 2, "sensitivity": {"images": 0}}, r"fallback_topk=2 .* set quant.sensitivity.images > 0"),
        ({"name": "int8", "enabled": True, "params_file": ""}, r"quant.params_file='' must be a file path or null"),
    ],
)
def test_bad_quant_settings_are_named(mapping, message) -> None:
    with pytest.raises(ValueError, match=message):
        QuantSettings.from_mapping(mapping)


@pytest.mark.parametrize("option", QUANT_FILES)
def test_every_quant_file_has_a_name_and_composes_into_valid_settings(compose_cfg, option) -> None:
    assert "\nname:" in "\n" + (CONFIG_DIR / "quant" / f"{option}.yaml").read_text()
    cfg = compose_cfg([f"quant={option}"], tiny=False)
    settings = QuantSettings.from_mapping(OmegaConf.to_container(cfg.quant, resolve=True))
    assert settings.name == option and settings.enabled == (option != "none")


def test_the_presets_mean_what_they_say(compose_cfg) -> None:
    def qconfig(*overrides: str) -> QConfig:
        cfg = compose_cfg(list(overrides), tiny=False)
        return QuantSettings.from_mapping(OmegaConf.to_container(cfg.quant, resolve=True)).qconfig

    assert QuantSettings.from_mapping(OmegaConf.to_container(compose_cfg([], tiny=False).quant)).enabled is False
    assert qconfig("quant=none") == QConfig()  # none.yaml lists Cambricon's defaults
    study = QConfig(use_avg=False, data_scale=1.0, firstconv=False, per_channel=False)
    assert qconfig("quant=int8") == study
    assert qconfig("quant=int8_per_channel") == QConfig(firstconv=False, per_channel=True)
    assert qconfig("quant=int16") == QConfig(firstconv=False, dtype="int16")
    assert qconfig("quant=int8_mixed") == QConfig(firstconv=False, mixed_layer=("detect",))
    # overrides compose the same way on every option
    assert qconfig("quant=int16", "quant.use_avg=true", "quant.iteration=4").iteration == 4
    assert qconfig("quant=none", "quant.scheme=mlu370").scheme == "mlu370"
