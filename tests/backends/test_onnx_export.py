"""The ONNX export: one self-contained file ending at the Detect convolutions, with a dynamic batch."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from yolomlu.backends import BackendError
from yolomlu.backends.onnx_export import (
    _scope_to_module,
    cached_export,
    check_onnx,
    conv_node_names,
    export_onnx,
    model_fingerprint,
)

from tests.trained_like import trained_like_yolov5n

onnx = pytest.importorskip("onnx")

IMG = 64


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return trained_like_yolov5n()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "yolov5n.onnx", IMG)


def test_one_self_contained_file_ending_at_the_detect_convs(exported) -> None:
    files = sorted(p.name for p in exported.path.parent.iterdir())
    assert files == ["yolov5n.onnx"]  # no .onnx.data side file, no partial left behind
    proto = onnx.load(str(exported.path), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert sum(t.ByteSize() for t in proto.graph.initializer) > 0.9 * exported.bytes  # the weights are in it
    assert exported.opset == 17 and exported.input_name == "images"
    assert exported.output_names == ("p3", "p4", "p5")
    producers = {o: n for n in proto.graph.node for o in n.output}
    assert [producers[o].name for o in exported.output_names] == [f"/model.24/m.{i}/Conv" for i in range(3)]
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and not dims[0].dim_value
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, IMG, IMG]
    assert exported.conv_nodes == 62 and exported.qdq_convs == 0 and exported.export_s > 0


def test_every_conv_module_maps_to_its_node(model, exported) -> None:
    mapping = conv_node_names(exported.path)
    convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(mapping) == convs and len(set(mapping.values())) == len(convs) == 62
    assert mapping["model.2.m.0.cv1.conv"] == "/model.2/m/m.0/cv1/conv/Conv"
    assert mapping["model.0.conv.conv"] == "/model.0/conv/conv/Conv"  # Focus stem: conv inside conv
    assert mapping["model.24.m.1"] == "/model.24/m.1/Conv"


@pytest.mark.parametrize(
    ("node", "module"),
    [
        ("/model.2/m/m.0/cv1/conv/Conv", "model.2.m.0.cv1.conv"),
        ("/model.0/conv/conv/Conv", "model.0.conv.conv"),
        ("/model/model.3/conv/Conv_1", "model.3.conv"),  # a called Sequential's own scope, then its child
        ("/a/Conv", "a"),
        ("Conv_7", None),
    ],
)
def test_scope_paths_read_as_module_names(node, module) -> None:
    assert _scope_to_module(node) == module


def test_cache_reuses_the_file_and_keys_on_structure(model, tmp_path) -> None:
    first = cached_export(model, tmp_path, IMG)
    again = cached_export(model, tmp_path, IMG)
    assert again.path == first.path and first.export_s is not None and again.export_s is None
    # A rewrite that changes no tensor (SPP -> SPPF has no weights) must still change the key.
    a, b = nn.Sequential(nn.MaxPool2d(5, 1, 2)), nn.Sequential(nn.MaxPool2d(9, 1, 4))
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a, 64) != model_fingerprint(a, 32)


class SigmoidHead(nn.Module):
    """A head that decodes inside the graph: not what an exported model may end with."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 18, 1, stride=8)

    def forward(self, x):
        return [self.conv(x).sigmoid()]


def test_a_graph_that_does_not_end_at_a_conv_is_refused(tmp_path) -> None:
    with pytest.raises(BackendError, match=r"output 'out0' comes from Sigmoid node .* not a Detect convolution"):
        export_onnx(SigmoidHead(), tmp_path / "bad.onnx", 32)
    assert list(tmp_path.iterdir()) == []  # nothing that looks like a finished file


def test_old_opset_is_refused(model, tmp_path) -> None:
    with pytest.raises(BackendError, match=r"opset=11 is too old.*>= 13"):
        export_onnx(model, tmp_path / "m.onnx", IMG, opset=11)


def test_check_refuses_a_side_data_file(exported, tmp_path) -> None:
    proto = onnx.load(str(exported.path))
    onnx.save_model(proto, str(tmp_path / "split.onnx"), save_as_external_data=True, location="split.onnx.data", size_threshold=0)
    with pytest.raises(BackendError, match="not self-contained"):
        check_onnx(tmp_path / "split.onnx")


def test_missing_onnx_is_named(model, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(BackendError, match=r"needs the onnx package, which is not installed here \(torch 2\..*pip install onnx"):
        export_onnx(model, tmp_path / "m.onnx", IMG)


def test_a_half_precision_model_is_refused_not_converted(tmp_path) -> None:
    model = SigmoidHead().half()
    with pytest.raises(BackendError, match=r"needs the model in float32 on the CPU; it holds tensors of \['torch.float16 on cpu'\]"):
        export_onnx(model, tmp_path / "m.onnx", 32)
    assert model.conv.weight.dtype == torch.float16  # the caller's model is left as it was
