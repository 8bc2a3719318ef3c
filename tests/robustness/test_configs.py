"""Bad configs: unknown keys, wrong types, values out of range, impossible combinations.

In-process through Hydra's compose API and the command line's task function (fast); one case of
each kind through the real command line. A config that does not compose is refused before any
work (exit 2, no run); a value is checked by ``validate_config`` as the job starts, so a job
records it as one FAILED run (exit 1), before it builds a model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .battery import JOB, Command, Outcome, verdict

# case -> (overrides, what the message must name, what it must say is valid)
UNKNOWN_KEY = {
    "misspelt-bench-key": (["bench.itres=5"], ["bench.itres is not a config key"], ["bench takes: enabled, batch_size, warmup, iters"]),
    "misspelt-top-level-key": (["imgsize=64"], ["imgsize is not a config key"], ["the top level takes: task, seed"]),
    "misspelt-nested-key": (["quant.calib.imgs=3"], ["quant.calib.imgs is not a config key"], ["quant.calib takes: images, batch_size, method"]),
    "key-of-another-backend": (["backend.graph_optimization=all"], ["backend.graph_optimization is not a config key"], ["conf/backend/<option>.yaml"]),
    "unknown-model": (["model=yolov9"], ["model/yolov9"], ["yolov5n", "yolov5x_v5"]),
}
WRONG_TYPE = {
    "seed-abc": (["seed=abc"], ["seed: Value 'abc'"], ["seed takes int"]),
    "img-size-word": (["img_size=big"], ["img_size: Value 'big'"], ["img_size takes int"]),
    "conf-thres-word": (["eval.conf_thres=high"], ["eval.conf_thres: Value 'high'"], ["eval.conf_thres takes float"]),
    "half-maybe": (["backend.half=maybe"], ["backend.half: Value 'maybe'"], ["bool"]),
    "max-images-list": (["data.max_images=[1,2]"], ["data.max_images"], ["Optional[int]"]),
}
OUT_OF_RANGE = {
    "img-size-100": (["img_size=100"], ["img_size=100"], ["a positive multiple of 32"]),
    "img-size-0": (["img_size=0"], ["img_size=0"], ["a positive multiple of 32"]),
    "bench-iters-0": (["bench.iters=0"], ["bench.iters=0"], ["a positive integer"]),
    "bench-batch-size-negative": (["bench.batch_size=-4"], ["bench.batch_size=-4"], ["a positive integer"]),
    "eval-conf-thres-2": (["eval.conf_thres=2"], ["eval.conf_thres=2.0"], ["between 0 and 1"]),
    "eval-iou-thres-negative": (["eval.iou_thres=-0.1"], ["eval.iou_thres=-0.1"], ["between 0 and 1"]),
    "eval-max-det-0": (["eval.max_det=0"], ["eval.max_det=0"], ["a positive integer"]),
    "detect-conf-thres-5": (["detect.conf_thres=5"], ["detect.conf_thres=5.0"], ["between 0 and 1"]),
    "max-images-0": (["data.max_images=0"], ["data.max_images=0"], ["a positive integer or null"]),
    "model-nc-0": (["model.nc=0"], ["model.nc=0"], ["a positive integer"]),
    "unknown-backend-mode": (["backend.mode=warp"], ["backend.mode='warp'"], ["eager", "fused", "offline"]),
}
IMPOSSIBLE = {
    "onnxruntime-half": (["backend=onnxruntime", "backend.half=true"], ["backend.half=true"], ["fp32"]),
    "focus-to-conv-on-v6": (["model=yolov5n", "transforms.focus_to_conv=true"], ["transforms.focus_to_conv=true", "yolov5n"], ["has no Focus stem"]),
    "spp-to-sppf-on-v6": (["model=yolov5n", "transforms.spp_to_sppf=true"], ["transforms.spp_to_sppf=true", "yolov5n"], ["has no SPP"]),
    "firstconv-with-focus-stem": (["quant=int8", "quant.firstconv=true"], ["quant.firstconv=true"], ["transforms.focus_to_conv=true", "quant.firstconv=false"]),
    "cudagraph-on-cpu": (["backend.compiler=cudagraph"], ["backend.compiler=cudagraph"], ["backend.device=cuda and backend.mode=fused"]),
    "int16-on-onnxruntime": (["backend=onnxruntime", "quant=int16", "quant.scheme=onnxruntime"], ["int16"], ["int8"]),
    "mlu-scheme-on-onnxruntime": (["backend=onnxruntime", "quant=int8"], ["quant.scheme=mlu270", "backend=onnxruntime"], ["quant.scheme=onnxruntime"]),
    "quant-enabled-without-preset": (["quant.enabled=true"], ["quant.enabled=True"], ["quant="]),
}


@pytest.mark.parametrize("case", list(UNKNOWN_KEY) + list(WRONG_TYPE), ids=list(UNKNOWN_KEY) + list(WRONG_TYPE))
def test_a_config_that_does_not_compose_is_refused_before_any_work(case, run_job) -> None:
    overrides, names, valid = {**UNKNOWN_KEY, **WRONG_TYPE}[case]
    verdict(run_job([*JOB, *overrides]), status=2, names=names, valid=valid, run=None)


@pytest.mark.parametrize("case", list(OUT_OF_RANGE) + list(IMPOSSIBLE), ids=list(OUT_OF_RANGE) + list(IMPOSSIBLE))
def test_a_bad_value_or_combination_fails_the_job_before_the_model_is_built(case, run_job) -> None:
    overrides, names, valid = {**OUT_OF_RANGE, **IMPOSSIBLE}[case]
    outcome = run_job([*JOB, *overrides])
    verdict(outcome, status=1, names=names, valid=valid, run="FAILED")
    assert "weights" not in outcome.runs[0]["tags"]  # refused before the model stage logged its tags


def test_a_missing_mandatory_value_is_named(run_job) -> None:
    verdict(run_job([*JOB, "data=coco"]), status=2, names=["data.root has no value"], valid=["add data.root=..."], run=None)


def test_a_negative_timeout_is_refused_before_the_job_starts(run_job) -> None:
    verdict(run_job([*JOB, "sweep.timeout_s=-5"]), status=1, names=["sweep.timeout_s=-5"], valid=["positive or null"], run=None)


def test_detect_without_a_source_says_what_it_needs(run_job) -> None:
    verdict(run_job([*JOB, "task=detect"]), status=1, names=["task=detect"], valid=["source=<image file or folder>"], run=None)


CLI = {
    "unknown-key": (UNKNOWN_KEY["misspelt-nested-key"], 2, None),
    "wrong-type": (WRONG_TYPE["conf-thres-word"], 2, None),
    "out-of-range": (OUT_OF_RANGE["eval-conf-thres-2"], 1, "FAILED"),
    "impossible": (IMPOSSIBLE["focus-to-conv-on-v6"], 1, "FAILED"),
}


@pytest.fixture(scope="module")
def on_the_command_line(template_store: Path, tmp_path_factory) -> dict[str, Outcome]:
    """The four commands side by side: each spends most of its time importing."""
    started = {case: Command(tmp_path_factory.mktemp(case), template_store, [*JOB, *CLI[case][0][0]]) for case in CLI}
    return {case: command.outcome() for case, command in started.items()}


@pytest.mark.parametrize("case", list(CLI), ids=list(CLI))
def test_one_bad_config_of_each_kind_on_the_command_line(case, on_the_command_line) -> None:
    (_, names, valid), status, run = CLI[case]
    outcome = on_the_command_line[case]
    verdict(outcome, status=status, names=names, valid=valid, run=run)
    assert outcome.stderr.strip().splitlines() == [outcome.message]  # nothing else on stderr
