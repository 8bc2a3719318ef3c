"""task=evaluate: one port-and-evaluate job, recorded as one MLflow run.

config -> model and data -> transforms -> quantize -> port to backend -> parity -> accuracy ->
timing (benchmark + layer profile, in a fresh process) -> float fallback. The run is opened first,
so a job that fails anywhere is recorded as FAILED with its error; each stage returns a
``StageResult`` that is logged as soon as the stage ends, so what was measured before a failure
stays. A stage that is off is logged as off, never faked.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from yolomlu import quant as q
from yolomlu.backends import Runner, runner_class
from yolomlu.backends.engines import EngineSpec
from yolomlu.data.categories import category_ids_for_model
from yolomlu.data.coco import CocoDataset
from yolomlu.evaluate.coco_eval import evaluate_coco
from yolomlu.evaluate.layer_profile import profile_figure, profile_frame
from yolomlu.evaluate.parity import box_agreement, max_abs_difference
from yolomlu.evaluate.pipeline import DetectHead, device_nms, postprocess, preprocess
from yolomlu.evaluate.predict import predict_dataset
from yolomlu.evaluate.conditions import pool
from yolomlu.evaluate.timed import BenchPlan, split_iterations, time_alone, time_in_fresh_process, time_runner
from yolomlu.model.summary import summarize
from yolomlu.tasks import budget, common, quant_stage, registered
from yolomlu.tasks.stages import StageResult, record
from yolomlu.tasks.jobs import run_tags_from_env
from yolomlu.tasks.sweep import parent_run_id, sweep_key
from yolomlu.tracking import close_dead_runs, find_finished_run, flatten_params, job_run, reuse_run
from yolomlu.transforms import apply_transforms

REUSE_MODES = ("sweep", "any")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the job described by ``cfg``; return the metrics it logged."""
    cfg, registered_tags = registered.adopt(cfg)  # model.weights=models:/...: the registered port
    settings = common.tracking_settings(cfg)
    parent = parent_run_id()
    name = common.run_name(cfg, in_sweep=parent is not None)
    for closed in close_dead_runs(settings, finder=f"the job {name}"):  # runs left RUNNING by dead processes
        print(f"[yolomlu] {closed}", file=common.log_stream())
    variant = common.variant_name(cfg)
    digest = common.config_hash(cfg)
    env = common.environment_tags()
    key = sweep_key()
    own = {"baseline": str(cfg.baseline).lower(), "variant": variant, **registered_tags, **run_tags_from_env()}
    if parent and not cfg.sweep.rerun:
        previous = _reusable(cfg, settings, digest, env, key)
        if previous:
            # The job's own marks win over the copied ones: config_hash ignores them.
            reuse_run(settings, previous, name, parent_run_id=parent, tags={**own, **({"sweep_key": key} if key else {})})
            print(
                f"[yolomlu] {name}: reused run {previous} (same config_hash {digest}, "
                f"{'same sweep' if cfg.sweep.reuse == 'sweep' else 'same code, host and torch'}; "
                "sweep.rerun=true measures again)",
                file=common.log_stream(),
            )
            return {}
    tags = {"task": "evaluate", "config_hash": digest, **own, **env}
    if key:
        tags["sweep_key"] = key
    with job_run(settings, name, tags=tags, parent_run_id=parent) as run:
        metrics = _run_job(cfg, run)
    _print_metrics(name, metrics)
    return metrics


def _reusable(cfg: DictConfig, settings, digest: str, env: dict[str, str], key: str | None) -> str | None:
    """The finished, uncontended run this job may stand on instead of measuring again.

    sweep.reuse=sweep (default): only a run of this same sweep (an interrupted or repeated run of
    the same preset and overrides, by the same code on the same host with the same torch: the
    sweep key says all that). sweep.reuse=any: any run of this config by the same code, host and
    torch, a standalone job or another sweep's included.
    """
    mode = common.choose(cfg.sweep.reuse, REUSE_MODES, "sweep.reuse")
    same = {k: env[k] for k in ("code_hash", "host", "torch")}
    if mode == "sweep":
        if not key:
            return None
        same["sweep_key"] = key
    return find_finished_run(settings, digest, same=same)


