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
from yolomlu.evaluate.pipeline import preprocess
from yolomlu.evaluate.predict import predict_dataset
from yolomlu.evaluate.speed import benchmark
from yolomlu.model.summary import summarize
from yolomlu.tasks import common
from yolomlu.tasks.sweep import parent_run_id
from yolomlu.tracking import find_finished_run, flatten_params, job_run, reuse_run
from yolomlu.transforms import apply_transforms


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the job described by ``cfg``; return the metrics it logged."""
    settings = common.tracking_settings(cfg)
    name = common.run_name(cfg)
    digest = common.config_hash(cfg)
    parent = parent_run_id()
    if parent and not cfg.sweep.rerun:
        previous = find_finished_run(settings, digest)
        if previous:
            # The job's own marks win over the copied ones: config_hash ignores them.
            own = {"baseline": str(cfg.baseline).lower(), "variant": common.variant_name(cfg)}
            reuse_run(settings, previous, name, parent_run_id=parent, tags=own)
            print(f"[yolomlu] {name}: reused run {previous} (same config_hash {digest}; sweep.rerun=true measures again)", file=common.log_stream())
            return {}
    tags = {
        "task": "evaluate",
        "variant": common.variant_name(cfg),
        "config_hash": digest,
        "baseline": str(cfg.baseline).lower(),
        **common.environment_tags(),
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
    check = preprocess([dataset.load_image(i) for i in dataset.image_ids[:n_check]], cfg.img_size)[0] if n_check else None
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

    with common.make_runner(cfg, loaded.model) as runner:
        if reference is not None:
            outputs = runner.infer(check)
            metrics["parity_max_abs"] = max(float((a - b).abs().max()) for a, b in zip(reference, outputs))
        if cfg.eval.enabled and not loaded.trained:
            # Random weights: any mAP would be noise. Say so instead of logging a number.
            run.set_tags({"accuracy": "not_measured", "accuracy_reason": "untrained (random) weights"})
        elif cfg.eval.enabled:
            predictions = predict_dataset(runner, dataset, cfg.img_size, cfg.eval.batch_size, head, common.eval_nms(cfg))
            result = evaluate_coco(dataset.ann_file, predictions, category_ids)
            metrics.update(result.metrics, n_detections=result.n_detections)
            run.set_tags({"accuracy": "measured", "eval_images": len(predictions)})
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
            run.set_tags(
                {
                    "bench.nms_in_timing": "false (fps counts inference; e2e_fps adds pre-process and NMS)",
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
        run.set_tags(runner.evidence())
        if getattr(runner, "artifact", None) is not None:
            run.log_artifact(runner.artifact, "offline_model")
            metrics["artifact_mb"] = runner.artifact.stat().st_size / 2**20
    run.log_metrics(metrics)
    return metrics


@torch.no_grad()
def _forward(model: torch.nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    return [y.float() for y in model.eval()(batch)]


def _print_metrics(name: str, metrics: dict[str, float]) -> None:
    out = common.log_stream()
    print(f"[yolomlu] {name}", file=out)
    for key in ("map50_95", "map50", "fps", "latency_ms_p50", "e2e_fps", "peak_rss_mb", "parity_max_abs", "params", "gflops"):
        if key in metrics:
            print(f"  {key:>16}: {metrics[key]:.4g}", file=out)
