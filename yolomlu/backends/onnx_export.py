"""Export a detection model to one self-contained ONNX file that ends at the Detect convolutions.

The file is the onnxruntime backend's offline model (and ``task=export``'s product):

- input ``images``: float32 [batch, 3, img_size, img_size] in 0..1 (the shared letterbox output);
- outputs ``p3, p4, p5`` (``p<log2 stride>``): the raw Detect convolution maps, float32
  [batch, na*(5+nc), img_size/stride, img_size/stride]; decode and NMS stay in ``postprocess/``;
- the batch axis is dynamic, the spatial size is fixed (the letterbox always yields img_size²);
- opset 17 by default (13 at least), weights embedded in the file: no side ``.onnx.data`` file.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter. It needs only the
``onnx`` package, keeps module scopes in node names (``/model.2/cv1/conv/Conv``) and parameter names
on initializers (``model.2.cv1.conv.weight``), which :func:`conv_node_names` uses to map module names
to nodes, and it writes one file for models under protobuf's 2 GiB limit (YOLOv5x is ~350 MB). The
dynamo exporter, torch's default since 2.9, would add ``onnxscript`` (and ``onnx_ir``) as dependencies
and writes weights to a side file unless told otherwise. torch 2.13 marks the TorchScript exporter
deprecated; when it goes, switch to ``dynamo=True, external_data=False`` and re-check the node-name
mapping (the tests pin both the single file and the mapping).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolomlu.backends.base import BackendError

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "MIN_OPSET",
    "OnnxModelInfo",
    "cached_export",
    "check_onnx",
    "conv_node_names",
    "export_onnx",
    "import_onnx",
    "model_fingerprint",
]

INPUT_NAME = "images"
DEFAULT_OPSET = 17
MIN_OPSET = 13
# Batch of the example input: not 1, so no exporter can specialise the batch axis to a constant.
_EXPORT_BATCH = 2


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an ONNX file holds, read back from the file itself.

    path: the .onnx file; bytes: its size; opset: the default-domain opset it declares.
    conv_nodes: number of Conv nodes (fp32 convolutions); qdq_convs: Conv nodes whose data and
    weight inputs both come from DequantizeLinear nodes (int8 convolutions of a QDQ model, which
    ONNX Runtime runs as QLinearConv); qlinear_convs: QLinearConv nodes (QOperator format).
    export_s: seconds the export took, None when the file was reused from the cache.
    """

    path: Path
    input_name: str
    output_names: tuple[str, ...]
    opset: int
    bytes: int
    conv_nodes: int
    qdq_convs: int
    qlinear_convs: int
    export_s: float | None = None

    @property
    def mb(self) -> float:
        return self.bytes / 2**20


def import_onnx() -> Any:
    """The ``onnx`` package, or a BackendError naming it and what is installed."""
    try:
        import onnx
    except ImportError as exc:
        raise BackendError(
            f"exporting to ONNX needs the onnx package, which is not installed here "
            f"(torch {torch.__version__}); install it with: pip install onnx"
        ) from exc
    return onnx


def model_fingerprint(model: nn.Module, *extra: object) -> str:
    """Short hash of the module tree, every weight and buffer, and ``extra`` (settings that change
    the file). The tree is hashed too: a rewrite without weights (SPP -> SPPF) changes no tensor."""
    digest = hashlib.sha256(repr(model).encode())
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(repr(extra).encode())
    return digest.hexdigest()[:12]


def _output_names(model: nn.Module, n_outputs: int) -> list[str]:
    # p3/p4/p5 after the pyramid level (log2 of the stride), as YOLOv5 names them; out<i> for a model
    # without a Detect head (tests' tiny modules).
    stride = getattr(getattr(model, "detect", None), "stride", None)
    if stride is not None and len(stride) == n_outputs:
        names = [f"p{round(math.log2(float(s)))}" for s in stride]
        if len(set(names)) == n_outputs:
            return names
    return [f"out{i}" for i in range(n_outputs)]