@dataclass
class _Job:
    """What the stages hand on to each other."""

    cfg: DictConfig
    model: torch.nn.Module
    trained: bool
    dataset: CocoDataset
    category_ids: list[int]
    head: DetectHead | None = None
    check: torch.Tensor | None = None  # real images for the equivalence checks, [n, 3, S, S]
    check_infos: list | None = None
    reference: list[torch.Tensor] | None = None  # the untransformed fp32 eager model's outputs on them


def _run_job(cfg: DictConfig, run) -> dict[str, float]:
    metrics: dict[str, float] = {}
    plain = common.to_plain(cfg)
    run.log_params(flatten_params(plain))
    run.log_dict(plain, "config.yaml")
    common.validate_config(cfg)

    job, result = _model_and_data(cfg)
    record(run, result, metrics)
    record(run, _transforms(job), metrics)
    settings = quant_stage.settings_of(cfg)
    if settings.enabled and settings.max_drop is not None:
        settings, result = _accuracy_budget(job, settings)
        record(run, result, metrics)
    unfolded = common.bn_unfolded_for_quant(cfg)
    quantized, result = quant_stage.quantize(cfg, job.model, job.dataset, job.check, unfolded=unfolded, settings=settings)
    record(run, result, metrics)

    runner = common.make_runner(cfg, quantized.model)
    if quantized.calibration is not None:
        runner.set_quantization(quantized.settings, quantized.calibration)  # it quantizes while activating
    with runner:
        record(run, _port(runner, quantized.model), metrics)
        if job.reference is not None:
            record(run, _parity(job, runner), metrics)
        record(run, _accuracy(job, runner), metrics)
        timed = cfg.bench.enabled or cfg.bench.profile
        twin = runner.timing_twin() if timed else None
        alone = runner.standalone_engine() if cfg.bench.enabled and cfg.bench.engine_alone else None
        if timed and twin is None:
            record(run, _timing(job, runner, None, alone), metrics)  # its batches run in a process of its own
        record(run, StageResult(tags=runner.evidence()), metrics)
    if twin is not None:
        record(run, _timing(job, runner, twin, alone), metrics)
    if quantized.fallback_layers and cfg.eval.enabled and job.trained:
        record(run, _fallback(job, quantized, metrics.get("map50_95")), metrics)
    return metrics


# -- stages ------------------------------------------------------------------------------------
def _model_and_data(cfg: DictConfig) -> tuple[_Job, StageResult]:
    loaded = common.build_model(cfg)
    dataset = common.load_dataset(cfg)
    job = _Job(cfg, loaded.model, loaded.trained, dataset, category_ids_for_model(dataset.categories, loaded.model.nc))
    n_check = min(cfg.eval.parity_images, len(dataset))
    if n_check:
        job.check, job.check_infos = preprocess([dataset.load_image(i) for i in dataset.image_ids[:n_check]], cfg.img_size)
        job.reference = _forward(loaded.model, job.check)
    tags = {"weights": loaded.weights or "random-init", "dataset_fingerprint": dataset.fingerprint(), "dataset": cfg.data.name}
    return job, StageResult(tags=tags, dicts={"dataset_stats.json": common.describe_dataset(dataset)})


