"""The MLU deployment sweep in the report: a throughput table and chart over core_number x batch size,
and times taken on the torch_mlu stand-in kept out of every speed comparison."""

from __future__ import annotations

import math

import pandas as pd

from yolomlu.report.build import PARETO_TITLE, build_figures
from yolomlu.report.compare import comparison_table
from yolomlu.report.deploy import deploy_frame, deploy_plot, deploy_title, throughput_table
from yolomlu.report.render import STANDIN_MARK, footnotes, format_table

STANDIN = "standin (CPU): the torch_mlu stand-in ran on this machine's CPU; not MLU time"


def _run(run_id, mode, cores, batch, fps, start, device=STANDIN, device_fps=None, baseline="false", backend="mlu_legacy"):
    row = {
        "run_id": run_id, "status": "FINISHED", "start_time": pd.Timestamp(1_700_000_000 + start, unit="s", tz="UTC"),
        "tags.variant": f"{mode} c{cores} bs{batch}", "tags.baseline": baseline, "tags.timing.device": device,
        "params.backend.name": backend, "params.backend.mode": mode, "params.backend.core_number": str(cores),
        "params.bench.batch_size": str(batch), "metrics.fps": fps, "metrics.latency_ms_p50": 1000 * batch / fps,
        "metrics.map50_95": 0.68,
    }  # fmt: skip
    if device_fps is not None:
        row["metrics.device_fps"] = device_fps
    return row


def _sweep(device=STANDIN, device_fps=None) -> pd.DataFrame:
    rows, start = [], 0
    for mode in ("fused", "offline"):
        for cores in (1, 4):
            for batch in (1, 16):
                start += 1
                fps = 10.0 * batch * (1.5 if mode == "offline" else 1.0)
                rows.append(_run(f"{mode}{cores}{batch}", mode, cores, batch, fps, start, device,
                                 device_fps=None if device_fps is None else fps * device_fps,
                                 baseline="true" if start == 1 else "false"))  # fmt: skip
    return pd.DataFrame(rows)


def test_standin_times_are_shown_but_never_compared() -> None:
    runs = _sweep()
    table = comparison_table(runs)
    assert table["baseline"].iloc[0] and table["fps"].notna().all()
    assert table[["speedup_fps", "speedup_latency", "speedup_device_fps"]].isna().all().all()  # no speed-ups at all
    assert any(n.startswith("STAND-IN TIMES: 8 runs") for n in table.attrs["notes"])
    shown = format_table(table)
    assert shown["variant"].str.endswith(STANDIN_MARK).all() and "fps ×" not in shown.columns
    assert any("torch_mlu stand-in" in n and "not the device's" in n for n in footnotes(table))
    # The Pareto plot (accuracy against fps) leaves them out; here that leaves nothing to plot.
    assert PARETO_TITLE not in build_figures(table, {}, {})


def test_a_standin_run_beside_real_timings_gets_no_speed_up() -> None:
    runs = pd.DataFrame([
        _run("ref", "eager", 1, 1, 50.0, 1, device="", baseline="true", backend="torch"),
        _run("mlu", "fused", 1, 1, 5.0, 2),
    ])  # fmt: skip
    table = comparison_table(runs).set_index("run_id")
    assert math.isnan(table.loc["mlu", "speedup_fps"]) and table.loc["ref", "speedup_fps"] == 1.0
    assert not math.isnan(table.loc["mlu", "map50_95"])  # accuracy is compared as usual
    assert PARETO_TITLE in build_figures(comparison_table(runs), {}, {})


def test_throughput_table_and_chart_over_cores_and_batch() -> None:
    runs = _sweep()
    frame = deploy_frame(comparison_table(runs), runs)
    assert len(frame) == 8 and list(frame.columns) == [
        "variant", "mode", "core_number", "batch_size", "fps", "latency_ms_p50", "device_fps", "standin",
    ]  # fmt: skip
    shown = throughput_table(frame)
    assert list(shown.columns) == ["mode", "cores", "bs 1", "bs 16"]
    assert shown.values.tolist() == [
        ["fused", "1", f"10.0{STANDIN_MARK}", f"160{STANDIN_MARK}"],
        ["fused", "4", f"10.0{STANDIN_MARK}", f"160{STANDIN_MARK}"],
        ["offline", "1", f"15.0{STANDIN_MARK}", f"240{STANDIN_MARK}"],
        ["offline", "4", f"15.0{STANDIN_MARK}", f"240{STANDIN_MARK}"],
    ]
    assert "stand-in: CPU times, not MLU throughput" in deploy_title(frame)
    fig = deploy_plot(frame)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 4 and "stand-in" in ax.get_title() and "CPU" in ax.get_ylabel()


def test_on_a_card_the_device_fps_from_hardware_times_is_shown() -> None:
    runs = _sweep(device="MLU270 through the legacy SDK", device_fps=1.25)
    table = comparison_table(runs)
    assert not any("STAND-IN" in n for n in table.attrs["notes"])
    assert table["speedup_fps"].notna().all()  # real timings compare as usual
    frame = deploy_frame(table, runs)
    assert not frame["standin"].any() and deploy_title(frame) == "MLU deployment throughput"
    assert throughput_table(frame).iloc[0].tolist() == ["fused", "1", "10.0 (12.5)", "160 (200)"]


def test_no_deployment_section_without_a_core_or_batch_sweep() -> None:
    runs = pd.DataFrame([_run("a", "fused", 1, 1, 5.0, 1), _run("b", "offline", 1, 1, 6.0, 2)])
    assert deploy_frame(comparison_table(runs), runs) is None
    torch_only = pd.DataFrame([_run("a", "eager", 1, 1, 5.0, 1, backend="torch"), _run("b", "eager", 4, 16, 6.0, 2, backend="torch")])
    assert deploy_frame(comparison_table(torch_only), torch_only) is None
