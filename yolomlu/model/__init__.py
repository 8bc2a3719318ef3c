"""YOLOv5 models built from architecture files: blocks, the Detect head, the builder, fusion, summary.

Importing this package builds nothing and changes no global state.
"""

from yolomlu.model.blocks import C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus
from yolomlu.model.detect import Detect
from yolomlu.model.fuse import fuse_conv_bn
from yolomlu.model.summary import ModelSummary, count_flops, format_summary, summarize
from yolomlu.model.yolo import (
    ARCHS,
    REGISTRY,
    SIZES,
    ArchInfo,
    YOLOv5,
    build_yolov5,
    get_module,
    load_arch,
    make_divisible,
    scale_depth,
)

__all__ = [
    "ARCHS",
    "C3",
    "REGISTRY",
    "SIZES",
    "SPP",
    "SPPF",
    "ArchInfo",
    "Bottleneck",
    "Concat",
    "Conv",
    "Detect",
    "Focus",
    "ModelSummary",
    "YOLOv5",
    "build_yolov5",
    "count_flops",
    "format_summary",
    "fuse_conv_bn",
    "get_module",
    "load_arch",
    "make_divisible",
    "scale_depth",
    "summarize",
]
