"""The device worker must run in the SDK's Python 3.6 with only stdlib, numpy, torch and torch_mlu."""

from __future__ import annotations

import ast
import sys

import pytest

from yolomlu.backends.mlu_legacy.runner import WORKER

ALLOWED_TOP_LEVEL = {"numpy", "torch", "torch_mlu"}


def _tree() -> ast.Module:
    return ast.parse(WORKER.read_text(encoding="utf-8"), feature_version=(3, 6))


def test_worker_parses_as_python_3_6() -> None:
    _tree()  # raises SyntaxError on walrus, positional-only parameters, match, ... (3.7+ grammar)


def test_worker_imports_only_stdlib_numpy_torch_and_torch_mlu() -> None:
    modules = set()
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the worker runs alone in the job folder"
            assert node.module != "__future__", "no __future__ imports (annotations is 3.7+)"
            modules.add(node.module.split(".")[0])
    foreign = {m for m in modules - ALLOWED_TOP_LEVEL if m not in sys.stdlib_module_names}
    assert not foreign, f"the worker imports {foreign}"
    assert "yolomlu" not in modules
    # Standard-library modules that do not exist in Python 3.6.
    assert not modules & {"dataclasses", "contextvars", "importlib_resources", "zoneinfo", "graphlib", "tomllib"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def test_worker_avoids_torch_apis_newer_than_1_3() -> None:
    tree = _tree()
    used = {_dotted(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    newer = {"nn.SiLU", "nn.Hardswish", "nn.Mish", "torch.inference_mode", "torch.compile", "torch.export"}
    assert not used & newer, f"{used & newer} do not exist in torch 1.3"
    keywords = {k.arg for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords}
    assert not keywords & {"persistent", "weights_only", "strict_trace"}, "keyword arguments newer than torch 1.3"


def test_vermin_finds_nothing_newer_than_python_3_6_in_the_worker() -> None:
    """A static minimum-version check (vermin, in the dev extra): modules, functions, keyword arguments and
    syntax of the worker that need a Python newer than the SDK's 3.6."""
    try:
        from vermin import Config, detect
    except ImportError:
        pytest.fail("vermin is not installed: it is in the dev extra (pip install -e '.[dev]')")
    config = Config()
    # The check can fail: a 3.8 f-string and a 3.7 keyword argument are caught.
    assert detect("x = 1\nprint(f'{x=}')\n", config)[1] == (3, 8)
    assert detect("import subprocess\nsubprocess.run(['ls'], capture_output=True)\n", config)[1] == (3, 7)
    needs = detect(WORKER.read_text(encoding="utf-8"), config)[1]
    assert needs is not None and needs <= (3, 6), f"worker.py needs Python {needs}"
