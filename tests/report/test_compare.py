"""comparison_table on hand-built frames shaped like mlflow.search_runs' output."""

import math

import pandas as pd
import pytest

from yolomlu.report.compare import COLUMNS, comparison_table


def _run(run_id, name, status="FINISHED", start=0, **fields):
    """One row as mlflow.search_runs gives it; ``params__bench__batch_size=1`` -> ``params.bench.batch_size``."""
    row = {"run_id": run_id, "status": status, "start_time": pd.Timestamp(1_700_000_000 + start, unit="s", tz="UTC"),
           "tags.mlflow.runName": name}  # fmt: skip
    for key, value in fields.items():
        prefix, _, rest = key.partition("__")
        row[f"{prefix}.{rest.replace('__', '.')}"] = value
    return row


def _frame(*rows):
    return pd.DataFrame(list(rows))


def test_deltas_and_speedups_against_the_baseline():
    runs = _frame(
        _run("a", "fused", start=2, tags__baseline="false", tags__variant="fused",
             metrics__map50_95=0.498, metrics__fps=80.0, metrics__latency_ms_p50=12.5),
        _run("b", "ref", start=1, tags__baseline="true", tags__variant="cpu_reference",
             metrics__map50_95=0.500, metrics__fps=50.0, metrics__latency_ms_p50=20.0),
    )  # fmt: skip
    table = comparison_table(runs)
    assert list(table.columns) == list(COLUMNS)
    assert list(table["variant"]) == ["cpu_reference", "fused"]  # baseline first
    assert list(table["baseline"]) == [True, False]
    fused = table.iloc[1]
    assert fused["delta_map50_95"] == pytest.approx(-0.002)
    assert fused["speedup_fps"] == pytest.approx(80 / 50)
    assert fused["speedup_latency"] == pytest.approx(20 / 12.5)
    base = table.iloc[0]
    assert (base["delta_map50_95"], base["speedup_fps"], base["speedup_latency"]) == (0.0, 1.0, 1.0)
    assert table.attrs["notes"] == []
    assert math.isnan(fused["speedup_device_fps"])  # no device timer on these runs: blank, not 1


def test_device_fps_speedup_where_the_device_was_timed():
    runs = _frame(
        _run("a", "fp32", start=1, tags__baseline="true", metrics__fps=375.0, metrics__device_fps=520.0),
        _run("b", "fp16", start=2, metrics__fps=629.0, metrics__device_fps=938.0),
    )  # fmt: skip
    table = comparison_table(runs)
    assert table.iloc[1]["speedup_device_fps"] == pytest.approx(938 / 520)
    assert table.iloc[1]["speedup_fps"] == pytest.approx(629 / 375)


def test_rows_follow_start_order_after_the_baseline_and_variant_falls_back_to_run_name():
    runs = _frame(
        _run("c", "third", start=3, metrics__fps=1.0),
        _run("a", "first", start=1, metrics__fps=1.0),
        _run("b", "base", start=2, tags__baseline="true", metrics__fps=2.0),
    )
    table = comparison_table(runs)
    assert list(table["variant"]) == ["base", "first", "third"]
    assert list(table["speedup_fps"]) == [1.0, 0.5, 0.5]


def test_without_a_baseline_derived_columns_are_nan_and_a_note_says_why():
    runs = _frame(_run("a", "x", metrics__fps=10.0, metrics__map50_95=0.4), _run("b", "y", start=1, metrics__fps=20.0))
    table = comparison_table(runs)
    for key in ("delta_map50_95", "speedup_fps", "speedup_latency"):
        assert table[key].isna().all()
    assert not table["baseline"].any()
    assert any("no baseline run" in n for n in table.attrs["notes"])


def test_failed_baseline_is_named_in_the_notes():
    runs = _frame(
        _run("a", "ref", status="FAILED", tags__baseline="true", tags__error="RuntimeError: boom"),
        _run("b", "y", start=1, metrics__fps=20.0),
    )
    table = comparison_table(runs)
    assert table["speedup_fps"].isna().all()
    assert any("did not finish (FAILED: RuntimeError: boom)" in n for n in table.attrs["notes"])