def _transforms(job: _Job) -> StageResult:
    cfg = job.cfg
    names = common.transform_names(cfg)
    reports = apply_transforms(job.model, names, job.check)
    common.require_effect(reports, cfg)
    result = StageResult()
    for report in reports:
        result.tags[f"transform.{report.name}.replaced"] = report.replaced
        if report.parity_max_abs is not None:
            result.metrics[f"parity_{report.name}"] = report.parity_max_abs
    if cfg.transforms.fuse and "fuse" not in names:
        result.tags["transform.fuse"] = "not applied: the quantizer sees BatchNorm unfolded, as quantize_dynamic_mlu does"
    summary = summarize(job.model, img_size=640)  # YOLOv5 reports GFLOPs at 640
    result.metrics.update(params=summary.params, gflops=summary.gflops, layers=summary.layers)
    job.head = common.detect_head(job.model)
    return result


def _port(runner: Runner, model: torch.nn.Module) -> StageResult:
    # The size of what runs: activating may have cast the weights (half precision) or written a
    # file (an int8 .onnx is smaller than the module).
    result = StageResult(metrics={"model_mb": common.model_mb(model)}, tags=runner.evidence())
    if runner.artifact is not None:
        files = [runner.artifact, *([runner.artifact.with_suffix(".bin")] if runner.artifact.suffix == ".xml" else [])]
        result.artifacts += [(f, "offline_model") for f in files]  # an OpenVINO IR is its .xml and .bin
        result.metrics["artifact_mb"] = result.metrics["model_mb"] = sum(f.stat().st_size for f in files) / 2**20
    if (layers := runner.quantized_layers()) is not None:
        result.metrics["quant_layers"] = float(layers)
    return result


def _parity(job: _Job, runner: Runner) -> StageResult:
    """How far the variant is from the fp32 eager reference on the same images: raw outputs
    (``parity_max_abs``) and boxes after NMS (``parity_box_agreement``) at the speed-mode
    thresholds, or at the thresholds a device's own decode + NMS was compiled with."""
    buffer = runner.detection_buffer
    nms = common.bench_nms(job.cfg) if buffer is None else device_nms(buffer)
    outputs = runner.infer(job.check)
    result = StageResult()
    if buffer is None:
        result.metrics["parity_max_abs"] = max_abs_difference(job.reference, outputs)
    ref_boxes = postprocess(job.reference, job.head, nms, job.check_infos)
    got_boxes = postprocess(outputs, job.head, nms, job.check_infos, buffer)
    result.metrics["parity_box_agreement"] = box_agreement(ref_boxes, got_boxes, iou=0.5)
    result.tags = {"parity.images": len(job.check_infos), "parity.conf_thres": nms.conf_thres, "parity.iou_thres": nms.iou_thres}
    return result


def _accuracy(job: _Job, runner: Runner) -> StageResult:
    cfg = job.cfg
    if not cfg.eval.enabled:
        return StageResult(tags={"accuracy": "not_measured", "accuracy_reason": "eval.enabled=false"})
    if not job.trained:
        # Random weights: any mAP would be noise. Say so instead of logging a number.
        return StageResult(tags={"accuracy": "not_measured", "accuracy_reason": "untrained (random) weights"})
    caveat = runner.accuracy_caveat()
    if caveat:
        return StageResult(tags={"accuracy": "not_measured", "accuracy_reason": caveat})
    coco = _coco(job, runner)
    # A stand-in that emulates the device predicts its accuracy: logged as that, never as measured.
    predicted = runner.accuracy_prediction()
    how = {"accuracy": predicted[0], "accuracy_reason": predicted[1]} if predicted else {"accuracy": "measured"}
    result = StageResult(
        metrics={**coco.metrics, "n_detections": coco.n_detections},
        tags={**how, "eval_images": len(job.dataset)},
        tables={"per_class_ap.json": coco.per_class},
        texts={"per_class_ap.csv": coco.per_class.to_csv(index=False), "coco_eval.txt": coco.summary},
    )
    return result


def _coco(job: _Job, runner: Runner):
    cfg = job.cfg
    predictions = predict_dataset(runner, job.dataset, cfg.img_size, cfg.eval.batch_size, job.head, common.eval_nms(cfg))
    return evaluate_coco(job.dataset.ann_file, predictions, job.category_ids)


