"""The YOLOv5 loss: its pieces by hand, and that it can fit a tiny batch."""

from __future__ import annotations

import math

import pytest
import torch

from yolomlu.model import SIZES, build_yolov5
from yolomlu.train.loss import LossWeights, YoloLoss, bbox_ciou


def test_ciou_by_hand():
    a = torch.tensor([[5.0, 5.0, 4.0, 2.0]])
    assert bbox_ciou(a, a).item() == pytest.approx(1.0, abs=1e-6)
    # Same shape, shifted 2 along x: IoU 2*2/(8+8-4) = 1/3; enclosing box 6 x 2, diagonal^2 40, rho^2 4.
    b = torch.tensor([[7.0, 5.0, 4.0, 2.0]])
    assert bbox_ciou(a, b).item() == pytest.approx(1 / 3 - 4 / 40, abs=1e-5)
    # Apart: CIoU goes negative (distance penalty), which is what pulls far boxes together.
    c = torch.tensor([[50.0, 5.0, 4.0, 2.0]])
    assert bbox_ciou(a, c).item() < 0


def test_gains_scaled_as_yolov5():
    w = LossWeights().scaled(nc=6, img_size=320, nl=3)
    assert (w.box, w.obj, w.cls) == pytest.approx((0.05, 0.25, 0.5 * 6 / 80))
    w = LossWeights().scaled(nc=80, img_size=640)
    assert (w.box, w.obj, w.cls) == pytest.approx((0.05, 1.0, 0.5))


def test_loss_is_finite_and_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_yolov5("v5", *SIZES["n"], nc=6).train()
    loss_fn = YoloLoss(model.detect.anchors, 6, LossWeights().scaled(6, 64))
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor(
        [[0, 1, 0.30, 0.40, 0.30, 0.25], [0, 4, 0.70, 0.70, 0.20, 0.30], [1, 2, 0.50, 0.50, 0.60, 0.50]]
    )
    loss, items = loss_fn(model(images), targets)
    assert torch.isfinite(loss) and items.shape == (4,)
    assert items[3].item() * 2 == pytest.approx(loss.item(), rel=1e-5)  # total x batch size
    assert all(v > 0 for v in items.tolist())

    # Adam: a step size that does not depend on the loss scale, so a few steps suffice.
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(15):
        optimizer.zero_grad()
        loss, items = loss_fn(model(images), targets)
        loss.backward()
        optimizer.step()
    assert math.isfinite(loss.item())
    assert loss.item() < 0.7 * first, (first, loss.item())


def test_no_targets_gives_objectness_only():
    model = build_yolov5("v5", *SIZES["n"], nc=6).eval()
    loss_fn = YoloLoss(model.detect.anchors, 6, LossWeights().scaled(6, 64))
    with torch.no_grad():
        _, items = loss_fn(model(torch.rand(1, 3, 64, 64)), torch.zeros((0, 6)))
    assert items[0].item() == 0 and items[2].item() == 0 and items[1].item() > 0
