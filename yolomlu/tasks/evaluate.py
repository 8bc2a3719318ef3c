"""task=evaluate: one port-and-evaluate job, recorded as one MLflow run.

config -> build model -> transforms -> port to backend -> evaluate -> benchmark -> log.
The run is opened first, so a job that fails anywhere is recorded as FAILED with its error.
"""

from __future__ import annotations

from omegaconf import DictConfig

from yolomlu.data.categories import category_ids_for_model
from yolomlu.evaluate.coco_eval import evaluate_coco
from yolomlu.evaluate.predict import predict_dataset
from yolomlu.evaluate.speed import benchmark
from yolomlu.model.summary import summarize
from yolomlu.tasks import common
from yolomlu.tasks.sweep import parent_run_id
from yolomlu.tracking import find_finished_run, flatten_params, job_run, reuse_run


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the job described by ``cfg``; return the metrics it logged."""
    settings = common.tracking_settings(cfg)
    plain = common.to_plain(cfg)
    name = common.run_name(cfg)
    digest = common.config_hash(cfg)
    parent = parent_run_id()
    if parent and not cfg.sweep.rerun:
        previous = find_finished_run(settings, digest)
        if previous:
            reuse_run(settings, previous, name, parent_run_id=parent)
            print(f"[yolomlu] {name}: reused run {previous} (same config_hash {digest}; sweep.rerun=true measures again)", file=common.log_stream())
            return {}
    tags = {"task": "evaluate", "config_hash": digest, "baseline": str(cfg.baseline).lower(), **common.environment_tags()}
    metrics: dict[str, float] = {}
    with job_run(settings, name, tags=tags, parent_run_id=parent) as run:
        run.log_params(flatten_params(plain))
        run.log_dict(plain, "config.yaml")
        common.validate_config(cfg)

        loaded = common.build_model(cfg)
        summary = summarize(loaded.model, img_size=640)
        metrics.update(
            params=summary.params, gflops=summary.gflops, layers=summary.layers, model_mb=common.model_mb(loaded.model)
        )
        run.set_tags({"weights": loaded.weights or "random-init"})

        dataset = common.load_dataset(cfg)
        run.set_tags({"dataset_fingerprint": dataset.fingerprint(), "dataset": cfg.data.name})
        run.log_dict(common.describe_dataset(dataset), "dataset_stats.json")
        category_ids = category_ids_for_model(dataset.categories, loaded.model.detect.nc)
        head = common.detect_head(loaded.model)

        with common.make_runner(cfg, loaded.model) as runner:
            run.set_tags(runner.evidence())
            if cfg.eval.enabled and not loaded.trained:
                # Random weights: any mAP would be noise. Say so instead of logging a number.
                run.set_tags({"accuracy": "not_measured", "accuracy_reason": "untrained (random) weights"})
            elif cfg.eval.enabled:
                nms = common.eval_nms(cfg)
                predictions = predict_dataset(runner, dataset, cfg.img_size, cfg.eval.batch_size, head, nms)
                result = evaluate_coco(dataset.ann_file, predictions, category_ids)
                metrics.update(result.metrics)
                metrics["n_detections"] = result.n_detections
                run.set_tags({"accuracy": "measured", "eval_images": len(predictions)})
                run.log_table(result.per_class, "per_class_ap.json")
                run.log_text(result.per_class.to_csv(index=False), "per_class_ap.csv")
                run.log_text(result.summary, "coco_eval.txt")
            if cfg.bench.enabled:
                b = cfg.bench
                images = [dataset.load_image(i) for i in dataset.image_ids[: max(b.batch_size, 8)]]
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
        run.log_metrics(metrics)
    _print_metrics(name, metrics)
    return metrics


def _print_metrics(name: str, metrics: dict[str, float]) -> None:
    out = common.log_stream()
    print(f"[yolomlu] {name}", file=out)
    for key in ("map50_95", "map50", "fps", "latency_ms_p50", "e2e_fps", "peak_rss_mb", "params", "gflops"):
        if key in metrics:
            print(f"  {key:>16}: {metrics[key]:.4g}", file=out)
