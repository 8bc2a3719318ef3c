"""Runs -> comparison table, Pareto plot, per-class and layer-profile charts, HTML/Markdown report.

Reads the store only through :mod:`yolomlu.tracking`; ``compare``, ``plots`` and ``render`` are
pure (DataFrames in, tables, figures and files out).
"""

from yolomlu.report.build import ReportResult, build_report
from yolomlu.report.compare import comparison_table
from yolomlu.report.plots import pareto_front, pareto_plot, per_class_plot, profile_plots
from yolomlu.report.render import format_table, write_report

__all__ = [
    "ReportResult",
    "build_report",
    "comparison_table",
    "format_table",
    "pareto_front",
    "pareto_plot",
    "per_class_plot",
    "profile_plots",
    "write_report",
]
