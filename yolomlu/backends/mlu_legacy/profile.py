"""Parsers for the timings and profiles the legacy Cambricon SDK prints, into yolomlu's tables.

The public samples only switch the SDK's reports on and off (``CNRT_GET_HARDWARE_TIME``,
``CNML_PRINT_INFO``); what it then writes has been published in these forms, each parsed here as
documented, nothing else:

1. per layer, Cambricon Caffe ``include/caffe/layer.hpp`` (MLU layer-by-layer mode)::

       LOG(INFO) << "layer " << layer_param_.name() << " hardware time: " << event_time_ << " us";

   -> ``layer <name> hardware time: <t> us`` behind glog's prefix; t from ``cnrtNotifierDuration``.
2. per forward of an offline model, Cambricon Caffe ``tools/test_forward_offline.cpp``::

       LOG(INFO) << " hardware time: " << event_time_use;

   -> ``hardware time: <t>``, no unit printed: t comes from ``cnrtNotifierDuration``, whose value the
   same SDK labels "us" (layer.hpp above) and divides by 1000 to print ms (3.), so microseconds.
3. per forward of an offline model, CambriconECO/Pytorch_Yolov5_Inference's offline demo ``main.cpp``::

       printf("HardwareTime:%f(ms) E2ETime:%f(ms)\\n", hwtime / 1000.0, t1 - t0);

   -> device time (between two notifiers around one ``cnrtInvokeRuntimeContext``) and host
   end-to-end time, in ms.
4. the profiling tool's layer-type summary, as the porting study quotes it: rows
   ``| <TYPE> | <count> | <time us> | <ratio>% |`` under the columns ``layer type | layer count |
   layer time(us) | layer ratio``, ending with ``| total time | | <us> | |``. Its ratios are shares of
   the total and overlap (the study's add up to 117 %: POLL waits while layers run); they are kept
   as printed.

One forward (3., 2.) is one invoke of the compiled model, i.e. one batch at its batch size.
cnperf's and CNRT's profile-file formats were not found in public sources: they are not parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from yolomlu.backends.taxonomy import STUDY_TYPES, build_profile, layer_type
from yolomlu.types import LayerProfile, LayerProfileRow

__all__ = [
    "HardwareTime",
    "device_seconds",
    "layer_profile",
    "layer_type_of_name",
    "parse_hardware_times",
    "parse_layer_table",
    "parse_layer_times",
    "read_log",
]

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"  # what printf %f and C++ streams print
_LAYER_LINE = re.compile(r"\blayer (\S+) hardware time: " + _NUM + r" us\b")
_OFFLINE_LINE = re.compile(r"(?:^|\s)hardware time: " + _NUM + r"\s*$")
_YOLOV5_LINE = re.compile(r"HardwareTime:" + _NUM + r"\(ms\)(?:\s+E2ETime:" + _NUM + r"\(ms\))?")
_TABLE_ROW = re.compile(r"^\s*\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*\|\s*(\d+)\s*\|\s*" + _NUM + r"\s*\|\s*" + _NUM + r"\s*%\s*\|")
_TABLE_TOTAL = re.compile(r"^\s*\|\s*total time\s*\|\s*\|\s*" + _NUM + r"\s*\|")
# Words in a layer's own name that say its type, beyond the taxonomy's op names (YOLOv5's
# ``model.2.cv1.act``, Caffe's ``pool1``): the per-layer lines carry names, not types.
_NAME_WORDS = {"act": "ACTIVE", "pool": "MAXPOOL", "upsample": "INTERP", "slice": "STRIDEDSLICE"}


@dataclass(frozen=True)
class HardwareTime:
    """The device time of one forward (one invoke, one batch) as the SDK printed it.

    ms: device time in milliseconds; e2e_ms: the host's end-to-end time where printed (3.), else None;
    source: which documented line it came from.
    """

    ms: float
    e2e_ms: float | None
    source: str


def parse_layer_times(text: str) -> list[tuple[str, float]]:
    """(layer name, microseconds) of every ``layer <name> hardware time: <t> us`` line, in order."""
    return [(m.group(1), float(m.group(2))) for m in map(_LAYER_LINE.search, text.splitlines()) if m]


def parse_hardware_times(text: str) -> list[HardwareTime]:
    """Every whole-forward device time in ``text``, in order: ``HardwareTime:<ms>(ms) E2ETime:<ms>(ms)``
    lines and offline ``hardware time: <us>`` lines (not the per-layer ones)."""
    out = []
    for line in text.splitlines():
        m = _YOLOV5_LINE.search(line)
        if m:
            e2e = float(m.group(2)) if m.group(2) is not None else None
            out.append(HardwareTime(float(m.group(1)), e2e, "HardwareTime (CambriconECO yolov5 offline main.cpp)"))
            continue
        if _LAYER_LINE.search(line):
            continue
        m = _OFFLINE_LINE.search(line)
        if m:
            us = float(m.group(1))
            out.append(HardwareTime(us / 1000.0, None, "hardware time (Cambricon Caffe test_forward_offline.cpp)"))
    return out


def parse_layer_table(text: str) -> tuple[LayerProfile, float | None] | None:
    """The last layer-type summary table in ``text``: (its rows as a LayerProfile, its total time in us
    or None), or None when there is none. Rows keep the printed order, counts, times and ratios
    (ratio = printed percent / 100); layer types map onto the study's taxonomy."""
    tables: list[tuple[list[LayerProfileRow], float | None]] = []
    rows: list[LayerProfileRow] = []
    for line in text.splitlines():
        total = _TABLE_TOTAL.match(line)
        if total:
            if rows:
                tables.append((rows, float(total.group(1))))
            rows = []
            continue
        m = _TABLE_ROW.match(line)
        if m:
            name, count, us, percent = m.group(1), int(m.group(2)), float(m.group(3)), float(m.group(4))
            rows.append(LayerProfileRow(_table_type(name), count, us, percent / 100.0))
    if rows:  # a table cut off before its total line
        tables.append((rows, None))
    if not tables:
        return None
    rows, total = tables[-1]
    return LayerProfile(rows), total


