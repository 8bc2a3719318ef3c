"""Letterbox resize (keep aspect, pad) and the box mappings between the original and letterboxed image.

The convention is YOLOv5's: one scale ``ratio`` for both axes, the resized image centred in the canvas,
padding filled with grey 114. Where the padding is odd, the extra pixel goes to the bottom/right.
``boxes_to_letterboxed`` and ``boxes_to_original`` are exact inverses of each other (up to clipping),
so the same ``LetterboxInfo`` carries boxes both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["LetterboxInfo", "letterbox", "boxes_to_original", "boxes_to_letterboxed"]


@dataclass(frozen=True)
class LetterboxInfo:
    """How one image was letterboxed.

    orig_shape: (h, w) of the original image
    new_shape:  (h, w) of the letterboxed image (the network input)
    ratio:      scale applied to the original image (same for both axes)
    pad:        (left, top) padding in letterboxed pixels
    """

    orig_shape: tuple[int, int]
    new_shape: tuple[int, int]
    ratio: float
    pad: tuple[float, float]


def _as_hw(new_shape: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(new_shape, (int, np.integer)) and not isinstance(new_shape, bool):
        hw = (int(new_shape), int(new_shape))
    elif isinstance(new_shape, (tuple, list)) and len(new_shape) == 2:
        hw = (int(new_shape[0]), int(new_shape[1]))
    else:
        raise ValueError(f"new_shape must be an int or (h, w), got {new_shape!r}")
    if hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"new_shape must be positive, got {new_shape!r}")
    return hw


def letterbox(
    image: np.ndarray,
    new_shape: int | tuple[int, int],
    stride: int = 32,
    auto: bool = False,
    scaleup: bool = True,
    pad_value: int = 114,
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize ``image`` keeping its aspect ratio and pad it to ``new_shape``.

    image:     uint8 [H, W, 3], RGB
    new_shape: int (square) or (h, w) target size
    stride:    with ``auto=True`` the output is only padded to the smallest multiple of ``stride``
               that holds the resized image (rectangular inference), never larger than ``new_shape``
    scaleup:   if False, images are only ever shrunk (better mAP for some val setups)
    Returns the letterboxed uint8 [h, w, 3] image and its ``LetterboxInfo``.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"letterbox expects a uint8 HxWx3 image, got {desc}")
    h0, w0 = image.shape[:2]
    if h0 == 0 or w0 == 0:
        raise ValueError(f"letterbox got an empty image of shape {image.shape}")
    th, tw = _as_hw(new_shape)
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")

    ratio = min(th / h0, tw / w0)
    if not scaleup:
        ratio = min(ratio, 1.0)
    # The resized size is rounded to whole pixels; the mappings below use `ratio` itself, so a box
    # may be off by at most half a pixel at the far edge (the YOLOv5 convention).
    rw, rh = max(1, int(round(w0 * ratio))), max(1, int(round(h0 * ratio)))
    dw, dh = tw - rw, th - rh
    if auto:
        dw, dh = dw % stride, dh % stride
    left, top = dw // 2, dh // 2
    out_h, out_w = rh + dh, rw + dw

    if (rh, rw) != (h0, w0):
        resized = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BILINEAR))
    else:
        resized = image
    out = np.full((out_h, out_w, 3), pad_value, dtype=np.uint8)
    out[top : top + rh, left : left + rw] = resized
    info = LetterboxInfo(
        orig_shape=(int(h0), int(w0)),
        new_shape=(int(out_h), int(out_w)),
        ratio=float(ratio),
        pad=(float(left), float(top)),
    )
    return out, info


def _check_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {boxes.shape}")
    return boxes


def _out_dtype(boxes: np.ndarray) -> np.dtype:
    return boxes.dtype if np.issubdtype(boxes.dtype, np.floating) else np.dtype(np.float32)


def boxes_to_original(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map xyxy boxes from letterboxed pixels back to original-image pixels, clipped to the image.

    boxes: [N, 4] x1 y1 x2 y2 in letterboxed pixels. Returns [N, 4] in the input's float dtype
    (float32 for integer input), 0 <= x <= W, 0 <= y <= H of the original image.
    """
    boxes = _check_boxes(boxes)
    left, top = info.pad
    b = boxes.astype(np.float64)
    b = (b - np.array([left, top, left, top])) / info.ratio
    h0, w0 = info.orig_shape
    b[:, 0::2] = b[:, 0::2].clip(0, w0)
    b[:, 1::2] = b[:, 1::2].clip(0, h0)
    return b.astype(_out_dtype(boxes))


def boxes_to_letterboxed(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map xyxy boxes from original-image pixels to letterboxed pixels (the inverse of ``boxes_to_original``).

    boxes: [N, 4] x1 y1 x2 y2 in original pixels. Returns [N, 4] in the input's float dtype
    (float32 for integer input). No clipping: boxes inside the original stay inside the resized region.
    """
    boxes = _check_boxes(boxes)
    left, top = info.pad
    b = boxes.astype(np.float64) * info.ratio + np.array([left, top, left, top])
    return b.astype(_out_dtype(boxes))