def _accuracy_budget(job: _Job, settings):
    """``quant.max_drop``: the fewest most-sensitive layers to keep in float (``tasks.budget``), each
    step measured on the job's backend; returns the settings with them added to ``mixed_layer``."""
    cfg = job.cfg
    if not (cfg.eval.enabled and job.trained) or job.check is None:
        raise ValueError(
            f"quant.max_drop={settings.max_drop} needs an accuracy to keep within the budget: trained weights, "
            "eval.enabled=true and eval.parity_images > 0 (the sensitivity ranking uses them)"
        )
    with runner_class("torch")(job.model) as reference:
        float_map = _coco(job, reference).metrics["map50_95"]
    batches, _ = quant_stage.calibration_batches(cfg, job.dataset, settings)
    check = job.check[: max(settings.sensitivity_images, 1)]
    ranking = budget.sensitivity_ranking(job.model, batches, settings, check)
    quantizes_itself = runner_class(cfg.backend.name).quantizes_itself
    scales = None if quantizes_itself else q.calibrate(job.model, batches, settings.qconfig)

    def measure(layers: list[str]) -> tuple[float, float | None]:
        trial = _with_float_layers(settings, layers)
        if quantizes_itself:
            runner = common.make_runner(cfg, job.model)
            runner.set_quantization(trial, batches)
        else:
            model = copy.deepcopy(job.model)
            q.quantize_model(model, scales, trial.qconfig)
            q.emulate_float_precision(model, trial.target_float_dtype)
            runner = common.make_runner(cfg, model)
        with runner:
            score = _coco(job, runner).metrics["map50_95"]
            twin = runner.timing_twin() if quantizes_itself and cfg.bench.enabled else None
        if twin is None:
            return score, None  # an emulated model's speed is not the device's: not measured
        plan = BenchPlan(cfg.img_size, cfg.bench.batch_size, cfg.bench.warmup, cfg.bench.iters, job.head, common.bench_nms(cfg))
        return score, time_in_fresh_process(twin, _bench_images(job), plan).timings.stats().fps

    found = budget.search(settings.max_drop, float_map, ranking, measure)
    return _with_float_layers(settings, found.layers), budget.stage_result(found, settings.max_drop, settings.qconfig.mixed_layer)


def _with_float_layers(settings, layers: list[str]):
    """``settings`` with ``layers`` added to its qconfig's mixed_layer."""
    qc = dataclasses.replace(settings.qconfig, mixed_layer=tuple(settings.qconfig.mixed_layer) + tuple(layers))
    return dataclasses.replace(settings, qconfig=qc)


def _bench_images(job: _Job) -> list:
    ids = job.dataset.image_ids[: max(job.cfg.bench.batch_size, 8)]
    return [job.dataset.load_image(i) for i in ids]


