"""The SDK's documented timing and profile lines -> device time and the layer-profile table.

Every fixture (``fixtures/``, sources in its README and first lines) is in a form a public Cambricon
source prints; no format here is invented. The study's table renders in the report's profile chart
with its MLU-only rows (TFU, POLL, PLUGIN, NOTIFY) in place.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from yolomlu.backends.mlu_legacy.profile import (
    device_seconds,
    layer_profile,
    layer_type_of_name,
    parse_hardware_times,
    parse_layer_table,
    parse_layer_times,
    read_log,
)
from yolomlu.evaluate.layer_profile import profile_frame
from yolomlu.report.plots import layer_order, profile_plots

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STUDY = [  # the porting study's rows: type, count, time (us), ratio (%)
    ("STRIDEDSLICE", 8, 247868.6, 32.71), ("ACTIVE", 131, 227525.8, 30.02), ("TFU", 72, 155041.4, 20.46),
    ("CONV", 62, 132281.3, 17.46), ("POLL", 159, 113639.6, 15.00), ("PLUGIN", 1, 8790.8, 1.16),
    ("NOTIFY", 162, 1295.1, 0.17), ("INIT_SYNC", 1, 14.4, 0.00),
]  # fmt: skip


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_study_table_keeps_its_rows_counts_times_and_ratios() -> None:
    profile, total = parse_layer_table(text("study_layer_table.log"))
    got = [(r.layer_type, r.count, r.time_us, round(r.ratio * 100, 2)) for r in profile.rows]
    assert got == STUDY
    assert total == 757817.9
    # The tool's ratios are shares of its total and overlap (POLL waits while layers run): kept as printed.
    assert sum(r.ratio for r in profile.rows) == pytest.approx(1.1698)
    assert layer_profile(text("study_layer_table.log")) == profile


def test_the_last_table_of_several_forwards_is_the_profile() -> None:
    first = text("study_layer_table.log").replace("| CONV | 62 | 132281.3 | 17.46% |", "| CONV | 62 | 1.0 | 0.01% |")
    profile, _ = parse_layer_table(first + "\nnoise between forwards\n" + text("study_layer_table.log"))
    assert {r.layer_type: r.time_us for r in profile.rows}["CONV"] == 132281.3


def test_per_layer_hardware_times_group_into_the_taxonomy() -> None:
    log = text("caffe_layer_times.log")
    assert parse_layer_times(log) == [
        ("conv1", 812.5), ("conv1_relu", 120.25), ("pool1", 60.0), ("conv2", 1500.0), ("concat1", 30.5),
    ]  # fmt: skip
    # Two forwards' worth of lines: counts and times per forward.
    profile = layer_profile(log + log, passes=2)
    rows = {r.layer_type: (r.count, r.time_us) for r in profile.rows}
    assert rows == {"CONV": (2, 2312.5), "ACTIVE": (1, 120.25), "MAXPOOL": (1, 60.0), "CONCAT": (1, 30.5)}
    assert [r.layer_type for r in profile.rows] == ["CONV", "ACTIVE", "MAXPOOL", "CONCAT"]  # slowest first
    assert sum(r.ratio for r in profile.rows) == pytest.approx(1.0)
    # Per-layer lines are not whole-forward times.
    assert parse_hardware_times(log) == []


@pytest.mark.parametrize(
    ("name", "kind"),
    [("conv1", "CONV"), ("model.2.cv1.conv", "CONV"), ("model.2.cv1.act", "ACTIVE"), ("layer12-upsample", "INTERP"),
     ("Convolution", "CONV"), ("aten::silu", "ACTIVE"), ("yolo_head_9", "OTHER")],
)  # fmt: skip
def test_a_layer_name_says_its_type_or_other(name, kind) -> None:
    assert layer_type_of_name(name) == kind


def test_whole_forward_hardware_times_in_both_documented_forms() -> None:
    (offline,) = parse_hardware_times(text("offline_hardware_time.log"))
    assert offline.ms == pytest.approx(25.3127) and offline.e2e_ms is None  # us from cnrtNotifierDuration
    assert "test_forward_offline.cpp" in offline.source
    (yolov5,) = parse_hardware_times(text("yolov5_offline_main.log"))
    assert (yolov5.ms, yolov5.e2e_ms) == (24.356, 30.123) and "main.cpp" in yolov5.source
    # device_seconds: whole-forward lines win; else the layers of a layer-by-layer forward add up.
    assert device_seconds(text("yolov5_offline_main.log") + text("caffe_layer_times.log"))[0] == pytest.approx(0.024356)
    assert device_seconds(text("caffe_layer_times.log"))[0] == pytest.approx(2523.25e-6)
    assert device_seconds("[yolomlu worker] nothing from the SDK\n") is None


def test_lines_in_other_forms_are_not_read() -> None:
    others = "\n".join([
        "Hardware Time: 12us",  # a BANG kernel tutorial's cout, not the SDK's
        "hardware time: 5 ms extra",  # trailing text: not the offline tool's line
        "HardwareTime: 3 ms",  # not printf's HardwareTime:%f(ms)
        "| conv | many | 1 | 2% |",  # not a table row
    ])  # fmt: skip
    assert parse_hardware_times(others) == [] and parse_layer_times(others) == [] and parse_layer_table(others) is None
    assert layer_profile(others) is None


def test_read_log_continues_where_it_stopped(tmp_path) -> None:
    log = tmp_path / "worker.log"
    assert read_log(log) == ("", 0)
    log.write_text("HardwareTime:1.000000(ms) E2ETime:2.000000(ms)\n")
    first, offset = read_log(log)
    with log.open("a") as fh:
        fh.write("HardwareTime:3.000000(ms) E2ETime:4.000000(ms)\n")
    second, _ = read_log(log, offset)
    assert [t.ms for t in parse_hardware_times(first)] == [1.0] and [t.ms for t in parse_hardware_times(second)] == [3.0]


def test_study_profile_renders_with_its_mlu_rows_in_the_report_chart() -> None:
    profile, _ = parse_layer_table(text("study_layer_table.log"))
    frame = profile_frame(profile)
    assert list(frame.columns) == ["layer_type", "count", "time_us", "ratio"]
    profiles = {"mlu_batch16 (study)": frame}
    order = layer_order(profiles)
    assert {"TFU", "POLL", "PLUGIN", "NOTIFY"} <= set(order)
    assert order[:3] == ["CONV", "ACTIVE", "STRIDEDSLICE"]  # the study's taxonomy order first
    figure = profile_plots(profiles)
    axes = figure.axes[0]
    labels = [t.get_text() for t in axes.get_yticklabels()]
    assert labels == order
    # Each bar's label gives the count and the printed share: 32.71 % for STRIDEDSLICE, not 0.33 %.
    texts = [t.get_text() for t in axes.texts]
    assert " 8× 33%" in texts and " 72× 20%" in texts and " 162× 0%" in texts
