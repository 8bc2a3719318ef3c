"""The CNML fusion config (``config.ini``) that ``CNML_OPTIMIZE=USE_CONFIG:<file>`` points the legacy SDK at.

The porting study's "TFU config" step switched on deeper layer fusion this way. The file is INI text:
``[Section]`` headers, ``key=value`` lines, ``;`` comments; booleans are written ``1``/``0``.

Section and key names are the ones seen in public Cambricon material: the ``config.ini`` files shipped
with the MLU270 PyTorch samples (CambriconKnight/dev-env-ubuntu ``pytorch/yolov4/models/config.ini``,
``pytorch/yolov4-416/config.ini``) and REFERENCE.md section 3. CNML ignores a misspelt key without a
word, so an unknown section or key is refused here, naming the ones that exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["KNOWN_KEYS", "KNOWN_SECTIONS", "render_config_ini", "write_config_ini"]

# section -> keys, as listed (with their datatypes) in the public sample config.ini files.
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "AddrOpt": ("addrOptDisable",),
    "CacheModel": ("cacheFilePath", "cacheModelSpaceLimit"),
    "Cnlog": ("opInfoEnable",),
    "Data": ("preConvertEnable",),
    "DebugTool": ("dumpLevel", "dumpOrderNHWCDisable", "dumpPath", "printInfo"),
    "Fusion": ("backFusionEnable",),
    "GeneralOpt": ("clusterOpOptDisable", "transOptDisable"),
    "GraphOpt": ("optimizeGraphDisable",),
    "MemDeviceOpt": ("closeIntmdReuse", "openFullCoreIntmdReuse"),
    "OpOpt": ("activeHighPrecision", "highPrecision", "normalizeHighPrecision", "softmaxHighPrecision", "topkBigCiOpt"),
    "PartitionOpt": ("interpOptEnable", "partitionOpOptEnable", "partitionOverlapOpOptEnable"),
    "Tfu": (
        "deconvFinal", "enable", "fp32Int16Enable", "fuseDeconv", "ioParity", "maxBlockNum", "maxDeconvNum",
        "multiSegmentAct", "skipFirstconv", "skipSimpleCase", "skipWIsOne", "smallCiCo", "specialNetCheck",
        "splitOnN", "strideMaxOverlap", "swapWeight",
    ),
}  # fmt: skip
KNOWN_SECTIONS: tuple[str, ...] = tuple(sorted(KNOWN_KEYS))

_UNSAFE = re.compile(r"[\r\n;\[\]=]")


def _value(section: str, key: str, value: Any) -> str:
    if value is None:
        return ""  # "key=" : the SDK's default (the sample files leave dumpPath= empty)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return repr(value)
    if isinstance(value, str) and not _UNSAFE.search(value):
        return value
    raise ValueError(
        f"config.ini [{section}] {key}={value!r}: values must be booleans, numbers, null or plain strings "
        "(no newlines, ';', '[', ']' or '=')"
    )


def render_config_ini(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """``{"Tfu": {"enable": True, "maxBlockNum": 5}, ...}`` -> the text of a config.ini.

    Sections and keys keep the order given. Raises ValueError for an unknown section or key (listing the
    known ones), an empty section, or a value that cannot be written.
    """
    if not isinstance(sections, Mapping) or not sections:
        raise ValueError(f"config.ini needs at least one section, e.g. {{'Tfu': {{'enable': True}}}}; got {sections!r}")
    lines = ["; Written by yolomlu (backend=mlu_legacy) for CNML_OPTIMIZE=USE_CONFIG:<this file>."]
    for section, keys in sections.items():
        if section not in KNOWN_KEYS:
            raise ValueError(f"unknown config.ini section [{section}]; known sections: {list(KNOWN_SECTIONS)}")
        if not isinstance(keys, Mapping) or not keys:
            raise ValueError(f"config.ini section [{section}] needs key: value pairs, got {keys!r}")
        unknown = [k for k in keys if k not in KNOWN_KEYS[section]]
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in config.ini section [{section}]; known: {list(KNOWN_KEYS[section])}")
        lines += ["", f"[{section}]"]
        lines += [f"{key}={_value(section, key, value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def write_config_ini(sections: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Write :func:`render_config_ini` ``(sections)`` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(render_config_ini(sections), encoding="utf-8")
    return path
