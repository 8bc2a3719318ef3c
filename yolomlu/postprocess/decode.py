"""Decode the raw Detect-head convolutions into boxes in network-input pixels (YOLOv5 v5.0+ formula).

Every backend returns the raw per-level outputs; this is the one place that applies sigmoid, grid and
anchors, so a difference in mAP between backends points at the backend, not at a second decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["decode_outputs"]


def decode_outputs(outputs: Sequence[torch.Tensor], anchors_px: torch.Tensor, strides: Sequence[float]) -> torch.Tensor:
    """Decode the Detect head's raw outputs.

    outputs:    one tensor per level i, [B, na*no, H_i, W_i] (any float dtype; raw logits), where
                no = 5 + nc and channel a*no + k is anchor a's field k (tx, ty, tw, th, obj, cls...)
    anchors_px: [nl, na, 2] anchor (w, h) in input-image pixels
    strides:    nl strides (input pixels per grid cell), e.g. (8, 16, 32)
    Returns float32 [B, N, no], N = sum(na * H_i * W_i), ordered level, anchor, row, column (YOLOv5's
    flattening); columns cx, cy, w, h in input-image pixels, then objectness and class probabilities
    (sigmoid applied):
        cx, cy = (2 * sigmoid(tx, ty) - 0.5 + grid) * stride
        w, h   = (2 * sigmoid(tw, th)) ** 2 * anchor
    Decoding is done in float32 whatever the input dtype (fp16 loses whole pixels at 640).
    """
    nl = len(outputs)
    if anchors_px.ndim != 3 or anchors_px.shape[0] != nl or anchors_px.shape[2] != 2:
        raise ValueError(f"anchors_px must be [nl={nl}, na, 2], got {tuple(anchors_px.shape)}")
    if len(strides) != nl:
        raise ValueError(f"need one stride per level: {nl} outputs, {len(strides)} strides")
    na = anchors_px.shape[1]
    decoded = []
    no = None
    for i, x in enumerate(outputs):
        if x.ndim != 4 or x.shape[1] % na:
            raise ValueError(f"output {i} must be [B, na*no, H, W] with na={na}, got {tuple(x.shape)}")
        b, c, ny, nx = x.shape
        if i and b != outputs[0].shape[0]:
            raise ValueError(f"output {i} has batch {b}, output 0 has {outputs[0].shape[0]}")
        if no is None:
            no = c // na
            if no < 6:
                raise ValueError(f"output {i} has {c} channels = {na} anchors x {no}; need no >= 6 (5 + nc)")
        elif c // na != no:
            raise ValueError(f"output {i} has {c // na} fields per anchor, level 0 has {no}")
        # reshape, not view: a channels-last output is not contiguous in NCHW order
        y = x.to(torch.float32).reshape(b, na, no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()  # [B, na, ny, nx, no]
        gy, gx = torch.meshgrid(
            torch.arange(ny, device=x.device, dtype=torch.float32),
            torch.arange(nx, device=x.device, dtype=torch.float32),
            indexing="ij",
        )
        grid = torch.stack((gx, gy), -1).view(1, 1, ny, nx, 2)
        anchor = anchors_px[i].to(device=x.device, dtype=torch.float32).view(1, na, 1, 1, 2)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * float(strides[i])
        wh = (y[..., 2:4] * 2) ** 2 * anchor
        decoded.append(torch.cat((xy, wh, y[..., 4:]), -1).reshape(b, -1, no))
    if not decoded:
        raise ValueError("decode_outputs got no outputs")
    return torch.cat(decoded, 1)
