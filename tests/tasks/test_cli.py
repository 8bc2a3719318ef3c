"""The real command line, in a subprocess: a single job, a sweep, info and detect."""

from pathlib import Path

import numpy as np
from PIL import Image

from yolomlu.model import build_yolov5
from yolomlu.model.checkpoint import save_state_dict

TINY = ["model=yolov5n_v5", "img_size=64", "data.n_images=4", "data.image_size=128", "bench.warmup=1", "bench.iters=2"]


def test_multirun_sweep_gives_one_run_per_job(run_cli, read_runs, tmp_path: Path) -> None:
    proc = run_cli("-m", *TINY, "bench.batch_size=1,2")
    runs = read_runs(tmp_path / "mlflow.db")
    parent = runs[runs["tags.sweep"] == "true"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent.iloc[0]["run_id"]]
    assert len(parent) == 1 and len(runs) == 3, proc.stdout
    assert sorted(children["params.bench.batch_size"]) == ["1", "2"]
    assert set(runs["status"]) == {"FINISHED"}


def test_info_prints_the_yolov5_summary_line(run_cli) -> None:
    proc = run_cli("task=info", "model=yolov5s_v5")
    assert "layers, 7266973 parameters" in proc.stdout  # YOLOv5s v5.0, fused, as its release logs it


def test_detect_prints_boxes_and_writes_annotated_images(run_cli, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(folder / name)
    weights = tmp_path / "w.pt"
    save_state_dict(build_yolov5("v5", 0.33, 0.25, nc=80), weights)
    # conf 0 so that even untrained weights print boxes in the documented format.
    proc = run_cli("task=detect", "model=yolov5n_v5", f"source={folder}", f"model.weights={weights}", "img_size=64", "detect.conf_thres=0.0", "detect.max_det=3")
    assert "a.jpg (80x48): 3 boxes" in proc.stdout
    box_lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert len(box_lines) == 6
    x1, y1, x2, y2, conf = map(float, box_lines[0][:5])
    assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 48 and 0 <= conf <= 1
    assert box_lines[0][5].isalpha()  # a class name, not a number
    assert sorted(p.name for p in (tmp_path / "outputs" / "detect").iterdir()) == ["a.jpg", "b.jpg"]


def test_unknown_key_is_refused_by_hydra(run_cli) -> None:
    proc = run_cli("backend.flavour=spicy", check=False)
    assert proc.returncode != 0
    assert "flavour" in proc.stderr


def test_export_writes_one_self_contained_onnx_file(run_cli, tmp_path: Path) -> None:
    import onnx

    proc = run_cli("task=export", "model=yolov5n_v5", "img_size=64", "transforms.focus_to_conv=true")
    files = list((tmp_path / "outputs" / "export").iterdir())
    assert [f.name for f in files] == ["yolov5n_v5-64.onnx"], proc.stdout
    graph = onnx.load(str(files[0])).graph
    assert [o.name for o in graph.output] == ["p3", "p4", "p5"]
    assert not any(n.op_type == "Slice" for n in graph.node)  # Focus -> Conv took the strided slices out


def test_demo_model_finds_the_shapes_by_name(run_cli, tmp_path: Path) -> None:
    from yolomlu.data.synthetic import SHAPE_CLASSES, ensure_shapes

    root = ensure_shapes(tmp_path / "data", n_images=2, img_size=320, seed=5)
    proc = run_cli("task=detect", f"source={root / 'images'}")  # the default model is the demo checkpoint
    names = {line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert names and names <= set(SHAPE_CLASSES), proc.stdout


def test_detect_honours_quant_and_goes_on_past_an_unreadable_image(run_cli, tmp_path: Path) -> None:
    from yolomlu.data.synthetic import ensure_shapes

    root = ensure_shapes(tmp_path / "data", n_images=2, img_size=320, seed=5)
    folder = root / "images"
    fp32 = run_cli("task=detect", f"source={folder}")
    int8 = run_cli("task=detect", f"source={folder}", "quant=int8")
    assert "quant=int8 (emulated, 62 layers)" in int8.stdout
    boxes = [[line for line in proc.stdout.splitlines() if line.startswith("  ")] for proc in (fp32, int8)]
    assert boxes[0] and boxes[0] != boxes[1]  # quantization changes the outputs: it was not ignored
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    proc = run_cli("task=detect", f"source={folder}", check=False)
    assert proc.returncode != 0 and "zz_broken.jpg" in proc.stderr
    assert "2 images" in proc.stdout  # the readable ones were all processed


def test_a_wrong_type_or_unknown_key_is_refused_in_one_line_before_any_work(run_cli, tmp_path: Path) -> None:
    proc = _run_plain(tmp_path, "seed=abc")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["yolomlu: config error: seed: Value 'abc' of type 'str' could not be converted to Integer (seed takes int)"]
    proc = _run_plain(tmp_path, "bench.itres=5")
    assert proc.returncode == 2 and "bench.itres is not a config key; bench takes: enabled, batch_size, warmup, iters" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "mlflow.db").exists()


def test_an_expected_error_in_a_job_is_one_line_and_one_failed_run(read_runs, tmp_path: Path) -> None:
    proc = _run_plain(tmp_path, *TINY, "model.weights=/nonexistent/w.pt")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "yolomlu: CheckpointError: checkpoint file not found: /nonexistent/w.pt"
    assert "Traceback" not in proc.stderr
    runs = read_runs(tmp_path / "mlflow.db")
    assert list(runs["status"]) == ["FAILED"] and "/nonexistent/w.pt" in runs.iloc[0]["tags.error"]


def _run_plain(cwd: Path, *args: str):
    """``python -m yolomlu`` as a user runs it: no HYDRA_FULL_ERROR, no verbose switch."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "YOLOMLU_VERBOSE", "YOLOMLU_USER_VERBOSE")}
    return subprocess.run([sys.executable, "-m", "yolomlu", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
