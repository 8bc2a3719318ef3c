"""A compact YOLOv5 training loop: SGD with YOLOv5's parameter groups, warm-up, cosine (or linear)
learning-rate decay, an exponential moving average (EMA) of the weights, and validation mAP through
``yolomlu.evaluate``, so the number printed while training is the number the workbench reports.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from yolomlu import interrupts
from yolomlu.backends.torch_runner import TorchRunner
from yolomlu.data.categories import category_ids_for_model
from yolomlu.data.coco import CocoDataset
from yolomlu.evaluate.coco_eval import evaluate_coco
from yolomlu.evaluate.pipeline import DetectHead, NmsSettings
from yolomlu.evaluate.predict import predict_dataset
from yolomlu.train.dataset import Augment, TrainSet, collate
from yolomlu.train.loss import LossWeights, YoloLoss

__all__ = ["EVAL_NMS", "ModelEMA", "TrainResult", "TrainSettings", "evaluate_model", "param_groups", "settings_dict", "train"]

OPTIMIZERS = ("sgd", "adamw")

# YOLOv5's accuracy conventions (conf/eval/default.yaml): what validation during training uses.
EVAL_NMS = NmsSettings(conf_thres=0.001, iou_thres=0.65, max_det=300, max_candidates=30000, multi_label=True)


@dataclass(frozen=True)
class TrainSettings:
    """Everything ``train`` needs besides the model and the data (YOLOv5 ``hyp`` names where they exist).

    epochs, batch_size, img_size: the schedule length, images per step, square input side.
    optimizer: 'sgd' (Nesterov momentum, YOLOv5's default) or 'adamw' (beta1 = momentum).
    lr0, lrf: initial learning rate and final fraction (the last epoch runs at lr0 * lrf).
    momentum, weight_decay: SGD momentum (AdamW beta1); decay of conv weights only (not BN, biases).
    warmup_epochs, warmup_momentum, warmup_bias_lr: linear warm-up of lr (biases start at
        warmup_bias_lr and fall, the rest rise from 0) and of momentum.
    nominal_batch_size: gradients are accumulated over round(nbs / batch_size) batches per
        optimiser step and weight decay scaled to match (YOLOv5's nbs=64); None steps every batch.
    cosine: cosine decay from lr0 to lr0*lrf; False for linear.
    ema_decay, ema_tau: EMA decay d * (1 - exp(-updates / tau)).
    eval_every: validate every this many epochs (and always after the last); 0 only at the end.
    seed: initial weights are the caller's; the seed drives shuffling and augmentation.
    workers: DataLoader worker processes (0: load in the training process).
    threads: torch intra-op threads while training (None: leave as is).
    device: 'cpu' or 'cuda'.
    bf16: run the forward pass under bfloat16 autocast (weights, loss and optimiser stay fp32);
        faster on CPUs with AVX512-BF16 or AMX and on GPUs.
    channels_last: keep the model and batches in NHWC memory format (often faster with oneDNN).
    cache: decode all training images once, up front.
    """

    epochs: int
    batch_size: int = 16
    img_size: int = 320
    optimizer: str = "sgd"
    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    nominal_batch_size: int | None = 64
    cosine: bool = True
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    eval_every: int = 1
    eval_batch_size: int = 16
    seed: int = 0
    workers: int = 0
    threads: int | None = None
    device: str = "cpu"
    bf16: bool = False
    channels_last: bool = False
    cache: bool = True
    augment: Augment = field(default_factory=Augment)
    loss: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "img_size": self.img_size >= 32 and self.img_size % 32 == 0,
            "optimizer": self.optimizer in OPTIMIZERS,
            "lr0": self.lr0 > 0,
            "lrf": 0 < self.lrf <= 1,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "nominal_batch_size": self.nominal_batch_size is None or self.nominal_batch_size >= 1,
            "ema_decay": 0 < self.ema_decay < 1,
            "ema_tau": self.ema_tau > 0,
            "eval_every": self.eval_every >= 0,
            "eval_batch_size": self.eval_batch_size >= 1,
            "workers": self.workers >= 0,
            "threads": self.threads is None or self.threads >= 1,
            "device": self.device in ("cpu", "cuda"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid training settings: " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad))


@dataclass
class TrainResult:
    """model: the EMA model after the last epoch (fp32, eval mode, on the CPU); history: one dict a
    epoch (see ``train``); best_epoch / best_map50_95: the best validation score seen (-1 / nan when
    never validated); wall_s: seconds the whole call took."""

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    best_map50_95: float
    wall_s: float


class ModelEMA:
    """Exponential moving average of a model's state (weights and BN statistics), YOLOv5's ModelEMA.

    The decay ramps up as d * (1 - exp(-updates / tau)), so early, fast-changing weights are not
    averaged over a long, meaningless past.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        current = model.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(current[name].detach(), alpha=1 - d)


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """YOLOv5's three groups: (BN weights, other weights, biases); only the second takes weight decay."""
    bn_weights, weights, biases = [], [], []
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            biases.append(bias)
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            (bn_weights if isinstance(module, nn.modules.batchnorm._BatchNorm) else weights).append(weight)
    covered = {id(p) for p in bn_weights + weights + biases}
    left = [n for n, p in model.named_parameters() if id(p) not in covered]
    if left:
        raise ValueError(f"parameters in no optimiser group (not a module weight or bias): {left[:5]}")
    return bn_weights, weights, biases


def detect_head_of(model: nn.Module) -> DetectHead:
    head = model.detect  # type: ignore[attr-defined]
    return DetectHead(
        anchors_px=head.anchors_px.detach().float().cpu(),
        strides=tuple(float(s) for s in head.stride),
        nc=int(head.nc),
    )


def evaluate_model(
    model: nn.Module,
    dataset: CocoDataset,
    img_size: int,
    batch_size: int = 16,
    nms: NmsSettings = EVAL_NMS,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """COCO metrics (``map50_95``, ``map50`` ... as ``evaluate_coco`` names them) of ``model`` on
    ``dataset``, through the same runner, pre- and post-processing as task=evaluate. The model is
    copied, so the caller's copy keeps its mode and device."""
    copy_ = copy.deepcopy(model).float()
    head = detect_head_of(copy_)
    category_ids = category_ids_for_model(dataset.categories, head.nc)
    with TorchRunner(copy_, device=device) as runner:
        predictions = predict_dataset(runner, dataset, img_size, batch_size, head, nms, progress=progress)
    return dict(evaluate_coco(dataset.ann_file, predictions, category_ids).metrics)


def train(
    model: nn.Module,
    train_data: CocoDataset,
    settings: TrainSettings,
    val_data: CocoDataset | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` (a ``YOLOv5``, modified in place) on ``train_data``.

    Each epoch appends to the history, and passes to ``on_epoch``, a dict with ``epoch`` (1-based),
    ``loss_box``, ``loss_obj``, ``loss_cls``, ``loss`` (per-image means over the epoch), ``lr``
    (of the weight group at the epoch's end), ``epoch_s``, ``elapsed_s``, ``images_per_s``, and, on
    validation epochs, the COCO metrics of the EMA model on ``val_data`` (``map50_95``, ``map50``...).
    Returns the EMA model (fp32, eval mode, CPU) and the history.
    """
    s = settings
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        return _train(model, train_data, s, val_data, on_epoch, progress, start)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    model: nn.Module,
    train_data: CocoDataset,
    s: TrainSettings,
    val_data: CocoDataset | None,
    on_epoch: Callable[[dict[str, float]], None] | None,
    progress: bool,
    start: float,
) -> TrainResult:
    from tqdm import tqdm

    if s.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TrainSettings.device='cuda' but torch reports no CUDA device")
    device = torch.device(s.device)
    torch.manual_seed(s.seed)
    head = model.detect  # type: ignore[attr-defined]
    nc, nl = int(head.nc), int(head.nl)
    memory_format = torch.channels_last if s.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).train()

    samples = TrainSet(train_data, s.img_size, nc, augment=s.augment, seed=s.seed, cache=s.cache)
    generator = torch.Generator().manual_seed(s.seed)
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=s.batch_size,
        shuffle=True,
        drop_last=len(samples) > s.batch_size,  # a 1-image last batch would upset BatchNorm
        num_workers=s.workers,
        collate_fn=collate,
        generator=generator,
        persistent_workers=False,
    )
    nb = len(loader)
    accumulate = max(round(s.nominal_batch_size / s.batch_size), 1) if s.nominal_batch_size else 1
    decay = s.weight_decay * s.batch_size * accumulate / s.nominal_batch_size if s.nominal_batch_size else s.weight_decay

    bn_weights, weights, biases = param_groups(model)
    if s.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(bn_weights, lr=s.lr0, momentum=s.momentum, nesterov=True)
    else:  # YOLOv5's AdamW option: beta1 = momentum, decoupled decay on the conv weights only
        optimizer = torch.optim.AdamW(bn_weights, lr=s.lr0, betas=(s.momentum, 0.999), weight_decay=0.0)
    optimizer.add_param_group({"params": weights, "weight_decay": decay})
    optimizer.add_param_group({"params": biases, "weight_decay": 0.0})
    bias_group = 2
    has_momentum = "momentum" in optimizer.param_groups[0]

    loss_fn = YoloLoss(head.anchors.detach(), nc, s.loss.scaled(nc, s.img_size, nl))
    ema = ModelEMA(model, s.ema_decay, s.ema_tau)

    warmup_iters = round(s.warmup_epochs * nb)

    def lr_factor(progress_epochs: float) -> float:
        x = progress_epochs / s.epochs
        if s.cosine:
            return ((1 - math.cos(x * math.pi)) / 2) * (s.lrf - 1) + 1
        return (1 - x) * (1.0 - s.lrf) + s.lrf

    history: list[dict[str, float]] = []
    best_epoch, best_map = -1, float("nan")
    last_step = -1
    optimizer.zero_grad()
    for epoch in range(s.epochs):
        samples.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        sums = torch.zeros(4)
        seen = 0
        bar = tqdm(loader, total=nb, desc=f"train {epoch + 1}/{s.epochs}", unit="batch", disable=not progress, leave=False)
        for i, (images, targets) in enumerate(bar):
            interrupts.check()
            it = epoch * nb + i
            factor = lr_factor(epoch + i / nb)
            if it < warmup_iters:
                w = it / warmup_iters
                accumulate_now = max(1, round(1 + w * (accumulate - 1)))
                for g, group in enumerate(optimizer.param_groups):
                    # SGD: biases start high and fall (YOLOv5); Adam's steps do not scale with the
                    # gradient, so there every group rises from 0.
                    begin = s.warmup_bias_lr if g == bias_group and has_momentum else 0.0
                    group["lr"] = begin + w * (s.lr0 * factor - begin)
                    if has_momentum:
                        group["momentum"] = s.warmup_momentum + w * (s.momentum - s.warmup_momentum)
            else:
                accumulate_now = accumulate
                for group in optimizer.param_groups:
                    group["lr"] = s.lr0 * factor
                    if has_momentum:
                        group["momentum"] = s.momentum

            images = images.to(device, non_blocking=True, memory_format=memory_format)
            targets = targets.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=s.bf16):
                outputs = model(images)
            loss, items = loss_fn([o.float() for o in outputs], targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}, batch {i}")
            loss.backward()
            if it - last_step >= accumulate_now:
                optimizer.step()
                optimizer.zero_grad()
                ema.update(model)
                last_step = it

            sums += items.cpu() * images.shape[0]
            seen += images.shape[0]
            if progress:
                m = sums / max(seen, 1)
                bar.set_postfix(box=f"{m[0]:.4f}", obj=f"{m[1]:.4f}", cls=f"{m[2]:.4f}", lr=f"{optimizer.param_groups[1]['lr']:.2e}")
        bar.close()

        epoch_s = time.perf_counter() - t0
        means = (sums / max(seen, 1)).tolist()
        record: dict[str, float] = {
            "epoch": epoch + 1,
            "loss_box": means[0],
            "loss_obj": means[1],
            "loss_cls": means[2],
            "loss": means[3],
            "lr": float(optimizer.param_groups[1]["lr"]),
            "epoch_s": epoch_s,
            "images_per_s": seen / epoch_s if epoch_s > 0 else float("nan"),
        }
        last = epoch + 1 == s.epochs
        if val_data is not None and (last or (s.eval_every and (epoch + 1) % s.eval_every == 0)):
            t1 = time.perf_counter()
            metrics = evaluate_model(ema.ema, val_data, s.img_size, s.eval_batch_size, EVAL_NMS, s.device)
            record.update(metrics)
            record["eval_s"] = time.perf_counter() - t1
            if not (metrics["map50_95"] <= best_map):  # also true while best_map is nan
                best_epoch, best_map = epoch + 1, metrics["map50_95"]
        record["elapsed_s"] = time.perf_counter() - start
        history.append(record)
        if progress:
            tqdm.write(_format_record(record))
        if on_epoch is not None:
            on_epoch(dict(record))

    final = ema.ema.float().cpu().to(memory_format=torch.contiguous_format).eval()
    return TrainResult(final, history, best_epoch, best_map, time.perf_counter() - start)


def _format_record(r: dict[str, float]) -> str:
    text = (
        f"epoch {int(r['epoch'])}: loss {r['loss']:.4f} (box {r['loss_box']:.4f} obj {r['loss_obj']:.4f} "
        f"cls {r['loss_cls']:.4f}) lr {r['lr']:.2e} {r['images_per_s']:.1f} img/s, {r['elapsed_s']:.0f} s"
    )
    if "map50_95" in r:
        text += f" | val map50_95 {r['map50_95']:.4f} map50 {r['map50']:.4f}"
    return text


def settings_dict(settings: TrainSettings) -> dict[str, Any]:
    """The settings as plain data (for checkpoint metadata and logging)."""
    return asdict(settings)