def test_failed_and_reused_rows_are_kept_and_marked():
    runs = _frame(
        _run("base", "ref", tags__baseline="true", tags__accuracy="measured", metrics__map50_95=0.5, metrics__fps=50.0),
        _run("old", "fused", start=1, tags__reused_from="src123", tags__accuracy="measured",
             metrics__map50_95=0.5, metrics__fps=75.0),
        _run("bad", "oom", start=2, status="FAILED", tags__error="MemoryError: out of memory"),
        _run("rand", "random", start=3, tags__accuracy="not_measured", metrics__fps=60.0),
    )  # fmt: skip
    table = comparison_table(runs).set_index("run_id")
    assert table.loc["old", "reused"] and table.loc["old", "reused_from"] == "src123"
    assert not table.loc["bad", "reused"] and table.loc["bad", "reused_from"] == ""
    assert table.loc["bad", "status"] == "FAILED" and table.loc["bad", "error"] == "MemoryError: out of memory"
    assert math.isnan(table.loc["bad", "speedup_fps"]) and math.isnan(table.loc["bad", "delta_map50_95"])
    assert table.loc["old", "speedup_fps"] == pytest.approx(1.5)
    # The tag wins; without a tag, accuracy says whether map50_95 was logged.
    assert table.loc["rand", "accuracy"] == "not_measured" and math.isnan(table.loc["rand", "delta_map50_95"])
    assert table.loc["bad", "accuracy"] == "off"
    notes = " ".join(comparison_table(runs).attrs["notes"])
    assert "1 of 4 runs did not finish: oom" in notes and "1 result was reused" in notes


def test_sweep_parents_are_left_out_and_conditions_are_read_from_params():
    runs = _frame(
        _run("p", "sweep-x", tags__sweep="true"),
        _run("a", "job", start=1, tags__sweep=None, params__bench__batch_size="16", params__img_size="320", metrics__fps=5.0),
    )
    table = comparison_table(runs)
    assert list(table["run_id"]) == ["a"]
    assert (table.loc[0, "batch_size"], table.loc[0, "img_size"]) == (16.0, 320.0)


def test_several_baselines_prefer_a_fresh_measurement():
    # A job reusing a baseline run carries its tags, baseline=true included.
    runs = _frame(
        _run("copy", "ref-copy", start=0, tags__baseline="true", tags__reused_from="src", metrics__fps=40.0),
        _run("fresh", "ref", start=1, tags__baseline="true", metrics__fps=50.0),
    )
    table = comparison_table(runs)
    assert list(table["run_id"]) == ["fresh", "copy"] and list(table["baseline"]) == [True, False]
    assert any("2 runs are tagged baseline=true" in n and "(fresh)" in n for n in table.attrs["notes"])


def test_baseline_without_accuracy_gives_blank_deltas_and_a_note():
    runs = _frame(
        _run("a", "ref", tags__baseline="true", tags__accuracy="not_measured", metrics__fps=10.0),
        _run("b", "y", start=1, metrics__fps=20.0, metrics__map50_95=0.3),
    )
    table = comparison_table(runs)
    assert table["delta_map50_95"].isna().all() and table.loc[1, "speedup_fps"] == 2.0
    assert any("has no map50_95 (accuracy: not_measured)" in n for n in table.attrs["notes"])


def test_no_runs_give_an_empty_table_with_every_column():
    table = comparison_table(pd.DataFrame(columns=["run_id", "status", "start_time"]))
    assert table.empty and list(table.columns) == list(COLUMNS)
    assert table.attrs["notes"] == ["no runs to compare"]


def test_contended_runs_are_marked_and_said_above_the_table():
    runs = _frame(
        _run("a", "ref", metrics__fps=10.0, tags__baseline="true", tags__contended="true",
             tags__contended_reason="other processes kept 1.20 of 2 cores busy during the timing"),
        _run("b", "fast", start=1, metrics__fps=20.0, tags__contended="false"),
    )  # fmt: skip
    table = comparison_table(runs)
    assert list(table["contended"]) == [True, False]
    notes = table.attrs["notes"]
    assert any(n.startswith("CONTENDED: 1 of 2 runs") and "1.20 of 2 cores" in n for n in notes)
    assert any("the baseline ref itself was timed under contention" in n for n in notes)


def test_repeats_leave_out_contended_samples_and_sweeps_with_a_contended_baseline():
    from yolomlu.report.compare import repeat_table

    def sweep(fast_fps, fast_contended="false", base_contended="false"):
        return comparison_table(_frame(
            _run("a", "ref", metrics__fps=10.0, tags__baseline="true", tags__contended=base_contended),
            _run("b", "fast", start=1, metrics__fps=fast_fps, tags__contended=fast_contended),
        ))  # fmt: skip

    spread = repeat_table([sweep(20.0), sweep(5.0, fast_contended="true"), sweep(30.0, base_contended="true"), sweep(22.0)])
    row = spread.set_index("variant").loc["fast"]
    assert row["sweep 1"] == 2.0 and row["sweep 4"] == 2.2
    assert math.isnan(row["sweep 2"]) and math.isnan(row["sweep 3"])
