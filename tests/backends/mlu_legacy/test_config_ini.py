"""The TFU / CNML config.ini written for CNML_OPTIMIZE=USE_CONFIG:<file>.

Section and key names are those of the public MLU270 samples' config.ini (CambriconKnight/dev-env-ubuntu,
pytorch/yolov4/models/config.ini and pytorch/yolov4-416/config.ini).
"""

from __future__ import annotations

import pytest

from yolomlu.backends.mlu_legacy.config_ini import KNOWN_SECTIONS, render_config_ini, write_config_ini


def test_sections_keys_and_values_are_written_in_order(tmp_path) -> None:
    text = render_config_ini(
        {"Tfu": {"enable": True, "skipSimpleCase": False, "maxBlockNum": 5}, "OpOpt": {"highPrecision": 0}, "DebugTool": {"dumpPath": None}}
    )
    assert text.splitlines()[1:] == [
        "", "[Tfu]", "enable=1", "skipSimpleCase=0", "maxBlockNum=5",
        "", "[OpOpt]", "highPrecision=0",
        "", "[DebugTool]", "dumpPath=",
    ]  # fmt: skip
    assert text.startswith(";")  # an INI comment saying who wrote it
    path = write_config_ini({"Fusion": {"backFusionEnable": True}}, tmp_path / "config.ini")
    assert path.read_text().endswith("[Fusion]\nbackFusionEnable=1\n")


def test_sections_of_reference_section_3_are_known() -> None:
    assert {"Tfu", "Fusion", "GraphOpt", "OpOpt", "MemDeviceOpt", "DebugTool"} <= set(KNOWN_SECTIONS)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"TFU": {"enable": True}}, r"unknown config.ini section \[TFU\]; known sections: \['AddrOpt'"),
        ({"Tfu": {"maxblocknum": 5}}, r"unknown key\(s\) \['maxblocknum'\] in config.ini section \[Tfu\]; known: .*'maxBlockNum'"),
        ({"Tfu": {}}, r"section \[Tfu\] needs key: value pairs"),
        ({}, "needs at least one section"),
        ({"DebugTool": {"dumpPath": "a\nb"}}, r"dumpPath='a\\nb': values must be"),
        ({"Tfu": {"maxBlockNum": [1, 2]}}, r"maxBlockNum=\[1, 2\]"),
    ],
)
def test_bad_sections_keys_and_values_are_named(sections, message) -> None:
    with pytest.raises(ValueError, match=message):
        render_config_ini(sections)
