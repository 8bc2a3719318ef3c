"""Weight-preserving graph rewrites of a YOLOv5, each proved equivalent by measurement.

Each transform rewrites a model in place and returns how many layers it replaced:
`focus_to_conv` (v5.0 Focus stem -> 6x6 stride-2 Conv), `spp_to_sppf` (SPP(5, 9, 13) -> SPPF(5)) and
`fuse` (BatchNorm folded into each Conv). `apply_transforms` runs them by name and measures each
step's `parity_max_abs` on a caller's batch. Importing this package changes no global state.
"""

from yolomlu.transforms.focus import focus_as_conv, focus_kernel_to_conv_kernel, focus_to_conv
from yolomlu.transforms.fuse import fuse
from yolomlu.transforms.parity import TRANSFORMS, TransformReport, apply_transforms, get_transform, parity_max_abs
from yolomlu.transforms.spp import spp_as_sppf, spp_to_sppf, sppf_kernel_for

__all__ = [
    "TRANSFORMS",
    "TransformReport",
    "apply_transforms",
    "focus_as_conv",
    "focus_kernel_to_conv_kernel",
    "focus_to_conv",
    "fuse",
    "get_transform",
    "parity_max_abs",
    "spp_as_sppf",
    "spp_to_sppf",
    "sppf_kernel_for",
]
