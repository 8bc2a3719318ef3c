"""What every case of the battery shares: the tiny job, the store and what changed in it, the
outcome of a command, the verdict on it, and tiny COCO folders.

:func:`verdict` makes the checks every refused input must pass: the exit status; exactly one
``yolomlu:`` line on stderr naming the bad thing and what would be valid, and no traceback or
warning; exactly one new run, FAILED and naming the bad thing, where a job had started, and none
where it was refused before any work; and every other row of the store as it was (the earlier run
still FINISHED with its metrics).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# A whole job in a second or two: the smallest v5.0 model at 64 px, two images, no timing.
JOB = [
    "model=yolov5n_v5",
    "img_size=64",
    "data.max_images=2",
    "eval.batch_size=2",
    "eval.parity_images=1",
    "bench.enabled=false",
    "bench.profile=false",
    "quant.sensitivity.images=0",
]
# The jobs here time nothing and their tensors are tiny: one torch thread each. On a 2-core machine
# shared with other work, two OpenMP threads spin-waiting on each other made a 64 px forward some
# twenty times slower.
TORCH_THREADS = 1
EARLIER = {"map50_95": 0.5, "fps": 12.5}  # the metrics of the earlier run every store holds
VERBOSE_ENV = ("HYDRA_FULL_ERROR", "YOLOMLU_VERBOSE", "YOLOMLU_USER_VERBOSE")  # unset: as a user runs it


def without(overrides: list[str], *keys: str) -> list[str]:
    """``overrides`` less those that set one of ``keys``."""
    return [o for o in overrides if o.split("=", 1)[0] not in keys]


# ------------------------------------------------------------------------------------ the store


class Store:
    """One case's SQLite tracking store, and what changed in it since the case began."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.uri = f"sqlite:///{db}"
        self.before = self.snapshot()

    def _connect(self) -> sqlite3.Connection:
        # Read-only SQL: no MLflow client here races a running job's own writes.
        return contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10))

    def snapshot(self) -> dict[str, tuple[list[str], set[tuple]]]:
        """Every table: its columns and every row."""
        with self._connect() as conn:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {
                t: ([row[1] for row in conn.execute(f'PRAGMA table_info("{t}")')], set(conn.execute(f'SELECT * FROM "{t}"')))
                for t in tables
            }

    def runs(self) -> dict[str, dict]:
        """run id -> name, status, tags, latest metrics and the artifacts folder, for every run."""
        with self._connect() as conn:
            query = "SELECT run_uuid, name, status, artifact_uri FROM runs"
            runs = {rid: {"name": name, "status": status, "tags": {}, "metrics": {}, "artifacts": Path(uri.removeprefix("file://"))}
                    for rid, name, status, uri in conn.execute(query)}  # fmt: skip
            for rid, key, value in conn.execute("SELECT run_uuid, key, value FROM tags"):
                runs[rid]["tags"][key] = value
            for rid, key, value in conn.execute("SELECT run_uuid, key, value FROM latest_metrics"):
                runs[rid]["metrics"][key] = value
        return runs

    def new_runs(self) -> list[dict]:
        """The runs added since the case began, after asserting that nothing else changed: every
        row of every table that does not belong to a new run is as it was."""
        after, runs = self.snapshot(), self.runs()
        columns, rows = self.before["runs"]
        old = {row[columns.index("run_uuid")] for row in rows}
        new = {rid for rid in runs if rid not in old}
        for table, (columns, rows) in self.before.items():
            column = columns.index("run_uuid") if "run_uuid" in columns else None
            kept = {row for row in after[table][1] if column is None or row[column] not in new}
            assert kept == rows, f"the store's table {table!r} changed beyond the new run(s): {sorted(map(str, kept ^ rows))[:5]}"
        earlier = [r for r in runs.values() if r["name"] == "earlier"]
        assert len(earlier) == 1 and earlier[0]["status"] == "FINISHED" and earlier[0]["metrics"] == EARLIER, earlier
        return [runs[rid] for rid in new]


# ---------------------------------------------------------------------------------- the verdict


