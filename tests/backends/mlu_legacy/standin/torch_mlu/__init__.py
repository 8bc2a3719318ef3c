"""EMULATING STAND-IN — not Cambricon's code: records every call, and computes what the device would.

A test double for the legacy ``torch_mlu`` (torch 1.3 era, MLU270/MLU220) that runs under this
workbench's torch 2.x on the CPU, inside the device worker's Python (here this project's venv, so it
imports yolomlu). It provides only what yolomlu's device worker calls, and for each call it

- records it (``_record``: name, arguments, order), so the sequence tests check what the worker asks
  of the SDK against Cambricon's public samples;
- computes the device's numerics from yolomlu's own emulation, so a job run on it logs a *prediction*
  of the MLU's accuracy (tagged ``accuracy=predicted_standin``, never as measured on a device):

  - ``torch_mlu.core.mlu_quantize.quantize_dynamic_mlu``: Cambricon's observers and scales
    (``yolomlu.quant.observers``) with the qconfig's semantics, the quantized state dict in Cambricon's
    layout (``yolomlu.quant.params_file``), and on the device int8/int16 convolutions
    (``yolomlu.quant.QuantConv2d``) with float16 between layers (``yolomlu.quant.emulate_float_precision``);
  - ``torch.ops.torch_mlu.yolov5_detection_output`` (registered here with ``torch.library``): the CPU
    reference ``yolomlu.postprocess.detection_output`` (the plugin's documented rules; its silent
    points are settings, read from ``YOLOMLU_STANDIN_SCORE_ON``, ``YOLOMLU_STANDIN_CLASSES`` and
    ``YOLOMLU_STANDIN_COORDS`` when set, e.g. through ``backend.env``);
  - ``torch_mlu.core.mlu_model`` (``ct``): ``mlu_device`` (the CPU device), ``set_core_number``,
    ``set_core_version``, ``set_input_format``, ``set_device``, ``save_as_cambricon`` (writes a
    placeholder file, not a Cambricon model).

What it does not do: time anything on an MLU (its times are this machine's CPU times), write the
SDK's profiles or hardware times (unless a test replays a fixture of their documented text, see
``core.mlu_model``), or run CNML's fusion (``config.ini`` reaches it as ``CNML_OPTIMIZE`` and is
recorded, nothing more). To put ``torch.jit.trace`` and ``torch.set_grad_enabled`` into the recorded
sequence it wraps them for calls made from the worker script.

Self-identification, which the worker reports to the runner: ``RECORDING_STANDIN`` (not the SDK:
its calls are recorded) and ``EMULATING_STANDIN`` (what it computes instead of the device).
"""

import os

import torch

from torch_mlu._record import from_worker, record

__version__ = "0.0+emulating-standin"
RECORDING_STANDIN = True
EMULATING_STANDIN = (
    "yolomlu's emulation of the MLU270: Cambricon's int8/int16 scales and convolutions (yolomlu.quant), "
    "float16 between layers, and yolomlu.postprocess.detection_output for yolov5_detection_output"
)

record("import torch_mlu", env={"CNML_OPTIMIZE": os.environ.get("CNML_OPTIMIZE")})

# -- the on-device decode+NMS op -----------------------------------------------------------------
_lib = torch.library.Library("torch_mlu", "DEF")
_lib.define(
    "yolov5_detection_output(Tensor p3, Tensor p4, Tensor p5, int[] anchors, int num_classes, int num_anchors, "
    "int img_h, int img_w, float conf_thres, float iou_thres, int max_box_num) -> Tensor"
)


def detection_settings():
    """The reference's settings for the op's silent points: its defaults, or the YOLOMLU_STANDIN_* environment."""
    from yolomlu.postprocess.detection_output import DetectionOutputSettings

    defaults = DetectionOutputSettings()
    return DetectionOutputSettings(
        score_on=os.environ.get("YOLOMLU_STANDIN_SCORE_ON", defaults.score_on),
        classes=os.environ.get("YOLOMLU_STANDIN_CLASSES", defaults.classes),
        coords=os.environ.get("YOLOMLU_STANDIN_COORDS", defaults.coords),
    )


def _yolov5_detection_output(p3, p4, p5, anchors, num_classes, num_anchors, img_h, img_w, conf_thres, iou_thres, max_box_num):
    from yolomlu.postprocess.detection_output import yolov5_detection_output

    record("torch.ops.torch_mlu.yolov5_detection_output", p3, p4, p5, list(anchors), num_classes, num_anchors,
           img_h, img_w, conf_thres, iou_thres, max_box_num)
    return yolov5_detection_output(p3, p4, p5, list(anchors), num_classes, num_anchors, img_h, img_w, conf_thres,
                                   iou_thres, max_box_num, detection_settings(), dtype=p3.dtype)


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
