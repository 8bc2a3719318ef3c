"""The YOLOv5 Detect head: one 1x1 convolution per pyramid level, and nothing after it.

Decoding (sigmoid, grid offsets, anchor scaling) lives in `yolomlu.postprocess`, so that every backend
hands back the same raw tensors and an exported graph ends at these convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Detect"]


class Detect(nn.Module):
    """Per-level 1x1 conv heads.

    Args:
        nc: number of classes.
        anchors: pixel anchors per level, either the yaml form (nl rows of 2*na numbers,
            ``[[10,13, 16,30, 33,23], ...]``) or nested ``[nl][na][2]``.
        ch: input channels of each level (nl ints).
        strides: input pixels per feature-map cell of each level (nl numbers, e.g. 8, 16, 32).

    Buffers:
        anchors: float [nl, na, 2], in stride units (pixel anchor / stride), as official checkpoints
            store them (key ``model.24.anchors``).
        stride: float [nl]; not persistent (absent from the state dict, as in official checkpoints,
            where it is a plain attribute).

    Official v5.0 checkpoints also carry ``anchor_grid`` [nl, 1, na, 1, 1, 2] (pixel anchors reshaped
    for broadcasting). It is derived data, so it is not registered here; the checkpoint loader drops it.
    """

    def __init__(
        self,
        nc: int,
        anchors: Sequence[Sequence[float]] | Sequence[Sequence[Sequence[float]]],
        ch: Sequence[int],
        strides: Sequence[float],
    ) -> None:
        super().__init__()
        anchors_px = torch.tensor(anchors, dtype=torch.float32)
        nl = anchors_px.shape[0]
        anchors_px = anchors_px.view(nl, -1, 2)
        if len(ch) != nl or len(strides) != nl:
            raise ValueError(
                f"Detect needs one input and one stride per anchor level: {nl} anchor levels, "
                f"ch={list(ch)}, strides={list(strides)}"
            )
        if nc < 1:
            raise ValueError(f"Detect needs nc >= 1, got {nc}")
        self.nc = nc
        self.no = nc + 5  # x, y, w, h, objectness, class scores
        self.nl = nl
        self.na = anchors_px.shape[1]
        stride = torch.tensor(strides, dtype=torch.float32)
        self.register_buffer("anchors", anchors_px / stride.view(-1, 1, 1))
        self.register_buffer("stride", stride, persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in ch)
        self._init_biases([float(v) for v in strides])

    @property
    def anchors_px(self) -> Tensor:
        """float [nl, na, 2]: the anchors in input pixels."""
        return self.anchors * self.stride.view(-1, 1, 1)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        """nl feature maps [B, ch_i, H_i, W_i] -> nl raw maps float [B, na * no, H_i, W_i].

        Channel layout of each output: anchor-major, i.e. channel a * no + k is field k of anchor a
        (k: 0-3 box, 4 objectness, 5.. classes). No reshape, sigmoid or decoding happens here.
        """
        return [conv(x) for conv, x in zip(self.m, xs)]

    @torch.no_grad()
    def _init_biases(self, strides: list[float]) -> None:
        # Priors that make a fresh model's first losses sane (YOLOv5's recipe): about 8 objects per
        # 640x640 image spread over a level's cells, and class probability ~0.6 / nc.
        for conv, s in zip(self.m, strides):
            b = conv.bias.view(self.na, self.no)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99))

    def extra_repr(self) -> str:
        return f"nc={self.nc}, na={self.na}, nl={self.nl}"
