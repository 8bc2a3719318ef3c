"""task=time_engine: an engine timed alone, with its plain API, in a fresh process.

``source=<file>``: an ONNX file (ONNX Runtime), a TorchScript archive or a ``torch.export`` package
(torch), e.g. the ``offline_model`` artifact of a job or ``task=export``'s file. ``source=null``: the
model group's torch module as ``cpu_reference`` runs it (weights from ``model.weights``, transforms
applied), eager. The input is a batch of the job's own images (``data``), pre-processed as for
evaluation, ``bench.batch_size`` of them; ``bench.warmup``, ``bench.iters`` and ``bench.rounds`` as
for a job, threads from ``backend.threads``. Recorded as a run with ``fps``, latencies, peak memory
and the conditions, tagged ``timing=engine_alone``, so it sits in a report beside the workbench's
own figure for the same engine.
"""

from __future__ import annotations

from omegaconf import DictConfig

from yolomlu.backends.engines import EngineSpec, spec_for_file
from yolomlu.evaluate.conditions import pool
from yolomlu.evaluate.pipeline import preprocess
from yolomlu.evaluate.timed import split_iterations, time_alone
from yolomlu.tasks import common
from yolomlu.tasks.sweep import parent_run_id
from yolomlu.tracking import flatten_params, job_run


def engine_spec(cfg: DictConfig) -> EngineSpec:
    threads = cfg.backend.get("threads")
    if cfg.source is not None:
        return spec_for_file(cfg.source, threads=threads, device=cfg.backend.get("device", "cpu"))
    loaded = common.build_transformed(cfg)
    dtype = "bfloat16" if cfg.backend.get("half") else "float32"
    return EngineSpec("module", module=loaded.model, threads=threads, dtype=dtype, img_size=cfg.img_size)


def time_engine_task(cfg: DictConfig) -> dict[str, float]:
    settings = common.tracking_settings(cfg)
    spec = engine_spec(cfg)
    b = cfg.bench
    dataset = common.load_dataset(cfg)
    images = [dataset.load_image(i) for i in dataset.image_ids[: b.batch_size]]
    batch = preprocess([images[i % len(images)] for i in range(b.batch_size)], cfg.img_size)[0]
    name = f"alone-{spec.path.name if spec.path is not None else cfg.model.name}-bs{b.batch_size}"
    tags = {
        "task": "time_engine",
        "timing": "engine_alone",
        "variant": common.variant_name(cfg),
        "config_hash": common.config_hash(cfg),
        "baseline": str(cfg.baseline).lower(),
        "engine": spec.describe(),
        "source": str(cfg.source) if cfg.source is not None else f"model={cfg.model.name} (eager torch module)",
        "accuracy": "not_measured",
        "accuracy_reason": "task=time_engine times the engine only",
        **common.environment_tags(),
    }
    with job_run(settings, name, tags=tags, parent_run_id=parent_run_id()) as run:
        run.log_params(flatten_params(common.to_plain(cfg)))
        timing = None
        for iterations in split_iterations(b.iters, b.rounds):
            got = time_alone(spec, batch, b.warmup, iterations)
            timing = got if timing is None else timing.pooled(got)
        alone = timing.metrics()
        conditions = pool(timing.conditions)
        metrics = {
            "fps": alone["alone_fps"],
            "latency_ms_p50": alone["alone_latency_ms_p50"],
            "latency_ms_p90": alone["alone_latency_ms_p90"],
            "peak_rss_mb": alone["alone_peak_rss_mb"],
            **conditions.metrics(),
        }
        run.set_tags({**conditions.tags(), "bench.batch_size": b.batch_size, "img_size": cfg.img_size, "timing.rounds": b.rounds})
        run.log_metrics(metrics)
    out = common.log_stream()
    print(f"[yolomlu] {spec.describe()}, batch {b.batch_size}, alone in a fresh process:", file=out)
    for key in ("fps", "latency_ms_p50", "latency_ms_p90", "peak_rss_mb", "cond_others_cores", "cond_steal_pct"):
        if key in metrics:
            print(f"  {key:>18}: {metrics[key]:.4g}", file=out)
    if conditions.contended:
        print(f"  contended: {'; '.join(conditions.reasons)}", file=out)
    return metrics
