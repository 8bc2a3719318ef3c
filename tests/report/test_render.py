"""Formatting of the report's tables, and the HTML and Markdown files, without a store."""

import math
from pathlib import Path

import pandas as pd

from yolomlu.report.compare import COLUMNS
from yolomlu.report.render import format_table, write_report


def _table(**overrides) -> pd.DataFrame:
    row = {c: math.nan for c in COLUMNS}
    row.update(run_id="r1", variant="ref", status="FINISHED", baseline=True, reused=False, reused_from="")
    row.update(accuracy="measured", error="")
    rows = [row, {**row, "run_id": "r2", "variant": "v|2", "baseline": False}]
    table = pd.DataFrame(rows)
    for key, values in overrides.items():
        table[key] = values
    return table


def test_numbers_are_formatted_for_reading():
    table = _table(
        map50_95=[0.51234, 0.5], delta_map50_95=[0.0, -0.00123], fps=[1234.56, 0.0456], speedup_fps=[1.0, 2.345],
        params=[1_877_709, 7_235_389], peak_rss_mb=[512.4, 1024.6], parity_max_abs=[math.nan, 3.2e-6],
    )  # fmt: skip
    shown = format_table(table)
    assert list(shown["mAP50-95"]) == ["0.5123", "0.5000"]
    assert list(shown["Δ mAP50-95"]) == ["baseline", "-0.0012"]
    assert list(shown["fps"]) == ["1235", "0.0456"]
    assert list(shown["fps ×"]) == ["baseline", "2.35×"]
    assert list(shown["params"]) == ["1.88 M", "7.24 M"]
    assert list(shown["peak RSS (MB)"]) == ["512", "1025"]
    assert list(shown["parity max |Δ|"]) == ["–", "3.2e-06"]


def test_empty_columns_are_dropped_and_errors_shown_only_when_there_are_some():
    shown = format_table(_table(fps=[10.0, 20.0]))
    assert "GPU mem (MB)" not in shown.columns and "error" not in shown.columns and "fps" in shown.columns
    long = "RuntimeError: " + "x" * 300
    shown = format_table(_table(status=["FINISHED", "FAILED"], error=["", long]))
    assert shown.loc[1, "error"].startswith("RuntimeError: xx") and shown.loc[1, "error"].endswith("…")
    assert len(shown.loc[1, "error"]) == 160


def test_reused_variants_get_a_dagger_and_a_footnote(tmp_path: Path):
    table = _table(reused=[False, True], reused_from=["", "abc"], fps=[1.0, 2.0])
    assert list(format_table(table)["variant"]) == ["ref", "v|2†"]
    html, md = write_report(table, {}, tmp_path, "t", notes=["a <note>"])
    assert "† reused:" in html.read_text() and "&lt;note&gt;" in html.read_text()
    text = md.read_text()
    assert "| v\\|2† |" in text and "† reused:" in text and "- a <note>" in text
    assert pd.read_csv(tmp_path / "comparison.csv")["reused_from"].fillna("").tolist() == ["", "abc"]


def test_a_table_without_reuse_or_figures_still_renders(tmp_path: Path):
    html, md = write_report(_table(fps=[1.0, 2.0]), {}, tmp_path / "new", "plain")
    assert "<img" not in html.read_text() and "reused" not in html.read_text()
    assert md.read_text().startswith("# plain\n")
