"""Shared post-processing: decode the Detect head, NMS, map boxes back to the original image.

Imports ``types`` and the pure ``data.letterbox`` mappings only; nothing in ``data`` imports this package.
"""

from .decode import decode_outputs
from .nms import box_iou, nms, non_max_suppression, xywh_to_xyxy
from .rescale import to_detections

__all__ = ["box_iou", "decode_outputs", "nms", "non_max_suppression", "to_detections", "xywh_to_xyxy"]
