"""Pre- and post-processing around a runner, shared by detection, evaluation and benchmarks.

One place turns images into a batch and raw head outputs into detections, so a difference in
accuracy between two runs points at the backend, never at glue code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from yolomlu.data.letterbox import LetterboxInfo, letterbox
from yolomlu.data.preprocess import to_tensor_batch
from yolomlu.postprocess.decode import decode_outputs
from yolomlu.postprocess.nms import non_max_suppression
from yolomlu.postprocess.rescale import to_detections
from yolomlu.types import Detections


@dataclass(frozen=True)
class DetectHead:
    """What decoding needs to know about the model's head.

    anchors_px: float32 [nl, na, 2] anchor sizes in input pixels; strides: one per level.
    """

    anchors_px: torch.Tensor
    strides: tuple[float, ...]
    nc: int


@dataclass(frozen=True)
class NmsSettings:
    conf_thres: float
    iou_thres: float
    max_det: int = 300
    max_candidates: int = 30000
    multi_label: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf_thres <= 1.0 or not 0.0 <= self.iou_thres <= 1.0:
            raise ValueError(f"conf_thres and iou_thres must lie in [0, 1], got {self.conf_thres}, {self.iou_thres}")
        if self.max_det < 1 or self.max_candidates < 1:
            raise ValueError(f"max_det and max_candidates must be positive, got {self.max_det}, {self.max_candidates}")


def device_nms(buffer_format) -> NmsSettings:
    """The host NMS that matches what a device's own decode + NMS was compiled with (its score and
    IoU thresholds, one class per box or every class above the threshold as the format says, at most
    ``max_box_num`` boxes): the reference to compare a detection buffer against."""
    multi_label = bool(getattr(buffer_format, "multi_label", False))
    return NmsSettings(buffer_format.conf_thres, buffer_format.iou_thres, max_det=buffer_format.max_box_num, multi_label=multi_label)


def preprocess(images: list[np.ndarray], img_size: int, stride: int = 32) -> tuple[torch.Tensor, list[LetterboxInfo]]:
    """Letterbox each HxWx3 uint8 RGB image to img_size x img_size -> float32 [B, 3, S, S] in 0..1."""
    boxed = [letterbox(image, img_size, stride=stride, auto=False) for image in images]
    return to_tensor_batch([b[0] for b in boxed]), [b[1] for b in boxed]


def postprocess(
    outputs: list[torch.Tensor],
    head: DetectHead,
    nms: NmsSettings,
    infos: list[LetterboxInfo],
    buffer_format=None,
) -> list[Detections]:
    """Raw per-level outputs [B, na*(5+nc), h, w] -> one :class:`Detections` per image.

    With ``buffer_format`` (a runner whose device already did decode + NMS, e.g. the MLU's
    ``yolov5_detection_output``), ``outputs`` is that detection buffer and is only decoded.
    """
    if buffer_format is not None:
        kept = buffer_format.decode(outputs[0], len(infos), max_det=nms.max_det)
    else:
        pred = decode_outputs(outputs, head.anchors_px, head.strides)
        kept = non_max_suppression(
            pred,
            conf_thres=nms.conf_thres,
            iou_thres=nms.iou_thres,
            max_det=nms.max_det,
            max_candidates=nms.max_candidates,
            multi_label=nms.multi_label,
        )
    return [to_detections(det, info) for det, info in zip(kept, infos)]
