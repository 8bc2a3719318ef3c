"""The comparison table and figures -> a self-contained HTML page and a Markdown file.

The HTML embeds its figures as base64 PNGs, so it can be mailed or logged as one file; the Markdown
refers to the same PNGs written beside it. Both show the same formatted tables: reused results are
marked with a dagger and a footnote, failed runs keep their error, the baseline row says so.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from yolomlu.report.compare import standin_timed

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REUSED_MARK = "†"
REUSED_NOTE = (
    f"{REUSED_MARK} reused: the numbers were carried over from an earlier run of the same sweep with the same "
    f"config_hash, not measured again (ids in the reused_from columns of {{csv}}):"
)
CONTENDED_MARK = "‡"
CONTENDED_NOTE = f"{CONTENDED_MARK} timed under contention (other work competed for the machine): speed not comparable."
STANDIN_MARK = "§"
STANDIN_NOTE = (
    f"{STANDIN_MARK} timed on a stand-in of the device's SDK (the torch_mlu stand-in): fps and latencies are this "
    "machine's CPU times, not the device's; no speed-ups are computed for them."
)
MISSING = "–"
CSV_NAME = "comparison.csv"
_TEXT_HEADERS = {"variant", "status", "accuracy", "error"}  # left-aligned; numbers align right
HTML_NAME = "report.html"
MD_NAME = "report.md"
_MAX_ERROR = 160


def _fixed(value: float, digits: int = 3) -> str:
    """``digits`` significant digits in fixed notation (no exponent): 1234.5 -> 1235, 0.51234 -> 0.512."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, min(6, digits - 1 - math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def _fmt(kind: str) -> Callable[[float], str]:
    formats: dict[str, Callable[[float], str]] = {
        "ap": lambda v: f"{v:.4f}",
        "delta": lambda v: f"{v:+.4f}",
        "speedup": lambda v: f"{v:.2f}×",
        "num": _fixed,
        "int": lambda v: f"{v:.0f}",
        "params": lambda v: f"{v / 1e6:.2f} M",
        "sci": lambda v: f"{v:.1e}",
        "percent": lambda v: f"{v * 100:.0f} %",
    }
    return formats[kind]


# (column of the comparison table, header, format): the summary a reader compares variants by ...
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("variant", "variant", "text"),
    ("status", "status", "text"),
    ("accuracy", "accuracy", "text"),
    ("batch_size", "batch", "int"),
    ("img_size", "img", "int"),
    ("map50_95", "mAP50-95", "ap"),
    ("delta_map50_95", "Δ mAP50-95", "delta"),
    ("fps", "fps", "num"),
    ("speedup_fps", "fps ×", "speedup"),
    ("latency_ms_p50", "latency p50 (ms)", "num"),
    ("speedup_latency", "latency ×", "speedup"),
    ("e2e_fps", "e2e fps", "num"),
    ("alone_fps", "fps alone", "num"),
    ("alone_ratio", "fps / alone", "speedup"),
    ("device_fps", "device fps", "num"),
    ("speedup_device_fps", "device fps ×", "speedup"),
    ("peak_rss_mb", "peak RSS (MB)", "int"),
    ("gpu_mem_mb", "GPU mem (MB)", "int"),
    ("params", "params", "params"),
    ("gflops", "GFLOPs", "num"),
    ("model_mb", "model (MB)", "num"),
    ("parity_max_abs", "parity max |Δ|", "sci"),
    ("parity_box_agreement", "box agreement", "ap"),
    ("quant_layers", "quant layers", "int"),
    ("sqnr_mean_db", "SQNR mean (dB)", "num"),
    ("sqnr_min_db", "SQNR min (dB)", "num"),
    ("fallback_map50_95", "fallback mAP50-95", "ap"),
    ("fallback_recovered_map50_95", "fallback recovers", "delta"),
    ("error", "error", "text"),
)
# ... and the rest of COCO's numbers and the time split.
DETAIL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("variant", "variant", "text"),
    ("map50", "mAP50", "ap"),
    ("map75", "mAP75", "ap"),
    ("map_small", "mAP S", "ap"),
    ("map_medium", "mAP M", "ap"),
    ("map_large", "mAP L", "ap"),
    ("ar1", "AR1", "ap"),
    ("ar10", "AR10", "ap"),
    ("ar100", "AR100", "ap"),
    ("ar_small", "AR S", "ap"),
    ("ar_medium", "AR M", "ap"),
    ("ar_large", "AR L", "ap"),
    ("latency_ms_p90", "latency p90 (ms)", "num"),
    ("latency_ms_p99", "latency p99 (ms)", "num"),
    ("pre_ms", "pre (ms/img)", "num"),
    ("infer_ms", "infer (ms/img)", "num"),
    ("post_ms", "post (ms/img)", "num"),
    ("device_ms", "device (ms/img)", "num"),
    ("layers", "layers", "int"),
    ("cond_others_cores", "others' cores", "num"),
    ("cond_steal_pct", "steal (%)", "num"),
    ("cond_cpu_util", "CPU use", "percent"),
)
_DERIVED = {"delta_map50_95", "speedup_fps", "speedup_latency", "speedup_device_fps"}


