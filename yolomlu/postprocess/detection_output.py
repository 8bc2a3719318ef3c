"""A CPU reference of Cambricon's on-device YOLOv5 decode + NMS, ``yolov5_detection_output``.

``torch.ops.torch_mlu.yolov5_detection_output(p3, p4, p5, anchors, num_classes, num_anchors, img_h,
img_w, conf_thres, iou_thres, max_box_num)`` is a closed op of the legacy torch_mlu (MLU270/MLU220).
This module computes what the public sources say it computes, so that the decoder of its buffer
(``mlu_buffer``), the stand-in of torch_mlu in the tests and the job's predictions share one
definition. Each rule cites its source; where the sources are silent the choice is a setting of
:class:`DetectionOutputSettings`, and the default says which source it leans on.

Inputs (CambriconECO/Pytorch_Yolov5_Inference ``quantize_online/yolo.py``): ``x[i].sigmoid()`` of the
three NCHW Detect convolutions, levels of stride 8, 16 and 32, each [B, na*(5+nc), H, W] with
channel ``a*(5+nc) + k`` = anchor a's field k (tx, ty, tw, th, obj, cls...), YOLOv5's layout;
``anchors`` = the 18 pixel anchor sizes (w, h pairs, 3 per level), ``num_anchors`` = len(anchors) as
the sample passes it.

Rules:

- decode (the yolov5 op's decode is not published; the CPU branch of the same ``yolo.py`` decodes
  this way, inferred to be what the op does): cx, cy = (2*sig - 0.5 + grid) * stride,
  w, h = (2*sig)**2 * anchor; box = (cx -+ w/2, cy -+ h/2), not clipped (no source clips);
- score per class = obj * class probability, NMS "by class": each class separately, so one box can
  be kept under several classes (the yolov3 plugin, CambriconECO/BANGC_Yolov3_Tutorial
  ``common/include/cnplugin.h`` and its kernel);
- more than max_box_num survivors: the max_box_num highest scores are kept and the count reads
  max_box_num (same plugin);
- float16 in and out (same plugin: "FLOAT16 data's integer part becomes inaccurate when value is
  larger than 2048"): the inputs are read as float16, the arithmetic here is float32 (the kernel's
  internal precision is not published), and every value written is rounded to float16;
- output per image (processor.cpp of CambriconECO/Pytorch_Yolov5_Inference
  ``offline/yolov5_offline_simple_demo``): a block of 64 + 7*max_box_num values, block i at
  i * (64 + 7*max_box_num); element 0 = the count, elements 1..63 unused (written 0 here); from
  element 64, 7 values a box: batch_id, class_id, score, x1, y1, x2, y2;
- coordinates: pixels of the letterboxed network input (processor.cpp subtracts the letterbox
  padding and divides by the scale; ``detect.py`` applies ``scale_coords`` to the raw values: a
  strong inference), or 0..1 of img_w / img_h (what the yolov3 kernel writes): a setting.

Silent points, each a setting (defaults in brackets):

- ``score_on`` [obj_x_cls]: whether ``conf_thres`` applies to obj * cls (the yolov3 plugin's score)
  or to the objectness alone;
- ``classes`` [each]: every class whose score passes is a candidate (per-class NMS, the plugin), or
  only the best class of a box;
- comparisons are strict, score > conf_thres and IoU > iou_thres suppresses (what the host's NMS does);
- boxes are written best score first; ties keep class order, then YOLOv5's (level, anchor, row,
  column) order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from yolomlu.postprocess.mlu_buffer import BOX_FIELDS, COORDS, HEADER
from yolomlu.postprocess.nms import nms

__all__ = [
    "CLASS_MODES",
    "SCORE_ON",
    "STRIDES",
    "DetectionOutputSettings",
    "detection_output_boxes",
    "pack_detection_buffer",
    "yolov5_detection_output",
]

STRIDES = (8, 16, 32)  # p3, p4, p5 (quantize_online/yolo.py)
ANCHOR_VALUES = 18  # the op's anchors: 3 (w, h) pairs per level, num_anchors = len(anchors) (yolo.py)
SCORE_ON = ("obj_x_cls", "obj")
CLASS_MODES = ("each", "best")


@dataclass(frozen=True)
class DetectionOutputSettings:
    """The op's choices the public sources do not state (see the module docstring).

    score_on: "obj_x_cls" (conf_thres on obj * cls) or "obj" (on the objectness).
    classes: "each" (every class above the threshold is a candidate) or "best" (the best class only).
    coords: "pixels" (letterboxed input pixels) or "normalized" (0..1 of img_w / img_h).
    """

    score_on: str = "obj_x_cls"
    classes: str = "each"
    coords: str = "pixels"

    def __post_init__(self) -> None:
        for key, value, choices in (("score_on", self.score_on, SCORE_ON), ("classes", self.classes, CLASS_MODES),
                                    ("coords", self.coords, COORDS)):  # fmt: skip
            if value not in choices:
                raise ValueError(f"{key}={value!r} is not valid; choose one of {list(choices)}")


def _check_inputs(levels: Sequence[Tensor], anchors: Sequence[int], num_classes: int, num_anchors: int,
                  img_h: int, img_w: int, max_box_num: int) -> int:  # fmt: skip
    """Validate the op's arguments; return the anchors per level."""
    if len(levels) != len(STRIDES):
        raise ValueError(f"yolov5_detection_output takes {len(STRIDES)} levels (p3, p4, p5), got {len(levels)}")
    if len(anchors) != num_anchors or num_anchors != ANCHOR_VALUES:
        raise ValueError(
            f"anchors: {len(anchors)} values with num_anchors={num_anchors}; expected {ANCHOR_VALUES} = len(anchors): "
            f"(w, h) of 3 anchors on each of {len(STRIDES)} levels, as the op takes them"
        )
    if num_classes < 1 or max_box_num < 1:
        raise ValueError(f"num_classes={num_classes} and max_box_num={max_box_num} must be positive")
    na = num_anchors // (2 * len(STRIDES))
    batch = levels[0].shape[0]
    for i, (x, stride) in enumerate(zip(levels, STRIDES)):
        expected = (batch, na * (5 + num_classes), img_h // stride, img_w // stride)
        if x.ndim != 4 or tuple(x.shape) != expected or img_h % stride or img_w % stride:
            raise ValueError(
                f"level {i} (stride {stride}) must be [B, na*(5+nc), img_h/{stride}, img_w/{stride}] = {list(expected)} "
                f"for img {img_h}x{img_w}, {na} anchors and {num_classes} classes; got {list(x.shape)}"
            )
    return na


def _decode(levels: Sequence[Tensor], anchors: Sequence[int], na: int, no: int) -> Tensor:
    """[B, N, no] float32: cx, cy, w, h (pixels), obj, class probabilities, N in YOLOv5's order."""
    out = []
    for i, (x, stride) in enumerate(zip(levels, STRIDES)):
        b, _, ny, nx = x.shape
        # float16 in: what the op reads is the input as float16 holds it
        y = x.to(torch.float16).to(torch.float32).reshape(b, na, no, ny, nx).permute(0, 1, 3, 4, 2)
        gy, gx = torch.meshgrid(torch.arange(ny, dtype=torch.float32), torch.arange(nx, dtype=torch.float32), indexing="ij")
        grid = torch.stack((gx, gy), -1).view(1, 1, ny, nx, 2)
        wh_px = torch.tensor(anchors[2 * na * i : 2 * na * (i + 1)], dtype=torch.float32).view(1, na, 1, 1, 2)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * stride
        wh = (y[..., 2:4] * 2) ** 2 * wh_px
        out.append(torch.cat((xy, wh, y[..., 4:]), -1).reshape(b, -1, no))
    return torch.cat(out, 1)


def _candidates(pred: Tensor, conf_thres: float, settings: DetectionOutputSettings) -> tuple[Tensor, Tensor, Tensor]:
    """(box index, class, score) of every (box, class) pair that enters NMS, for one image [N, no]."""
    obj = pred[:, 4]
    scores = pred[:, 5:] * obj[:, None]  # [N, nc]
    if settings.classes == "best":
        best, cls = scores.max(1)
        passed = best > conf_thres if settings.score_on == "obj_x_cls" else obj > conf_thres
        i = passed.nonzero(as_tuple=True)[0]
        return i, cls[i], best[i]
    passed = scores > conf_thres if settings.score_on == "obj_x_cls" else (obj > conf_thres)[:, None].expand_as(scores)
    i, c = passed.nonzero(as_tuple=True)
    return i, c, scores[i, c]


def detection_output_boxes(
    levels: Sequence[Tensor],
    anchors: Sequence[int],
    num_classes: int,
    num_anchors: int,
    img_h: int,
    img_w: int,
    conf_thres: float,
    iou_thres: float,
    max_box_num: int,
    settings: DetectionOutputSettings = DetectionOutputSettings(),
) -> list[Tensor]:
    """The boxes the op keeps, per image, before they are written into the buffer.

    levels: (p3, p4, p5) sigmoid outputs, any float dtype (read as float16).
    Returns B tensors float32 [n_i, 6]: x1, y1, x2, y2 (letterboxed input pixels, not rounded), score,
    class id; n_i <= max_box_num, best score first (see the module docstring for the rules).
    """
    na = _check_inputs(levels, anchors, num_classes, num_anchors, img_h, img_w, max_box_num)
    pred = _decode(levels, anchors, na, 5 + num_classes)
    half = pred[..., 2:4] / 2
    xyxy = torch.cat((pred[..., 0:2] - half, pred[..., 0:2] + half), -1)  # [B, N, 4]
    out = []
    for b in range(pred.shape[0]):
        i, c, s = _candidates(pred[b], conf_thres, settings)
        kept = []
        for cls in c.unique(sorted=True).tolist():  # NMS by class: classes never suppress each other
            of_class = (c == cls).nonzero(as_tuple=True)[0]
            keep = nms(xyxy[b, i[of_class]], s[of_class], iou_thres)
            kept.append(of_class[keep])
        chosen = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
        # best first across classes; stable, so ties keep class order then YOLOv5's box order
        chosen = chosen[s[chosen].argsort(descending=True, stable=True)][:max_box_num]
        out.append(torch.cat((xyxy[b, i[chosen]], s[chosen, None], c[chosen, None].float()), 1))
    return out


def pack_detection_buffer(
    boxes: Sequence[Tensor],
    max_box_num: int,
    img_h: int,
    img_w: int,
    coords: str = "pixels",
    dtype: torch.dtype = torch.float16,
) -> Tensor:
    """Write per-image boxes [n_i, 6] (x1, y1, x2, y2, score, class; pixels) as the op's buffer.

    Returns ``dtype`` [B, 64 + 7 * max_box_num]: per block the count min(n_i, max_box_num), 63 zeros,
    then per box batch_id, class_id, score, x1, y1, x2, y2 (x/y divided by img_w/img_h when
    ``coords="normalized"``), rounded to float16 before the cast to ``dtype``; unused rows are 0.
    """
    if coords not in COORDS:
        raise ValueError(f"coords={coords!r} is not valid; choose one of {list(COORDS)}")
    block = HEADER + BOX_FIELDS * max_box_num
    out = torch.zeros(len(boxes), block, dtype=torch.float32)
    scale = torch.tensor([img_w, img_h, img_w, img_h], dtype=torch.float32)
    for b, det in enumerate(boxes):
        if det.ndim != 2 or det.shape[1] != 6:
            raise ValueError(f"image {b}: boxes must be [n, 6] (x1, y1, x2, y2, score, class), got {list(det.shape)}")
        det = det[:max_box_num].float()
        n = det.shape[0]
        xyxy = det[:, :4] / scale if coords == "normalized" else det[:, :4]
        rows = torch.cat((torch.full((n, 1), float(b)), det[:, 5:6], det[:, 4:5], xyxy), 1)  # [n, 7]
        out[b, 0] = n
        out[b, HEADER : HEADER + BOX_FIELDS * n] = rows.flatten()
    return out.to(torch.float16).to(dtype)  # float16 out: every value as float16 holds it


def yolov5_detection_output(
    p3: Tensor,
    p4: Tensor,
    p5: Tensor,
    anchors: Sequence[int],
    num_classes: int,
    num_anchors: int,
    img_h: int,
    img_w: int,
    conf_thres: float,
    iou_thres: float,
    max_box_num: int,
    settings: DetectionOutputSettings = DetectionOutputSettings(),
    dtype: torch.dtype = torch.float16,
) -> Tensor:
    """The op on the CPU: (p3, p4, p5) sigmoid maps -> ``dtype`` [B, 64 + 7 * max_box_num] buffer.

    Arguments as the op takes them (module docstring); ``settings`` for what the sources leave open;
    ``dtype`` of the returned tensor (its values are float16 values whatever it is).
    """
    boxes = detection_output_boxes(
        (p3, p4, p5), anchors, num_classes, num_anchors, img_h, img_w, conf_thres, iou_thres, max_box_num, settings
    )
    return pack_detection_buffer(boxes, max_box_num, img_h, img_w, settings.coords, dtype)
