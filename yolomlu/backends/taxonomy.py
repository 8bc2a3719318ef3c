"""Backend op names -> the porting study's layer types (CONV, ACTIVE, STRIDEDSLICE, ...).

The Cambricon profiler groups time by layer type; each backend names its ops differently, so this
table maps them onto one taxonomy and the profiles of different backends line up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from yolomlu.types import LayerProfile, LayerProfileRow

# Lower-case op name (without namespace) -> layer type. Unlisted ops count as OTHER.
_LAYER_TYPES = {
    # convolution
    "conv2d": "CONV", "convolution": "CONV", "_convolution": "CONV", "mkldnn_convolution": "CONV",
    "conv": "CONV", "qlinearconv": "CONV", "convinteger": "CONV", "fusedconv": "CONV",
    # activations
    "silu": "ACTIVE", "silu_": "ACTIVE", "sigmoid": "ACTIVE", "sigmoid_": "ACTIVE", "relu": "ACTIVE",
    "relu_": "ACTIVE", "hardswish": "ACTIVE", "leaky_relu": "ACTIVE", "leakyrelu": "ACTIVE",
    # element-wise arithmetic
    "mul": "MULT", "mul_": "MULT", "add": "ADD", "add_": "ADD", "sub": "SUB", "div": "DIV",
    # data movement
    "slice": "STRIDEDSLICE", "select": "STRIDEDSLICE", "strided_slice": "STRIDEDSLICE",
    "cat": "CONCAT", "concat": "CONCAT", "split": "SPLIT", "chunk": "SPLIT", "split_with_sizes": "SPLIT",
    "max_pool2d": "MAXPOOL", "max_pool2d_with_indices": "MAXPOOL", "maxpool": "MAXPOOL",
    "upsample_nearest2d": "INTERP", "upsample": "INTERP", "resize": "INTERP", "interpolate": "INTERP",
    "batch_norm": "BN", "batchnormalization": "BN", "_batch_norm_impl_index": "BN", "native_batch_norm": "BN",
    "view": "RESHAPE", "reshape": "RESHAPE", "flatten": "RESHAPE", "permute": "TRANSPOSE",
    "transpose": "TRANSPOSE", "contiguous": "COPY", "clone": "COPY", "copy_": "COPY", "to": "CAST",
    "_to_copy": "CAST", "quantizelinear": "QUANTIZE", "dequantizelinear": "DEQUANTIZE",
    # ONNX Runtime's fused and quantized kernels (op_name in its profile)
    "qlinearsigmoid": "ACTIVE", "quickgelu": "ACTIVE", "qlinearleakyrelu": "ACTIVE", "qlinearmul": "MULT",
    "qlinearadd": "ADD", "qlinearconcat": "CONCAT", "nhwcmaxpool": "MAXPOOL", "qlinearmaxpool": "MAXPOOL",
    "dynamicquantizelinear": "QUANTIZE", "reorderinput": "TRANSPOSE", "reorderoutput": "TRANSPOSE",
    "identity": "COPY", "cast": "CAST",
    # ORT rewrites the Focus stem's strided slices + concat into SpaceToDepth + a channel Gather
    "spacetodepth": "STRIDEDSLICE", "gather": "STRIDEDSLICE",
}  # fmt: skip


def layer_type(op_name: str) -> str:
    """``aten::conv2d`` / ``Conv`` / ``QLinearConv`` -> ``CONV``; unknown ops -> ``OTHER``."""
    short = op_name.rsplit("::", 1)[-1].lower()
    return _LAYER_TYPES.get(short, "OTHER")


def build_profile(events: Iterable[tuple[str, float]], passes: int = 1) -> LayerProfile:
    """(op name, microseconds) per executed op, over ``passes`` forwards -> a per-type table.

    Counts and times are per forward pass; rows are sorted slowest first; ratio is the share of
    the total.
    """
    count: dict[str, float] = defaultdict(float)
    time_us: dict[str, float] = defaultdict(float)
    for name, us in events:
        kind = layer_type(name)
        count[kind] += 1
        time_us[kind] += us
    total = sum(time_us.values()) or 1.0
    rows = [
        LayerProfileRow(kind, round(count[kind] / passes), time_us[kind] / passes, time_us[kind] / total)
        for kind in sorted(time_us, key=time_us.get, reverse=True)
    ]
    return LayerProfile(rows)
