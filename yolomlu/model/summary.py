"""Model size and cost as YOLOv5 reports them: layers, parameters, GFLOPs at a square input."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelSummary", "count_flops", "format_summary", "summarize"]


@dataclass(frozen=True)
class ModelSummary:
    layers: int  # len(list(model.modules())), YOLOv5's "layers"
    params: int  # number of parameter elements
    gflops: float  # 2 x multiply-accumulates of one 1x3xSxS forward, / 1e9


def count_flops(model: nn.Module, img_size: int = 640, in_channels: int = 3) -> int:
    """FLOPs (2 x MACs) of one forward of a [1, in_channels, img_size, img_size] input.

    Counted by `torch.utils.flop_counter.FlopCounterMode`, which charges a convolution
    2 * C_in/groups * k_h * k_w per output element and C_out (bias adds, BN, activations, pooling,
    upsampling and concatenation count 0; matmuls would count 2 x MACs). The forward runs on the meta
    device with stand-in parameters, so it costs no arithmetic and leaves the model untouched; modules
    are switched to eval mode for it and restored afterwards.
    """
    dtype = next(model.parameters()).dtype
    stand_ins = {
        name: torch.empty_like(t, device="meta")
        for name, t in chain(model.named_parameters(), model.named_buffers())
    }
    x = torch.empty(1, in_channels, img_size, img_size, device="meta", dtype=dtype)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # train-mode BN rejects single-cell maps and would update (stand-in) statistics
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            functional_call(model, stand_ins, (x,))
    finally:
        for m, training in modes:
            m.training = training
    return int(counter.get_total_flops())


def summarize(model: nn.Module, img_size: int = 640) -> ModelSummary:
    """Layers, parameters and GFLOPs at `img_size` x `img_size` (YOLOv5 publishes fused models at 640).

    YOLOv5 measures at a stride-sized input (32) and scales by (img_size / 32)^2. For a model of
    convolutions whose maps all shrink by exact powers of two that equals counting at img_size
    directly (tests prove it), so the count here is taken at img_size itself.
    """
    return ModelSummary(
        layers=len(list(model.modules())),
        params=sum(p.numel() for p in model.parameters()),
        gflops=count_flops(model, img_size) / 1e9,
    )


def format_summary(s: ModelSummary) -> str:
    """'<layers> layers, <params> parameters, <gflops:.1f> GFLOPs'."""
    return f"{s.layers} layers, {s.params} parameters, {s.gflops:.1f} GFLOPs"
