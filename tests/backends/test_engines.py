"""Engines alone: a file's engine is judged by its contents, and every kind opens and runs a batch."""

from pathlib import Path

import pytest
import torch

from yolomlu.backends import BackendError
from yolomlu.backends.engines import EngineSpec, spec_for_file
from yolomlu.backends.onnx_export import export_onnx
from yolomlu.model import build_yolov5

IMG = 64


@pytest.fixture(scope="module")
def model():
    from yolomlu.transforms import fuse

    torch.manual_seed(0)
    model = build_yolov5("v5", 0.33, 0.25, nc=3).eval()
    fuse(model)  # as cpu_reference runs it (and ONNX export wants float tensors only)
    return model


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("engines")
    example = torch.zeros(2, 3, IMG, IMG)
    torchscript = folder / "model.pt"
    torch.jit.save(torch.jit.trace(model, example, check_trace=False, strict=False), str(torchscript))
    exported = folder / "model.pt2"
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)), str(exported))
    onnx = folder / "model.onnx"
    export_onnx(model, onnx, IMG)
    return {"torchscript": torchscript, "export": exported, "onnx": onnx}


@pytest.mark.parametrize("kind", ["torchscript", "export", "onnx"])
def test_each_file_kind_is_recognised_and_runs(files, model, kind: str) -> None:
    spec = spec_for_file(files[kind], threads=1)
    assert spec.kind == kind
    batch = torch.rand(1, 3, IMG, IMG)
    outputs = spec.open()(batch)
    with torch.no_grad():
        expected = model(batch)
    assert [tuple(o.shape) for o in outputs] == [tuple(e.shape) for e in expected]
    assert max(float((torch.as_tensor(o) - e).abs().max()) for o, e in zip(outputs, expected)) < 1e-3


def test_a_module_runs_eager_or_traced(model) -> None:
    batch = torch.rand(1, 3, IMG, IMG)
    with torch.no_grad():
        expected = model(batch)
    for compiler in (None, "trace"):
        spec = EngineSpec("module", module=model, threads=1, compiler=compiler, img_size=IMG)
        got = spec.open()(batch)
        assert max(float((g - e).abs().max()) for g, e in zip(got, expected)) < 1e-4
    assert "torch.jit.trace" in EngineSpec("module", module=model, compiler="trace").describe()


def test_a_file_without_an_engine_is_refused_by_name(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, weights)
    with pytest.raises(ValueError, match="weights.pt.*holds no engine"):
        spec_for_file(weights)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        spec_for_file(tmp_path / "missing.onnx")
    with pytest.raises(BackendError, match="needs a file"):
        EngineSpec("onnx")