def _timing(job: _Job, runner: Runner, twin: Runner | None, alone: EngineSpec | None) -> StageResult:
    """Benchmark and layer profile: in a fresh process on ``twin`` (the same engine, reopened), or
    here on ``runner`` when its batches already run in a worker process of its own (no twin).

    ``bench.rounds`` > 1 splits the timed iterations into rounds, each in a fresh process; with
    ``bench.engine_alone`` each round is followed by one of the engine alone (``alone``, its plain
    API, another fresh process), so a machine whose speed drifts over a minute moves both figures
    alike and their ratio stays honest.
    """
    cfg, b = job.cfg, job.cfg.bench
    images = _bench_images(job)
    plan = BenchPlan(cfg.img_size, b.batch_size, b.warmup, b.iters, job.head, common.bench_nms(cfg))
    alone_batch = preprocess([images[i % len(images)] for i in range(b.batch_size)], cfg.img_size)[0]
    rounds = split_iterations(b.iters, b.rounds) if b.enabled else [b.iters]
    timings = alone_timing = profile = memory = None
    facts: dict = {}
    for r, iterations in enumerate(rounds):
        round_plan = dataclasses.replace(plan, iterations=iterations, profile=b.profile and r == len(rounds) - 1)
        if twin is None:
            timed = time_runner(runner, images, round_plan, b.enabled)
        else:
            timed = time_in_fresh_process(twin, images, round_plan, b.enabled)
        facts = timed.facts
        profile = timed.profile or profile
        if timed.device_memory_mb is not None:
            memory = max(memory or 0.0, timed.device_memory_mb)
        if timed.timings is not None:
            timings = timed.timings if timings is None else timings.pooled(timed.timings)
        if alone is not None:
            got = time_alone(alone, alone_batch, b.warmup, iterations)
            alone_timing = got if alone_timing is None else alone_timing.pooled(got)
    if twin is None:
        facts["timing.process"] = f"the job's process: the {runner.name} backend runs its batches in a worker process of its own"
    result = StageResult(tags={**facts, "timing.rounds": len(rounds)})
    if timings is not None:
        conditions = timings.overall_conditions()
        result.metrics.update(timings.stats().metrics())
        result.metrics.update(conditions.metrics())
        result.tags.update(conditions.tags())
        if memory is not None:
            result.metrics["gpu_mem_mb"] = memory
        on_device = runner.detection_buffer is not None
        result.tags.update(
            {
                "bench.nms_in_timing": "true (decode + NMS on the device)" if on_device
                else "false (fps counts inference; e2e_fps adds pre-process and NMS)",
                "bench.batch_size": b.batch_size,
                "bench.warmup": b.warmup,
                "bench.iters": b.iters,
                "img_size": cfg.img_size,
            }
        )  # fmt: skip
    if b.enabled and b.engine_alone:
        if alone_timing is None:
            result.tags["alone"] = f"not timed: the {runner.name} backend has no plain-API counterpart here"
        else:
            result.metrics.update(alone_timing.metrics())
            result.metrics["alone_ratio"] = result.metrics["fps"] / result.metrics["alone_fps"]
            alone_tags = pool(alone_timing.conditions).tags()
            result.tags.update({"alone.engine": alone_timing.engine, **{f"alone.{k}": v for k, v in alone_tags.items()}})
    if profile is not None:
        frame = profile_frame(profile)
        result.tables["layer_profile.json"] = frame
        result.texts["layer_profile.csv"] = frame.to_csv(index=False)
        title = f"{common.variant_name(cfg)}: bs{b.batch_size}, {cfg.img_size}px"
        result.figures["layer_profile.png"] = profile_figure(frame, title)
    return result


def _fallback(job: _Job, quantized: quant_stage.Quantized, quant_map: float | None) -> StageResult:
    """The k most sensitive layers back in float, same scales: how much mAP do they cost?"""
    model = quantized.with_float_fallback()
    with common.make_runner(job.cfg, model) as runner:
        coco = _coco(job, runner)
    result = StageResult(metrics={"fallback_map50_95": coco.metrics["map50_95"]}, tags={"quant.fallback_layers": ",".join(quantized.fallback_layers)})
    if quant_map is not None:
        result.metrics["fallback_recovered_map50_95"] = coco.metrics["map50_95"] - quant_map
    return result


@torch.no_grad()
def _forward(model: torch.nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    return [y.float() for y in model.eval()(batch)]


def _print_metrics(name: str, metrics: dict[str, float]) -> None:
    out = common.log_stream()
    print(f"[yolomlu] {name}", file=out)
    keys = (
        "map50_95", "map50", "fps", "latency_ms_p50", "e2e_fps", "alone_fps", "device_fps", "peak_rss_mb", "gpu_mem_mb",
        "parity_max_abs", "parity_box_agreement", "quant_layers", "sqnr_mean_db", "params", "gflops",
    )  # fmt: skip
    for key in keys:
        if key in metrics:
            print(f"  {key:>16}: {metrics[key]:.4g}", file=out)
