"""notebooks/compare.ipynb runs top to bottom against a real store and computes the report's table."""

import io
import json
import sys
from pathlib import Path

import nbformat
import pandas as pd
from nbclient import NotebookClient

from yolomlu.report import comparison_table
from yolomlu.tracking import fetch_runs

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "compare.ipynb"
KERNEL = "yolomlu-test"


def _kernel_for_this_interpreter(root: Path, monkeypatch) -> None:
    """A kernelspec that runs this very Python (the project's venv), found first via JUPYTER_PATH,
    so the notebook never runs in some other 'python3' kernel installed on the machine."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(root))


def test_notebook_table_equals_the_report_table(sweep_store, tmp_path: Path, monkeypatch):
    _kernel_for_this_interpreter(tmp_path / "jupyter", monkeypatch)
    out = tmp_path / "notebook_table.csv"
    monkeypatch.setenv("YOLOMLU_TRACKING_URI", sweep_store.settings.uri)
    monkeypatch.delenv("YOLOMLU_PARENT_RUN", raising=False)  # the default: the newest sweep
    monkeypatch.setenv("YOLOMLU_NOTEBOOK_TABLE", str(out))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()

    expected = comparison_table(fetch_runs(sweep_store.settings, parent_run_id=sweep_store.parent))
    # Both sides through CSV, so only the numbers and strings are compared, not dtypes CSV cannot keep.
    expected = pd.read_csv(io.StringIO(expected.to_csv(index=False)))
    pd.testing.assert_frame_equal(pd.read_csv(out), expected)

    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # Pareto, per-class AP, layer profiles
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
