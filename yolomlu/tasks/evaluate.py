"""task=evaluate: one port-and-evaluate job, recorded as one MLflow run.

config -> build model -> transforms -> port to backend -> parity -> evaluate -> benchmark ->
profile -> log. The run is opened first, so a job that fails anywhere is recorded as FAILED with
its error; a stage that is off is logged as off, never faked.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from yolomlu.data.categories import category_ids_for_model
from yolomlu.evaluate.coco_eval import evaluate_coco
from yolomlu.evaluate.layer_profile import profile_figure, profile_frame
from yolomlu.backends import runner_class
from yolomlu.evaluate.parity import box_agreement, max_abs_difference
from yolomlu.evaluate.pipeline import postprocess, preprocess
from yolomlu.evaluate.predict import predict_dataset
from yolomlu.evaluate.speed import benchmark
from yolomlu.model.summary import summarize
from yolomlu.tasks import common, quant_stage
from yolomlu.tasks.sweep import parent_run_id
from yolomlu.tracking import find_finished_run, flatten_params, job_run, reuse_run
from yolomlu.transforms import apply_transforms


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the job described by ``cfg``; return the metrics it logged."""
    settings = common.tracking_settings(cfg)
    name = common.run_name(cfg)
    digest = common.config_hash(cfg)
    parent = parent_run_id()
    env = common.environment_tags()
    if parent and not cfg.sweep.rerun:
        # Only a result this code measured on this machine with this torch stands for this job.
        same = {key: env[key] for key in ("code_hash", "host", "torch")}
        previous = find_finished_run(settings, digest, same=same)
        if previous:
            # The job's own marks win over the copied ones: config_hash ignores them.
            own = {"baseline": str(cfg.baseline).lower(), "variant": common.variant_name(cfg)}
            reuse_run(settings, previous, name, parent_run_id=parent, tags=own)
            print(
                f"[yolomlu] {name}: reused run {previous} (same config_hash {digest}, code, host and torch; "
                "sweep.rerun=true measures again)",
                file=common.log_stream(),
            )
            return {}
    tags = {
        "task": "evaluate",
        "variant": common.variant_name(cfg),
        "config_hash": digest,
        "baseline": str(cfg.baseline).lower(),
        **env,
    }
    with job_run(settings, name, tags=tags, parent_run_id=parent) as run:
        metrics = _run_job(cfg, run)
    _print_metrics(name, metrics)
    return metrics