def format_table(table: pd.DataFrame, columns: Sequence[tuple[str, str, str]] = SUMMARY_COLUMNS) -> pd.DataFrame:
    """The comparison table as display strings under readable headers.

    Columns every run left empty are dropped (a sweep without a GPU has no GPU memory); the
    baseline's derived cells read "baseline"; reused variants carry the dagger.
    """
    shown = [(c, h, k) for c, h, k in columns if c in table.columns and (k == "text" or table[c].notna().any())]
    if "error" in table.columns and not (table["error"].fillna("") != "").any():
        shown = [s for s in shown if s[0] != "error"]
    out = pd.DataFrame(index=table.index)
    for column, header, kind in shown:
        values = table[column]
        if column == "variant":
            out[header] = [f"{v}{m}" for v, m in zip(values.astype(str), _marks(table))]
        elif column == "error":
            out[header] = values.fillna("").astype(str).map(lambda e: e if len(e) <= _MAX_ERROR else e[: _MAX_ERROR - 1] + "…")
        elif kind == "text":
            out[header] = values.fillna("").astype(str)
        else:
            fmt = _fmt(kind)
            out[header] = [MISSING if pd.isna(v) else fmt(float(v)) for v in values]
            if column in _DERIVED and "baseline" in table:
                out.loc[table["baseline"].astype(bool), header] = "baseline"
    return out.reset_index(drop=True)


def _marks(table: pd.DataFrame) -> list[str]:
    """The dagger of a reused row, the double dagger of a contended one, the section sign of one timed on a
    stand-in of the device's SDK."""
    reused = table["reused"].eq(True) if "reused" in table else pd.Series(False, index=table.index)
    contended = table["contended"].eq(True) if "contended" in table else pd.Series(False, index=table.index)
    standin = standin_timed(table)
    return [
        (REUSED_MARK if r else "") + (CONTENDED_MARK if c else "") + (STANDIN_MARK if t else "")
        for r, c, t in zip(reused, contended, standin)
    ]


def footnotes(table: pd.DataFrame) -> list[str]:
    """The footnotes under the variants: where each reused number came from, what contention means."""
    notes = []
    if "reused" in table and table["reused"].eq(True).any():
        sources = [
            f"{r.variant}: run {str(r.reused_from)[:8]} of sweep {_short(getattr(r, 'reused_from_sweep', ''))}, "
            f"measured {getattr(r, 'reused_from_start', '') or '?'}"
            for r in table[table["reused"].eq(True)].itertuples()
        ]
        notes.append(REUSED_NOTE.format(csv=CSV_NAME) + " " + "; ".join(sources) + ".")
    if "contended" in table and table["contended"].eq(True).any():
        notes.append(CONTENDED_NOTE)
    if standin_timed(table).any():
        notes.append(STANDIN_NOTE)
    return notes


def _short(run_id: object) -> str:
    text = "" if run_id is None or (isinstance(run_id, float) and math.isnan(run_id)) else str(run_id)
    return text[:8] if len(text) == 32 else (text or "?")


def format_repeats(repeats: pd.DataFrame) -> pd.DataFrame:
    """:func:`yolomlu.report.compare.repeat_table` as display strings."""
    out = pd.DataFrame({"variant": repeats["variant"].astype(str)})
    for column in repeats.columns[1:]:
        fmt = _fmt("percent" if column == "spread" else "speedup")
        out[column] = [MISSING if pd.isna(v) else fmt(float(v)) for v in repeats[column]]
    return out.reset_index(drop=True)


def repeats_title(repeats: pd.DataFrame) -> str:
    n = sum(c.startswith("sweep ") for c in repeats.columns)
    return f"Repeatability: {repeats.attrs.get('metric', 'speedup_fps')} in {n} runs of this sweep"


