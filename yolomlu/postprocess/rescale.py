"""NMS output (letterboxed pixels) -> ``Detections`` in original-image pixels."""

from __future__ import annotations

import numpy as np
import torch

from yolomlu.data.letterbox import LetterboxInfo, boxes_to_original
from yolomlu.types import Detections

__all__ = ["to_detections"]


def to_detections(det: torch.Tensor, info: LetterboxInfo) -> Detections:
    """Map one image's NMS output back to the original image.

    det:  [n, 6] (x1, y1, x2, y2, conf, cls) in letterboxed pixels, as from ``non_max_suppression``
    info: how that image was letterboxed
    Returns Detections with boxes float32 [n, 4] in original pixels (clipped to the image; a box lying
    wholly in the padding becomes zero-area and is kept), scores float32 [n], labels int64 [n].
    """
    if det.ndim != 2 or det.shape[1] != 6:
        raise ValueError(f"det must be [n, 6] (x1, y1, x2, y2, conf, cls), got {tuple(det.shape)}")
    d = det.detach().to("cpu", torch.float64).numpy()
    boxes = boxes_to_original(d[:, :4], info).astype(np.float32)
    return Detections(boxes=boxes, scores=d[:, 4].astype(np.float32), labels=np.rint(d[:, 5]).astype(np.int64))