def _run_job(cfg: DictConfig, run) -> dict[str, float]:
    plain = common.to_plain(cfg)
    run.log_params(flatten_params(plain))
    run.log_dict(plain, "config.yaml")
    common.validate_config(cfg)
    metrics: dict[str, float] = {}

    loaded = common.build_model(cfg)
    run.set_tags({"weights": loaded.weights or "random-init"})
    dataset = common.load_dataset(cfg)
    run.set_tags({"dataset_fingerprint": dataset.fingerprint(), "dataset": cfg.data.name})
    run.log_dict(common.describe_dataset(dataset), "dataset_stats.json")
    category_ids = category_ids_for_model(dataset.categories, loaded.model.nc)

    # Real images for the equivalence checks; the untransformed fp32 eager model is the reference.
    n_check = min(cfg.eval.parity_images, len(dataset))
    check, check_infos = preprocess([dataset.load_image(i) for i in dataset.image_ids[:n_check]], cfg.img_size) if n_check else (None, [])
    reference = _forward(loaded.model, check) if check is not None else None

    reports = apply_transforms(loaded.model, common.transform_names(cfg), check)
    common.require_effect(reports, cfg)
    for report in reports:
        run.set_tags({f"transform.{report.name}.replaced": report.replaced})
        if report.parity_max_abs is not None:
            metrics[f"parity_{report.name}"] = report.parity_max_abs
    summary = summarize(loaded.model, img_size=640)  # YOLOv5 reports GFLOPs at 640
    metrics.update(params=summary.params, gflops=summary.gflops, layers=summary.layers, model_mb=common.model_mb(loaded.model))
    head = common.detect_head(loaded.model)

    quant = quant_stage.settings_of(cfg)
    runner_model, emulated, calibration = loaded.model, None, None
    if quant.enabled and runner_class(cfg.backend.name).quantizes_itself:
        calibration = quant_stage.calibration_batches(cfg, dataset, quant)
    elif quant.enabled:
        emulated = quant_stage.emulate(cfg, loaded.model, dataset, check, run, metrics)
        runner_model = emulated.model

    runner = common.make_runner(cfg, runner_model)
    if calibration is not None:
        runner.set_calibration(calibration)  # before activate: the backend quantizes while activating
    with runner:
        # The size of what runs: activating may have cast the weights (half precision).
        metrics["model_mb"] = common.model_mb(runner_model)
        if reference is not None:
            _parity(cfg, runner, reference, check, check_infos, head, metrics, run)
        if cfg.eval.enabled and not loaded.trained:
            # Random weights: any mAP would be noise. Say so instead of logging a number.
            run.set_tags({"accuracy": "not_measured", "accuracy_reason": "untrained (random) weights"})
        elif cfg.eval.enabled:
            result = _accuracy(cfg, runner, dataset, head, category_ids)
            metrics.update(result.metrics, n_detections=result.n_detections)
            run.set_tags({"accuracy": "measured", "eval_images": len(dataset)})
            run.log_table(result.per_class, "per_class_ap.json")
            run.log_text(result.per_class.to_csv(index=False), "per_class_ap.csv")
            run.log_text(result.summary, "coco_eval.txt")
        else:
            run.set_tags({"accuracy": "not_measured", "accuracy_reason": "eval.enabled=false"})

        b = cfg.bench
        images = [dataset.load_image(i) for i in dataset.image_ids[: max(b.batch_size, 8)]]
        if b.enabled:
            stats = benchmark(runner, images, cfg.img_size, b.batch_size, b.warmup, b.iters, head, common.bench_nms(cfg))
            metrics.update(stats.metrics())
            if (device_mb := runner.device_memory_mb()) is not None:
                metrics["gpu_mem_mb"] = device_mb
            on_device = runner.detection_buffer is not None
            run.set_tags(
                {
                    "bench.nms_in_timing": "true (decode + NMS on the device)" if on_device
                    else "false (fps counts inference; e2e_fps adds pre-process and NMS)",
                    "bench.batch_size": b.batch_size,
                    "bench.warmup": b.warmup,
                    "bench.iters": b.iters,
                    "img_size": cfg.img_size,
                }
            )
        if b.profile:
            batch = preprocess([images[i % len(images)] for i in range(b.batch_size)], cfg.img_size)[0]
            frame = profile_frame(runner.profile(batch))
            run.log_table(frame, "layer_profile.json")
            run.log_text(frame.to_csv(index=False), "layer_profile.csv")
            run.log_figure(profile_figure(frame, f"{common.variant_name(cfg)}: bs{b.batch_size}, {cfg.img_size}px"), "layer_profile.png")
        evidence = runner.evidence()
        run.set_tags(evidence)
        if "backend.quantized_nodes" in evidence:
            metrics["quant_layers"] = float(evidence["backend.quantized_nodes"])
        if getattr(runner, "artifact", None) is not None:
            run.log_artifact(runner.artifact, "offline_model")
            # model_mb is the size of what the backend runs: here the file (an int8 .onnx is smaller).
            metrics["artifact_mb"] = metrics["model_mb"] = runner.artifact.stat().st_size / 2**20

    if emulated is not None and emulated.fallback_layers and cfg.eval.enabled and loaded.trained:
        # The k most sensitive layers back in float, same scales: how much mAP do they cost?
        fallback = quant_stage.with_float_fallback(loaded.model, emulated)
        with common.make_runner(cfg, fallback) as runner:
            result = _accuracy(cfg, runner, dataset, head, category_ids)
        metrics["fallback_map50_95"] = result.metrics["map50_95"]
        metrics["fallback_recovered_map50_95"] = result.metrics["map50_95"] - metrics["map50_95"]
        run.set_tags({"quant.fallback_layers": ",".join(emulated.fallback_layers)})
    run.log_metrics(metrics)
    return metrics


def _accuracy(cfg: DictConfig, runner, dataset, head, category_ids):
    predictions = predict_dataset(runner, dataset, cfg.img_size, cfg.eval.batch_size, head, common.eval_nms(cfg))
    return evaluate_coco(dataset.ann_file, predictions, category_ids)


def _parity(cfg, runner, reference, check, infos, head, metrics, run) -> None:
    """How far the variant is from the fp32 eager reference on the same images: raw outputs
    (``parity_max_abs``) and boxes after NMS at the speed-mode thresholds (``parity_box_agreement``)."""
    nms = common.bench_nms(cfg)  # at eval's conf 0.001 the boxes are mostly noise
    outputs = runner.infer(check)
    if runner.detection_buffer is None:
        metrics["parity_max_abs"] = max_abs_difference(reference, outputs)
    ref_boxes = postprocess(reference, head, nms, infos)
    got_boxes = postprocess(outputs, head, nms, infos, runner.detection_buffer)
    metrics["parity_box_agreement"] = box_agreement(ref_boxes, got_boxes, iou=0.5)
    run.set_tags({"parity.images": len(infos), "parity.conf_thres": nms.conf_thres, "parity.iou_thres": nms.iou_thres})


@torch.no_grad()
def _forward(model: torch.nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    return [y.float() for y in model.eval()(batch)]


def _print_metrics(name: str, metrics: dict[str, float]) -> None:
    out = common.log_stream()
    print(f"[yolomlu] {name}", file=out)
    keys = (
        "map50_95", "map50", "fps", "latency_ms_p50", "e2e_fps", "device_fps", "peak_rss_mb", "gpu_mem_mb",
        "parity_max_abs", "parity_box_agreement", "quant_layers", "sqnr_mean_db", "params", "gflops",
    )  # fmt: skip
    for key in keys:
        if key in metrics:
            print(f"  {key:>16}: {metrics[key]:.4g}", file=out)