@dataclass
class Outcome:
    """What a command did: exit status, stderr, stdout, and the runs it added to the store."""

    status: int
    stderr: str
    stdout: str
    runs: list[dict] = field(default_factory=list)

    @property
    def message(self) -> str:
        """The one ``yolomlu:`` line (the assertion shows what was printed instead)."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("yolomlu:")]
        assert len(lines) == 1, f"expected one 'yolomlu:' line on stderr, got:\n{self.stderr}"
        return lines[0]


class Command:
    """``python -m yolomlu <args>`` started in ``folder`` on a copy of the template store, as a user
    runs it (no verbose switch), with :data:`TORCH_THREADS`. :meth:`outcome` waits for it."""

    def __init__(self, folder: Path, template: Path, args: list[str]) -> None:
        shutil.copyfile(template, folder / "mlflow.db")
        self.folder, self.store = folder, Store(folder / "mlflow.db")
        env = {k: v for k, v in os.environ.items() if k not in VERBOSE_ENV}
        env.update(OMP_NUM_THREADS=str(TORCH_THREADS), PYTHONUNBUFFERED="1")
        with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "yolomlu", *args], cwd=folder, stdout=out, stderr=err, env=env)

    def outcome(self, timeout: float = 300) -> Outcome:
        try:
            status = self.proc.wait(timeout)
        finally:
            self.proc.kill()  # a no-op once it has ended
        read = lambda name: (self.folder / name).read_text()  # noqa: E731
        return Outcome(status, read("stderr.txt"), read("stdout.txt"), self.store.new_runs())


def verdict(outcome: Outcome, *, status: int, names: list[str], valid: list[str] = (), run: str | None) -> None:
    """The checks of a refused input: exit ``status``; one ``yolomlu:`` line containing every
    string of ``names`` (the bad file, key or value) and of ``valid`` (what would be valid), no
    traceback, no warning; ``run='FAILED'``: exactly one new run, FAILED, whose error names the bad
    thing too; ``run=None``: no new run. (The rest of the store was checked when the outcome was made.)"""
    assert outcome.status == status, f"exit status {outcome.status}, expected {status}:\n{outcome.stderr[-3000:]}"
    assert "Traceback" not in outcome.stderr and "Warning" not in outcome.stderr, outcome.stderr
    message = outcome.message
    for text in [*names, *valid]:
        assert text in message, f"{text!r} is not in the message: {message}"
    if run is None:
        assert outcome.runs == [], f"a refused input made runs: {outcome.runs}"
    else:
        assert [r["status"] for r in outcome.runs] == [run], outcome.runs
        error = outcome.runs[0]["tags"].get("error", "")
        for text in names:
            assert text in error, f"{text!r} is not in the run's error tag: {error}"


def finished(outcome: Outcome) -> dict:
    """The checks of an input that must work: exit 0, no ``yolomlu:`` line, exactly one new run,
    FINISHED. Returns the run."""
    assert outcome.status == 0, outcome.stderr[-3000:]
    assert not [line for line in outcome.stderr.splitlines() if line.startswith("yolomlu:")], outcome.stderr
    assert [r["status"] for r in outcome.runs] == ["FINISHED"], outcome.runs
    return outcome.runs[0]


# ------------------------------------------------------------------------------------ datasets


def random_image(seed: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A uint8 RGB image [h, w, 3] of smooth random colours (JPEG keeps them)."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def image_bytes(image: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    """The file ``image`` makes in format ``fmt`` ('PNG', 'JPEG')."""
    buffer = io.BytesIO()
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(buffer, fmt, **options)
    return buffer.getvalue()


def instances(files: list[str], categories: list[dict] | None = None, box: tuple[float, ...] = (8, 8, 24, 16)) -> dict:
    """A COCO instances dict: one 64x48 image entry per file, one box each, of the first category."""
    categories = categories if categories is not None else [{"id": 1, "name": "thing"}]
    images = [{"id": i + 1, "file_name": name, "width": 64, "height": 48} for i, name in enumerate(files)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": categories[0]["id"], "bbox": list(box),
             "area": float(box[2] * box[3]), "iscrowd": 0} for i in range(len(files))]  # fmt: skip
    return {"images": images, "annotations": anns, "categories": categories}


def coco_folder(root: Path, files: dict[str, bytes | np.ndarray | None], ann: dict | bytes | None = None) -> Path:
    """``root/images/<name>`` for each file (bytes as they are, arrays as the name's format; None:
    listed in the annotations but absent) and ``root/annotations/instances.json`` (a dict as JSON,
    bytes as they are; default: :func:`instances` of the files). Returns ``root``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    for name, content in files.items():
        if isinstance(content, np.ndarray):
            Image.fromarray(content).save(root / "images" / name)
        elif content is not None:
            (root / "images" / name).write_bytes(content)
    text = ann if isinstance(ann, bytes) else json.dumps(instances(list(files)) if ann is None else ann).encode()
    (root / "annotations" / "instances.json").write_bytes(text)
    return root
