"""RECORDING STAND-IN — not Cambricon's code; records calls so tests can check the sequence.

A test double for the legacy ``torch_mlu`` (torch 1.3 era, MLU270/MLU220) that runs under this
workbench's torch 2.x on the CPU. It provides only what yolomlu's device worker calls:

- ``torch_mlu.core.mlu_model`` (``ct``): ``mlu_device`` (returns the CPU device), ``set_core_number``,
  ``set_core_version``, ``set_input_format``, ``set_device``, ``save_as_cambricon``;
- ``torch_mlu.core.mlu_quantize.quantize_dynamic_mlu``;
- ``torch.ops.torch_mlu.yolov5_detection_output`` (registered here with ``torch.library``), which returns
  a buffer of fixed, documented boxes rather than decoding anything;
- and, to put them in the recorded sequence, it wraps ``torch.jit.trace`` and ``torch.set_grad_enabled``
  for calls made from the worker script.

Importing it records ``import torch_mlu`` with the value of ``CNML_OPTIMIZE`` at that moment.
"""

import os

import torch

from torch_mlu._record import from_worker, record

__version__ = "0.0+recording-standin"
RECORDING_STANDIN = True

record("import torch_mlu", env={"CNML_OPTIMIZE": os.environ.get("CNML_OPTIMIZE")})

# -- the on-device decode+NMS op -----------------------------------------------------------------
HEADER, FIELDS = 64, 7
# (class_id, score, x1, y1, x2, y2) written for every batch item; batch_id is the item's index.
STANDIN_BOXES = ((1.0, 0.875, 10.0, 12.0, 30.0, 40.0), (0.0, 0.5, 4.0, 6.0, 20.0, 22.0))

_lib = torch.library.Library("torch_mlu", "DEF")
_lib.define(
    "yolov5_detection_output(Tensor p3, Tensor p4, Tensor p5, int[] anchors, int num_classes, int num_anchors, "
    "int img_h, int img_w, float conf_thres, float iou_thres, int max_box_num) -> Tensor"
)


def _yolov5_detection_output(p3, p4, p5, anchors, num_classes, num_anchors, img_h, img_w, conf_thres, iou_thres, max_box_num):
    record("torch.ops.torch_mlu.yolov5_detection_output", p3, p4, p5, list(anchors), num_classes, num_anchors,
           img_h, img_w, conf_thres, iou_thres, max_box_num)
    batch = p3.shape[0]
    out = torch.zeros(batch, HEADER + FIELDS * max_box_num, dtype=p3.dtype)
    for i in range(batch):
        boxes = STANDIN_BOXES[:max_box_num]
        out[i, 0] = len(boxes)
        for k, box in enumerate(boxes):
            out[i, HEADER + FIELDS * k : HEADER + FIELDS * (k + 1)] = torch.tensor((float(i),) + box, dtype=p3.dtype)
    return out


_lib.impl("yolov5_detection_output", _yolov5_detection_output, "CPU")

# -- torch calls that belong in the recorded sequence --------------------------------------------
_trace = torch.jit.trace
_set_grad_enabled = torch.set_grad_enabled


def _recording_trace(func, example_inputs, *args, **kwargs):
    if from_worker():
        record("torch.jit.trace", func, example_inputs, *args, **kwargs)
    return _trace(func, example_inputs, *args, **kwargs)


def _recording_set_grad_enabled(mode):
    if from_worker():
        record("torch.set_grad_enabled", mode)
    return _set_grad_enabled(mode)


torch.jit.trace = _recording_trace
torch.set_grad_enabled = _recording_set_grad_enabled