def export_onnx(model: nn.Module, path: str | Path, img_size: int, opset: int = DEFAULT_OPSET) -> OnnxModelInfo:
    """Export ``model`` (eval mode, float32, CPU) to ``path``, written atomically, and check the file.

    Raises BackendError when the file is not what the runners rely on (a side data file, a graph
    output not produced by a Conv, a fixed batch axis).
    """
    onnx = import_onnx()
    if opset < MIN_OPSET:
        raise BackendError(f"backend.opset={opset} is too old; the onnxruntime backend needs opset >= {MIN_OPSET}")
    tensors = [*model.parameters(), *model.buffers()]
    odd = sorted({f"{t.dtype} on {t.device}" for t in tensors if t.dtype != torch.float32 or t.device.type != "cpu"})
    if odd:
        raise BackendError(f"ONNX export needs the model in float32 on the CPU; it holds tensors of {odd}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    example = torch.zeros(_EXPORT_BATCH, 3, img_size, img_size)
    with torch.no_grad():
        outputs = model(example)
    if not isinstance(outputs, (list, tuple)) or not all(isinstance(y, torch.Tensor) for y in outputs):
        raise BackendError(f"the model must return a list of per-level tensors to be exported, got {type(outputs).__name__}")
    output_names = _output_names(model, len(outputs))
    dynamic = {name: {0: "batch"} for name in [INPUT_NAME, *output_names]}
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    start = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Chosen on purpose (module docstring); its deprecation notice says nothing new per export.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(
                model,
                (example,),
                str(partial),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        seconds = time.perf_counter() - start
        _unshare_initializers(onnx, partial)
        info = check_onnx(partial, require_fp32_head=True)
        if info.output_names != tuple(output_names):
            raise BackendError(f"exported outputs {list(info.output_names)}, expected {output_names}")
        onnx.checker.check_model(str(partial))
        partial.replace(path)  # atomic: a crash never leaves a file that looks complete
    finally:
        partial.unlink(missing_ok=True)
    return OnnxModelInfo(**{**info.__dict__, "path": path, "export_s": seconds})


def _unshare_initializers(onnx, path: Path) -> int:
    """Give every node its own initializer again; return how many Identity nodes that removed.

    The TorchScript exporter stores identical tensors once and feeds the other users through
    ``Identity`` nodes. With random weights every BatchNorm folds to the same zero bias, so most
    convolutions then read their bias from an Identity: ONNX Runtime's quantizer wants biases as
    initializers (it quantizes them to int32 and fuses Conv into QLinearConv), and in operator form
    it fails outright. A copy per user costs a few kilobytes.
    """
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    shared = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in initializers]
    for node in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(initializers[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
        graph.node.remove(node)
    if shared:
        onnx.save(model, str(path))
    return len(shared)


def cached_export(model: nn.Module, work_dir: str | Path, img_size: int, opset: int = DEFAULT_OPSET) -> OnnxModelInfo:
    """:func:`export_onnx` into ``work_dir``, reusing the file that the same model (tree and weights),
    input size, opset and torch version wrote before."""
    key = model_fingerprint(model, img_size, opset, torch.__version__, "unshared-initializers")
    path = Path(work_dir) / f"onnx-{key}.onnx"
    if path.is_file():
        return check_onnx(path)
    return export_onnx(model, path, img_size, opset)


def check_onnx(path: str | Path, require_fp32_head: bool = False) -> OnnxModelInfo:
    """Read ``path`` back and check the runners' contract: one self-contained file (no initializer
    stored outside it), a dynamic batch axis, every output produced by a convolution (Conv, or
    QLinearConv / Conv→QuantizeLinear→DequantizeLinear in a quantized file unless
    ``require_fp32_head``)."""
    onnx = import_onnx()
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    external = [t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise BackendError(f"{path.name} is not self-contained: {len(external)} initializers live in side files (first: {external[0]})")
    producer = {out: node for node in graph.node for out in node.output}
    for output in graph.output:
        node = producer.get(output.name)
        if node is not None and node.op_type == "DequantizeLinear" and not require_fp32_head:
            # QDQ: Conv -> QuantizeLinear -> DequantizeLinear; QOperator: QLinearConv -> DequantizeLinear.
            node = producer.get(node.input[0])
            if node is not None and node.op_type == "QuantizeLinear":
                node = producer.get(node.input[0])
        if node is None or node.op_type not in ("Conv", "QLinearConv"):
            found = "a graph input or initializer" if node is None else f"{node.op_type} node {node.name!r}"
            raise BackendError(f"{path.name}: output {output.name!r} comes from {found}, not a Detect convolution")
        if require_fp32_head and node.op_type != "Conv":
            raise BackendError(f"{path.name}: output {output.name!r} comes from {node.op_type}, expected a float Conv")
    for tensor in [*graph.input, *graph.output]:
        batch = tensor.type.tensor_type.shape.dim[0]
        if not batch.dim_param:
            raise BackendError(f"{path.name}: {tensor.name!r} has a fixed batch size {batch.dim_value}; expected a dynamic axis")
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1:
        raise BackendError(f"{path.name}: expected one input, found {inputs}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    qdq = sum(
        1
        for n in convs
        if all(i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input[:2])
    )
    return OnnxModelInfo(
        path=path,
        input_name=inputs[0],
        output_names=tuple(o.name for o in graph.output),
        opset=opset,
        bytes=path.stat().st_size,
        conv_nodes=len(convs),
        qdq_convs=qdq,
        qlinear_convs=sum(1 for n in graph.node if n.op_type == "QLinearConv"),
    )


def conv_node_names(path_or_model: Any) -> dict[str, str]:
    """Torch module name -> ONNX Conv node name, for every Conv of an exported (fp32) file.

    Both ways are properties of the TorchScript exporter:
    1. the node name is the module's scope path: ``/model.2/m/m.0/cv1/conv/Conv`` is the conv of
       module ``model.2.m.0.cv1.conv`` (a scope step that extends the previous one, ``m`` then
       ``m.0``, replaces it: the Sequential's own scope, then its child);
    2. for a node without a scope path, the weight initializer keeps the parameter name:
       ``model.2.cv1.conv.weight`` feeds module ``model.2.cv1.conv``. It is only the fallback because the
       exporter de-duplicates identical tensors, so one initializer name can feed several convs.
    """
    onnx = import_onnx()
    model = path_or_model if hasattr(path_or_model, "graph") else onnx.load(str(path_or_model), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    mapping: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        module = _scope_to_module(node.name)
        weight = node.input[1]
        if module is None and weight in initializers and weight.endswith(".weight"):
            module = weight.removesuffix(".weight")
        if module is not None and module not in mapping:
            mapping[module] = node.name
    return mapping


def _scope_to_module(node_name: str) -> str | None:
    steps = [s for s in node_name.split("/") if s][:-1]  # the last step is the op ("Conv", "Conv_3")
    if not steps:
        return None
    parts: list[str] = []
    for step in steps:
        if parts and step.startswith(parts[-1] + "."):
            parts[-1] = step
        else:
            parts.append(step)
    return ".".join(parts)