def figure_filename(title: str) -> str:
    """The PNG file name a figure titled ``title`` is written to."""
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") + ".png"


def write_report(
    table: pd.DataFrame,
    figures: Mapping[str, Figure],
    out_dir: Path,
    title: str,
    notes: Sequence[str] = (),
    repeats: pd.DataFrame | None = None,
    sections: Sequence[tuple[str, pd.DataFrame]] = (),
) -> tuple[Path, Path]:
    """Write ``report.html`` (figures embedded), ``report.md`` with one PNG per figure beside it,
    and the raw table as ``comparison.csv``, into ``out_dir``; return (html_path, md_path).

    ``figures`` maps a section title to a matplotlib Figure; ``notes`` are shown under the title;
    ``repeats`` (a repeat_table) gets a section after the variants; ``sections`` are further
    (title, display table) pairs after it (a search's trials, the MLU deployment throughput).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / CSV_NAME, index=False)
    pngs: dict[str, bytes] = {}
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        pngs[name] = buffer.getvalue()
        (out_dir / figure_filename(name)).write_bytes(pngs[name])
    summary, details = format_table(table, SUMMARY_COLUMNS), format_table(table, DETAIL_COLUMNS)
    if len(details.columns) <= 1:  # nothing beyond the variant name: no accuracy, no time split
        details = details.iloc[0:0, 0:0]
    footnote = " ".join(footnotes(table))
    row_classes = [
        " ".join(c for c, on in (("failed", status != "FINISHED"), ("baseline", bool(base))) if on)
        for status, base in zip(table.get("status", [""] * len(table)), table.get("baseline", [False] * len(table)))
    ]

    extra = list(sections)
    if repeats is not None:
        extra.insert(0, (repeats_title(repeats), format_repeats(repeats)))

    html_path, md_path = out_dir / HTML_NAME, out_dir / MD_NAME
    html_path.write_text(_html(title, notes, summary, details, row_classes, pngs, footnote, extra), encoding="utf-8")
    md_path.write_text(_markdown(title, notes, summary, details, pngs, footnote, extra), encoding="utf-8")
    return html_path, md_path


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
td.text { text-align: left; white-space: normal; }
tr.failed td { background: #fdecea; }
tr.baseline td { font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; }
.notes li { margin: 0.2em 0; }
.footnote { font-size: 0.85em; color: #555; }
.wide { overflow-x: auto; }
"""


def _html_table(frame: pd.DataFrame, row_classes: Sequence[str]) -> str:
    if frame.empty:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        classes = row_classes[i] if i < len(row_classes) else ""
        cells = "".join(
            f'<td class="text">{html.escape(str(v))}</td>' if c in ("error", "variant", "status", "accuracy")
            else f"<td>{html.escape(str(v))}</td>"
            for c, v in row.items()
        )  # fmt: skip
        rows.append(f'<tr class="{classes}">{cells}</tr>' if classes else f"<tr>{cells}</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _html(title: str, notes, summary, details, row_classes, pngs: Mapping[str, bytes], footnote: str, extra=()) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts += ["<h2>Variants</h2>", _html_table(summary, row_classes)]
    if footnote:
        parts.append(f'<p class="footnote">{html.escape(footnote)}</p>')
    for name, frame in extra:
        parts += [f"<h2>{html.escape(name)}</h2>", _html_table(frame, [])]
    if not details.empty:
        parts += ["<h2>Accuracy details and time split</h2>", _html_table(details, row_classes)]
    for name, data in pngs.items():
        encoded = base64.b64encode(data).decode("ascii")
        parts += [f"<h2>{html.escape(name)}</h2>", f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(name)}">']
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)\n"
    lines = ["| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"]
    lines.append("|" + "|".join(":---" if c in _TEXT_HEADERS else "---:" for c in frame.columns) + "|")
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_md_cell(v) for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def _markdown(title: str, notes, summary, details, pngs: Mapping[str, bytes], footnote: str, extra=()) -> str:
    parts = [f"# {title}\n"]
    if notes:
        parts.append("".join(f"- {n}\n" for n in notes))
    parts += ["## Variants\n", _md_table(summary)]
    if footnote:
        parts.append(f"{footnote}\n")
    for name, frame in extra:
        parts += [f"## {name}\n", _md_table(frame)]
    if not details.empty:
        parts += ["## Accuracy details and time split\n", _md_table(details)]
    for name in pngs:
        parts += [f"## {name}\n", f"![{name}]({figure_filename(name)})\n"]
    return "\n".join(parts)
