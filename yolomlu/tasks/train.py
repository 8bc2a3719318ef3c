"""task=train: train a YOLOv5 on the synthetic shapes train split and save an fp16 checkpoint.

config (``train`` block, ``model`` group, ``data`` group for the val split) -> generate the train and
val splits -> train (EMA, per-epoch validation) -> save the EMA weights in fp16 -> reload the saved
file and evaluate it on the val split(s), so the reported accuracy is that of the file written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from yolomlu.data.coco import CocoDataset
from yolomlu.data.synthetic import SHAPE_CLASSES, ensure_shapes
from yolomlu.model import build_yolov5
from yolomlu.model.checkpoint import load_weights, save_state_dict
from yolomlu.tasks import common
from yolomlu.train import Augment, TrainSettings, evaluate_model, train

__all__ = ["train_job", "train_task", "train_settings"]


def train_job(cfg: DictConfig) -> dict[str, float]:
    """task=train as one tracked run: params, per-epoch metrics (step = epoch), the final metrics of
    the saved checkpoint, and the checkpoint itself as an artifact (or a run record with
    tracking.offline_dir, e.g. on a lent GPU machine)."""
    from yolomlu.tracking import flatten_params, job_run

    plain = common.to_plain(cfg)
    tags = {"task": "train", "config_hash": common.config_hash(cfg), **common.environment_tags()}
    with job_run(common.tracking_settings(cfg), f"train-{cfg.model.name}-shapes", tags=tags) as run:
        run.log_params(flatten_params({k: v for k, v in plain.items() if k in ("model", "data", "train", "seed")}))
        run.log_dict(plain, "config.yaml")

        def log_epoch(record: dict[str, float]) -> None:
            run.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))

        metrics = train_task(cfg, on_epoch=log_epoch)
        run.log_metrics(metrics, step=int(cfg.train.epochs))
        run.log_artifact(Path(cfg.train.out).expanduser(), "checkpoint")
    return metrics


def train_settings(cfg: DictConfig) -> TrainSettings:
    """The ``train`` config block as typed settings (a bad value raises naming it)."""
    t = cfg.train
    augment = Augment(**common.to_plain(t.augment))
    return TrainSettings(
        epochs=t.epochs,
        batch_size=t.batch_size,
        img_size=t.img_size,
        optimizer=t.optimizer,
        lr0=t.lr0,
        lrf=t.lrf,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        warmup_epochs=t.warmup_epochs,
        warmup_momentum=t.warmup_momentum,
        warmup_bias_lr=t.warmup_bias_lr,
        nominal_batch_size=t.nominal_batch_size,
        cosine=t.cosine,
        ema_tau=t.ema_tau,
        eval_every=t.eval_every,
        eval_batch_size=t.eval_batch_size,
        seed=t.seed,
        workers=t.workers,
        threads=t.threads,
        device=t.device,
        bf16=t.bf16,
        channels_last=t.channels_last,
        cache=t.cache,
        augment=augment,
    )


def train_task(cfg: DictConfig, on_epoch: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
    """Train ``cfg.model`` on ``train.n_train_images`` generated shapes images; return final metrics.

    Metrics: ``map50_95``, ``map50``... of the saved checkpoint on the val split of ``cfg.data``
    (task=evaluate's default set), the same prefixed ``val<n>_`` on the ``train.n_val_images`` split,
    and ``train_wall_s``, ``epochs``, ``images_per_s``, ``checkpoint_mb``. ``on_epoch`` receives
    each epoch's record (losses, lr, throughput, validation metrics on validation epochs).
    """
    # train.threads holds for the final evaluation too (on a shared 2-core machine, 2 threads that
    # wait on each other collapse when another process takes a core).
    previous = torch.get_num_threads()
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    try:
        return _train_task(cfg, on_epoch)
    finally:
        torch.set_num_threads(previous)


def _train_task(cfg: DictConfig, on_epoch: Callable[[dict[str, float]], None] | None) -> dict[str, float]:
    t = cfg.train
    if cfg.data.name != "shapes" or cfg.data.root is not None:
        raise ValueError(
            f"task=train trains on the generated shapes dataset and validates on its val split; "
            f"got data={cfg.data.name} with data.root={cfg.data.root!r}"
        )
    if cfg.model.nc != len(SHAPE_CLASSES):
        raise ValueError(f"the shapes dataset has {len(SHAPE_CLASSES)} classes; set model.nc={len(SHAPE_CLASSES)} (got {cfg.model.nc})")
    if cfg.model.arch not in common.ARCHS:
        raise ValueError(f"model.arch={cfg.model.arch!r} is not valid; choose one of {list(common.ARCHS)}")
    settings = train_settings(cfg)
    if t.n_train_images < settings.batch_size or t.n_val_images < 1:
        raise ValueError(
            f"train.n_train_images={t.n_train_images} must be >= train.batch_size={settings.batch_size} "
            f"and train.n_val_images={t.n_val_images} >= 1"
        )
    started = time.perf_counter()
    cache = Path(cfg.paths.cache_dir) / "datasets"
    d = cfg.data
    if t.data_seed == d.seed:
        # Splits are keyed by name as well, so the images would still differ; a distinct seed says so plainly.
        raise ValueError(f"train.data_seed ({t.data_seed}) must differ from data.seed ({d.seed}), the val split's")
    train_root = ensure_shapes(cache, n_images=t.n_train_images, img_size=d.image_size, seed=t.data_seed, split="train")
    val_root = ensure_shapes(cache, n_images=t.n_val_images, img_size=d.image_size, seed=d.seed, split="val")
    train_data = CocoDataset.from_root(train_root)
    val_large = CocoDataset.from_root(val_root)
    val_default = common.load_dataset(cfg)

    torch.manual_seed(settings.seed)
    m = cfg.model
    model = build_yolov5(m.arch, m.depth_multiple, m.width_multiple, nc=m.nc)
    result = train(model, train_data, settings, val_data=val_large, on_epoch=on_epoch)

    out = Path(t.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Evaluate the file as written (fp16 weights), not the fp32 weights in memory.
    fp16 = {k: (v.half() if v.is_floating_point() else v) for k, v in result.model.state_dict().items()}
    env = common.environment_tags()
    meta: dict[str, Any] = {
        "command": _command(cfg),
        "model": m.name,
        "arch": m.arch,
        "depth_multiple": float(m.depth_multiple),
        "width_multiple": float(m.width_multiple),
        "nc": int(m.nc),
        "img_size": settings.img_size,
        "epochs": settings.epochs,
        "n_train_images": int(t.n_train_images),
        "train_split": {"seed": int(t.data_seed), "image_size": int(d.image_size), "n_images": int(t.n_train_images)},
        "train_wall_s": round(result.wall_s, 1),
        "machine": {"cpu": env.get("cpu", "unknown"), "threads": torch.get_num_threads() if settings.threads is None else settings.threads,
                    "device": settings.device, "torch": str(torch.__version__), "host": env.get("host", "unknown")},
        "git_commit": env.get("git_commit", "unknown"),
        "train_config": common.to_plain(t),
        "history": [{k: float(v) for k, v in r.items()} for r in result.history],
    }  # fmt: skip
    save_state_dict(fp16, out, names=list(SHAPE_CLASSES), meta=meta)  # written now, rewritten with scores below

    reloaded = build_yolov5(m.arch, m.depth_multiple, m.width_multiple, nc=m.nc)
    load_weights(reloaded, out)
    reloaded.eval()
    metrics: dict[str, float] = {}
    default_scores = evaluate_model(reloaded, val_default, settings.img_size, settings.eval_batch_size, device=settings.device)
    large_scores = evaluate_model(reloaded, val_large, settings.img_size, settings.eval_batch_size, device=settings.device)
    metrics.update(default_scores)
    metrics.update({f"val{len(val_large)}_{k}": v for k, v in large_scores.items()})
    meta["val"] = {
        "default": {"n_images": len(val_default), "seed": int(d.seed), "map50_95": default_scores["map50_95"], "map50": default_scores["map50"]},
        "large": {"n_images": len(val_large), "seed": int(d.seed), "map50_95": large_scores["map50_95"], "map50": large_scores["map50"]},
        "precision": "fp32 compute on fp16-stored weights, conf 0.001, iou 0.65, max_det 300",
    }  # fmt: skip
    meta["map50_95"] = default_scores["map50_95"]
    save_state_dict(fp16, out, names=list(SHAPE_CLASSES), meta=meta)

    seen = sum(r["images_per_s"] * r["epoch_s"] for r in result.history)
    train_s = sum(r["epoch_s"] for r in result.history)
    metrics.update(
        train_wall_s=result.wall_s,
        task_wall_s=time.perf_counter() - started,
        epochs=float(settings.epochs),
        images_per_s=seen / train_s if train_s else float("nan"),
        best_epoch=float(result.best_epoch),
        best_val_map50_95=result.best_map50_95,
        checkpoint_mb=out.stat().st_size / 2**20,
    )
    _print_summary(out, metrics, len(val_default), len(val_large))
    return metrics


def _command(cfg: DictConfig) -> str:
    """A command line that reproduces this training run: every train key spelt out, so it does not
    depend on defaults that may change."""
    t = common.to_plain(cfg.train)
    parts = ["python -m yolomlu task=train", f"model={cfg.model.name}", f"model.nc={cfg.model.nc}"]
    d = cfg.data
    parts += [f"data.seed={d.seed}", f"data.image_size={d.image_size}", f"data.n_images={d.n_images}"]
    for key, value in _flatten(t, "train"):
        if key != "train.out":
            parts.append(f"{key}={_format(value)}")
    parts.append(f"train.out={t['out']}")
    return " ".join(parts)


def _flatten(tree: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}.{key}")
        else:
            items.append((f"{prefix}.{key}", value))
    return items


def _format(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _print_summary(out: Path, metrics: dict[str, float], n_default: int, n_large: int) -> None:
    stream = common.log_stream()
    print(f"[yolomlu] trained checkpoint: {out} ({metrics['checkpoint_mb']:.2f} MiB, fp16)", file=stream)
    print(f"  train wall time: {metrics['train_wall_s']:.0f} s, {metrics['images_per_s']:.1f} img/s", file=stream)
    print(f"  val ({n_default} images): map50_95 {metrics['map50_95']:.4f}  map50 {metrics['map50']:.4f}", file=stream)
    print(
        f"  val ({n_large} images): map50_95 {metrics[f'val{n_large}_map50_95']:.4f}  map50 {metrics[f'val{n_large}_map50']:.4f}",
        file=stream,
    )

