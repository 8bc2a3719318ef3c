"""Decoder of the buffer that Cambricon's on-device YOLOv5 decode+NMS op returns.

``torch.ops.torch_mlu.yolov5_detection_output(p3, p4, p5, anchors, num_classes, num_anchors, img_h,
img_w, conf_thres, iou_thres, max_box_num)`` (legacy torch_mlu, MLU270/MLU220) writes, per batch item,
one block of ``64 + 7 * max_box_num`` floats:

    block[0]                      number of boxes written (the op caps it at max_box_num)
    block[1:64]                   reserved
    block[64 + 7*k : 64 + 7*k+7]  box k: batch_id, class_id, score, x1, y1, x2, y2

Box k of block i belongs to image i: each block holds one image's boxes, as Cambricon's offline YOLOv5
demo reads them (CambriconECO/Pytorch_Yolov5_Inference, ``offline/yolov5_offline_simple_demo/src/
processor.cpp``: block i starts at ``i * count``). ``batch_id`` is only checked to lie in ``[0, B)``, as
the online demo checks it (``quantize_online/detect.py`` ``get_boxes``).

Unlike the porting study's parser (which returned after the first box and dropped class ids), this
reads every box of every block at once, with tensor masks, and keeps the class id of each box.

Coordinates: most public parsers treat x/y as pixels of the letterboxed network input; one (the yolov3
convention) as 0..1 of the input's width/height. Which one a given SDK build writes is a setting
(``coords``), not a guess.

fp16 caveat: with half-precision inputs the device returns the buffer in float16, which holds every
integer only up to 2048. Counts (<= max_box_num, 1024 by default) and class ids are exact, but pixel
coordinates above 2048 come back rounded to a multiple of 2 (4 above 4096) -- already on the device,
before this decoder sees them. Values are read in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BOX_FIELDS", "COORDS", "HEADER", "DetectionBufferFormat", "decode_detection_buffer"]

HEADER = 64  # floats before the first box of a block
BOX_FIELDS = 7  # batch_id, class_id, score, x1, y1, x2, y2
COORDS = ("pixels", "normalized")


def decode_detection_buffer(
    buffer: torch.Tensor,
    batch_size: int,
    max_box_num: int,
    img_h: int,
    img_w: int,
    coords: str = "pixels",
    max_det: int | None = None,
) -> list[torch.Tensor]:
    """Every valid box of every batch item, in letterboxed network-input pixels.

    buffer: float (any dtype) of ``batch_size * (64 + 7 * max_box_num)`` elements, e.g. [B, 64 + 7*max]
        or flat; block i is image i.
    img_h, img_w: the network input size (the letterboxed image), used for ``coords="normalized"``.
    coords: "pixels" (x/y are input pixels) or "normalized" (0..1, multiplied by img_w / img_h).
    max_det: keep at most this many boxes per image, highest score first (None: all).

    A box is kept when its index is below the block's count (clamped to [0, max_box_num]), every field is
    finite, ``batch_id`` is an integer in [0, B), ``class_id`` a non-negative integer, x2 > x1 and y2 > y1.
    Returns B tensors float32 [n_i, 6]: x1, y1, x2, y2, score, class_id (integer-valued), in buffer order
    (or by descending score when ``max_det`` cuts), ready for ``yolomlu.postprocess.to_detections``.
    """
    if coords not in COORDS:
        raise ValueError(f"coords={coords!r} is not valid; choose one of {list(COORDS)}")
    if batch_size < 1 or max_box_num < 1 or img_h < 1 or img_w < 1:
        raise ValueError(f"need positive batch_size, max_box_num, img_h, img_w; got {batch_size}, {max_box_num}, {img_h}, {img_w}")
    if max_det is not None and max_det < 1:
        raise ValueError(f"max_det must be positive or None, got {max_det}")
    block = HEADER + BOX_FIELDS * max_box_num
    if buffer.numel() != batch_size * block:
        raise ValueError(
            f"detection buffer of shape {tuple(buffer.shape)} ({buffer.numel()} values) is not {batch_size} block(s) of "
            f"64 + 7 * max_box_num = {block} values; check backend.max_box_num and the batch size"
        )
    b = buffer.detach().to("cpu", torch.float32).reshape(batch_size, block)
    count = torch.nan_to_num(b[:, 0], nan=0.0).round().clamp(0, max_box_num).long()  # [B]
    rows = b[:, HEADER:].reshape(batch_size, max_box_num, BOX_FIELDS)  # [B, M, 7]
    batch_id, class_id, score = rows[..., 0], rows[..., 1], rows[..., 2]
    xyxy = rows[..., 3:7]
    if coords == "normalized":
        xyxy = xyxy * torch.tensor([img_w, img_h, img_w, img_h], dtype=torch.float32)

    keep = torch.arange(max_box_num).unsqueeze(0) < count.unsqueeze(1)
    keep &= torch.isfinite(rows).all(dim=-1)
    keep &= (batch_id == batch_id.round()) & (batch_id >= 0) & (batch_id < batch_size)
    keep &= (class_id == class_id.round()) & (class_id >= 0)
    keep &= (xyxy[..., 2] > xyxy[..., 0]) & (xyxy[..., 3] > xyxy[..., 1])

    table = torch.cat([xyxy, score.unsqueeze(-1), class_id.round().unsqueeze(-1)], dim=-1)  # [B, M, 6]
    out = []
    for i in range(batch_size):
        det = table[i][keep[i]]
        if max_det is not None and len(det) > max_det:
            det = det[det[:, 4].argsort(descending=True, stable=True)[:max_det]]
        out.append(det)
    return out


@dataclass(frozen=True)
class DetectionBufferFormat:
    """How to read a runner's detection buffer: what the job needs to decode it without knowing the backend.

    max_box_num: boxes per block (the op's max_box_num); img_h, img_w: network input size;
    coords: "pixels" or "normalized"; conf_thres, iou_thres: the thresholds the device applied (log them:
    they replace the job's NMS settings for this backend).
    multi_label: the device keeps a box under every class whose score passes (NMS by class, as the
    yolov3 plugin does: CambriconECO/BANGC_Yolov3_Tutorial ``common/include/cnplugin.h``); the host
    decode + NMS it is compared with (``yolomlu.evaluate.pipeline.device_nms``) does the same.
    """

    max_box_num: int
    img_h: int
    img_w: int
    coords: str = "pixels"
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    multi_label: bool = True

    def __post_init__(self) -> None:
        if self.coords not in COORDS:
            raise ValueError(f"coords={self.coords!r} is not valid; choose one of {list(COORDS)}")

    @property
    def block_size(self) -> int:
        return HEADER + BOX_FIELDS * self.max_box_num

    def decode(self, buffer: torch.Tensor, batch_size: int, max_det: int | None = None) -> list[torch.Tensor]:
        """:func:`decode_detection_buffer` with this format's settings."""
        return decode_detection_buffer(buffer, batch_size, self.max_box_num, self.img_h, self.img_w, self.coords, max_det)
