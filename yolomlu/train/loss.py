"""The YOLOv5 training loss: box (1 - CIoU), objectness (BCE against the IoU) and class (BCE).

Conventions follow YOLOv5's ``utils/loss.py`` (v5.0+): per-level objectness weights ``balance``
(4.0, 1.0, 0.4 for P3, P4, P5), the gains of ``hyp.scratch`` (box 0.05, obj 1.0, cls 0.5) rescaled for
the number of levels, classes and the image size as its ``train.py`` does, and the total multiplied by
the batch size (so the gradient is that of a per-image sum, which the learning rates were tuned for).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from yolomlu.train.targets import build_targets

__all__ = ["LossWeights", "YoloLoss", "bbox_ciou"]


@dataclass(frozen=True)
class LossWeights:
    """Gains of the three loss terms and the matching settings.

    box, obj, cls:   gains as ``hyp.scratch`` writes them (for 3 levels, 80 classes, 640 px)
    balance:         objectness weight per level, P3 first
    anchor_t:        anchor-matching ratio threshold (see ``build_targets``)
    label_smoothing: class-target smoothing eps (0: targets 1 and 0)
    iou_ratio:       objectness target = (1 - iou_ratio) + iou_ratio * IoU (YOLOv5's ``gr``, 1.0)
    """

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    balance: tuple[float, ...] = (4.0, 1.0, 0.4)
    anchor_t: float = 4.0
    label_smoothing: float = 0.0
    iou_ratio: float = 1.0

    def scaled(self, nc: int, img_size: int, nl: int = 3) -> "LossWeights":
        """The gains rescaled as YOLOv5's train.py does for ``nl`` levels, ``nc`` classes, ``img_size`` px."""
        if nc < 1 or img_size < 1 or nl < 1:
            raise ValueError(f"need nc, img_size, nl >= 1, got {nc}, {img_size}, {nl}")
        return replace(
            self,
            box=self.box * 3.0 / nl,
            cls=self.cls * nc / 80.0 * 3.0 / nl,
            obj=self.obj * (img_size / 640.0) ** 2 * 3.0 / nl,
        )


def bbox_ciou(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of paired boxes (Zheng et al. 2020): IoU - centre distance term - aspect term.

    box1, box2: float [n, 4] as (cx, cy, w, h), any common unit. Returns float [n], at most 1.
    """
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * (
        torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)  # enclosing box
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    """Loss of a batch of raw Detect outputs against its ground truth.

    Args:
        anchors: float [nl, na, 2] anchors in grid cells of their level (``Detect.anchors``).
        nc: number of classes.
        weights: the gains, already scaled for this model and image size (``LossWeights.scaled``).
    """

    def __init__(self, anchors: Tensor, nc: int, weights: LossWeights) -> None:
        if anchors.ndim != 3 or anchors.shape[2] != 2:
            raise ValueError(f"anchors must be [nl, na, 2], got {tuple(anchors.shape)}")
        if len(weights.balance) != anchors.shape[0]:
            raise ValueError(f"balance has {len(weights.balance)} entries, the head has {anchors.shape[0]} levels")
        self.anchors = anchors.detach().float()
        self.nc = nc
        self.na = anchors.shape[1]
        self.no = nc + 5
        self.weights = weights
        self._bce = nn.BCEWithLogitsLoss()
        eps = weights.label_smoothing
        self._positive, self._negative = 1.0 - 0.5 * eps, 0.5 * eps

    def __call__(self, outputs: Sequence[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """outputs: nl raw maps [B, na*no, H_i, W_i]; targets: float [nt, 6] (image, class, cx, cy, w, h).

        Returns (loss, items): ``loss`` a scalar to back-propagate (the weighted sum times B), ``items``
        float [4] detached (box, obj, cls, total) per image, for logging.
        """
        if len(outputs) != self.anchors.shape[0]:
            raise ValueError(f"expected {self.anchors.shape[0]} output levels, got {len(outputs)}")
        device = outputs[0].device
        maps = []
        for x in outputs:
            b, c, ny, nx = x.shape
            if c != self.na * self.no:
                raise ValueError(f"output has {c} channels, expected na*no = {self.na}*{self.no}")
            maps.append(x.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2))  # [B, na, ny, nx, no]
        levels = build_targets(
            targets.to(device), self.anchors.to(device), [m.shape[2:4] for m in maps], self.weights.anchor_t
        )

        zero = torch.zeros((), device=device)
        l_box, l_obj, l_cls = zero, zero, zero
        for p, t, balance in zip(maps, levels, self.weights.balance):
            obj_target = torch.zeros(p.shape[:4], device=device, dtype=p.dtype)
            if len(t):
                ps = p[t.image, t.anchor, t.gy, t.gx]  # [n, no]
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * t.anchor_wh
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), t.box)
                l_box = l_box + (1.0 - iou).mean()
                # Objectness learns how well the box fits (duplicated cells: the last write wins).
                r = self.weights.iou_ratio
                obj_target[t.image, t.anchor, t.gy, t.gx] = (1.0 - r) + r * iou.detach().clamp(0).to(p.dtype)
                if self.nc > 1:  # a single class needs no class score
                    cls_target = torch.full_like(ps[:, 5:], self._negative)
                    cls_target[torch.arange(len(t), device=device), t.cls] = self._positive
                    l_cls = l_cls + self._bce(ps[:, 5:], cls_target)
            l_obj = l_obj + self._bce(p[..., 4], obj_target) * balance

        w = self.weights
        l_box, l_obj, l_cls = l_box * w.box, l_obj * w.obj, l_cls * w.cls
        total = l_box + l_obj + l_cls
        batch = maps[0].shape[0]
        items = torch.stack((l_box, l_obj, l_cls, total)).detach()
        return total * batch, items