def _table_type(name: str) -> str:
    upper = name.upper()
    return upper if upper in STUDY_TYPES else layer_type(name)


def layer_type_of_name(name: str) -> str:
    """A layer's type from its own name: the taxonomy's op name, else the last word of the name that
    names a type (names nest: ``conv1`` -> CONV, ``conv1_relu`` -> ACTIVE, ``model.2.cv1.act`` -> ACTIVE),
    else OTHER."""
    kind = layer_type(name)
    if kind != "OTHER":
        return kind
    for word in reversed(re.findall(r"[a-z]+", name.lower())):
        kind = _NAME_WORDS.get(word) or layer_type(word)
        if kind != "OTHER":
            return kind
    return "OTHER"


def layer_profile(text: str, passes: int = 1) -> LayerProfile | None:
    """The per-layer-type table of what ``text`` holds: the SDK's own summary table when it printed one
    (the last), else the per-layer hardware times of ``passes`` forwards grouped by type (counts and
    times per forward, slowest first, ratio = share of their sum); None when it holds neither."""
    if passes < 1:
        raise ValueError(f"passes={passes} must be at least 1")
    table = parse_layer_table(text)
    if table is not None:
        return table[0]
    times = parse_layer_times(text)
    if not times:
        return None
    return build_profile(times, passes, classify=layer_type_of_name)


def device_seconds(text: str) -> tuple[float, str] | None:
    """The device seconds of the forward(s) whose log is ``text`` (one batch's share of the worker log):
    the sum of its whole-forward hardware times, else the sum of its per-layer hardware times (layer by
    layer, the layers are the forward), with where the number came from; None when it holds neither."""
    whole = parse_hardware_times(text)
    if whole:
        return sum(t.ms for t in whole) / 1000.0, whole[0].source
    layers = parse_layer_times(text)
    if layers:
        return sum(us for _, us in layers) / 1e6, "sum of per-layer hardware times (Cambricon Caffe layer.hpp)"
    return None


def read_log(path: str | Path, start: int = 0) -> tuple[str, int]:
    """The text of ``path`` from byte ``start`` on, and the offset where it ends (read again from there).
    A missing file reads as empty."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return "", start
    return data.decode("utf-8", "replace"), start + len(data)
