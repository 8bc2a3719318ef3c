"""Tests of yolomlu.model.checkpoint: official-style checkpoints load without the yolov5 repository,
malicious pickles are refused before anything runs, mismatches are reported by name and shape."""

from __future__ import annotations

import codecs
import contextlib
import datetime
import importlib.abc
import importlib.util
import os
import pathlib
import pickle
import re
import subprocess
import sys
import tarfile
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yolomlu.model.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_weights,
    read_checkpoint,
    save_state_dict,
)

ANCHORS = [[10, 13, 16, 30, 33, 23]]  # one level keeps the toy model small


# ------------------------------------------------------------- a throwaway `models` package


COMMON_SRC = """
import torch.nn as nn


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if k != 6 else 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()


class Focus(nn.Module):
    def __init__(self, c1, c2, k=1):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k)
"""

YOLO_SRC = """
import torch
import torch.nn as nn

from models.common import Conv, Focus

ANCHORS = [[10, 13, 16, 30, 33, 23]]


class Detect(nn.Module):
    def __init__(self, nc, anchors, ch, grid_buffer):
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        a = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchors", a)
        if grid_buffer:  # v5.0 official models register it; ours derives it
            self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)


class Model(nn.Module):
    def __init__(self, nc=2, stem="focus", grid_buffer=True):
        super().__init__()
        self.yaml = {"nc": nc, "depth_multiple": 0.33, "width_multiple": 0.5, "anchors": ANCHORS}
        first = Focus(3, 8, 3) if stem == "focus" else Conv(3, 8, 6, 2)
        detect = Detect(nc, ANCHORS, (16,), grid_buffer)
        self.model = nn.Sequential(first, Conv(8, 16, 3, 2), nn.Upsample(scale_factor=2.0), detect)
        self.names = [f"class{i}" for i in range(nc)]
        self.nc = nc
        self.stride = torch.tensor([8.0])
"""


def _make_yolov5_modules(folder: Path) -> dict[str, types.ModuleType]:
    """Tiny look-alikes of yolov5's classes in modules named models.common / models.yolo.

    They are plain module objects (never importable from disk), but their source lives in files,
    as in the real repository: torch's legacy writer stores each class's source, and the loader
    must cope with it.
    """
    pkg = types.ModuleType("models")
    pkg.__path__ = []  # a package, so `models.yolo` is a valid pickle reference
    modules: dict[str, types.ModuleType] = {"models": pkg}
    try:
        for name, source in (("models.common", COMMON_SRC), ("models.yolo", YOLO_SRC)):
            file = folder / (name.replace(".", "_") + ".py")
            file.write_text(source)
            module = types.ModuleType(name)
            module.__file__ = str(file)
            sys.modules[name] = modules[name] = module  # models.yolo imports models.common
            setattr(pkg, name.split(".")[1], module)
            exec(compile(source, str(file), "exec"), module.__dict__)
    finally:
        for name in modules:
            sys.modules.pop(name, None)
    return modules


class _BlockModelsImports(importlib.abc.MetaPathFinder):
    """Fails every import of `models...` and remembers it: the loader must never try one."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "models" or fullname.startswith("models."):
            self.attempts.append(fullname)
            raise ImportError(f"blocked import of {fullname}")
        return None


@pytest.fixture
def yolov5(tmp_path_factory):
    """The throwaway classes, registered in sys.modules only inside ``with yolov5.installed():``."""
    modules = _make_yolov5_modules(tmp_path_factory.mktemp("yolov5_src"))

    @contextlib.contextmanager
    def installed():
        assert not any(name in sys.modules for name in modules)
        sys.modules.update(modules)
        try:
            yield
        finally:
            for name in modules:
                sys.modules.pop(name, None)

    model_cls = modules["models.yolo"].Model
    ns = types.SimpleNamespace(
        installed=installed,
        Model=model_cls,  # as an official checkpoint holds it (with the anchor_grid buffer)
        Target=lambda **kw: model_cls(grid_buffer=False, **kw),  # what our model registers
    )
    yield ns
    for name in modules:
        sys.modules.pop(name, None)


@pytest.fixture
def no_models_package():
    """While loading: no `models` module is importable, and none is imported."""
    blocker = _BlockModelsImports()
    sys.meta_path.insert(0, blocker)
    try:
        assert "models" not in sys.modules
        with pytest.raises(ImportError):
            importlib.util.find_spec("models")
        blocker.attempts.clear()
        yield blocker
    finally:
        sys.meta_path.remove(blocker)
    assert blocker.attempts == [], f"the loader tried to import {blocker.attempts}"


def _official_ckpt(model: nn.Module, **fields) -> dict:
    """A dict shaped like a stripped ultralytics release checkpoint."""
    return {
        "epoch": -1,
        "best_fitness": np.array([0.5]),  # yolov5 stores an ndarray here
        "training_results": None,
        "model": model,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "wandb_id": None,
        "opt": {"weights": pathlib.Path("yolov5s.pt"), "img_size": [640], "lr": np.float64(0.01)},
        "date": "2021-04-12T10:00:00",
        **fields,
    }


def _save(obj, path: Path, legacy: bool = False) -> Path:
    with warnings.catch_warnings():
        # torch's legacy writer looks for each class's source; the throwaway modules have none
        warnings.simplefilter("ignore")
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


# ------------------------------------------------------------------------ official checkpoints


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_official_checkpoint_loads_without_the_yolov5_repository(
    tmp_path, yolov5, no_models_package, legacy
):
    with yolov5.installed():
        torch.manual_seed(0)
        model = yolov5.Model(nc=2)
        reference = {k: v.clone() for k, v in model.half().state_dict().items()}
        path = _save(_official_ckpt(model), tmp_path / "yolov5t.pt", legacy=legacy)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, info = read_checkpoint(path)

    assert [str(w.message) for w in caught] == []

    assert list(state) == [k for k in reference if not k.endswith("anchor_grid")]
    assert "model.0.conv.conv.weight" in state  # v5.0 Focus naming kept as is
    assert "model.3.anchors" in state
    for key, tensor in state.items():
        expected = reference[key]
        if expected.is_floating_point():
            assert tensor.dtype == torch.float32, key
            assert torch.equal(tensor, expected.float()), key
        else:
            assert tensor.dtype == expected.dtype and torch.equal(tensor, expected), key
        assert not isinstance(tensor, nn.Parameter) and not tensor.requires_grad
    assert isinstance(info, CheckpointInfo)
    assert info.path == path and info.format == "official"
    assert info.names == ["class0", "class1"] and info.nc == 2
    assert info.yaml == {"nc": 2, "depth_multiple": 0.33, "width_multiple": 0.5, "anchors": ANCHORS}
    assert info.extra["epoch"] == -1
    assert info.extra["best_fitness"] == [0.5]
    assert info.extra["date"] == "2021-04-12T10:00:00"
    assert info.extra["opt"] == {"weights": "yolov5s.pt", "img_size": [640], "lr": 0.01}
    assert info.extra["source"] == "model"
    assert info.extra["model_class"] == "models.yolo.Model"
    assert info.extra["dtype"] == "float16"
    assert info.extra["dropped_keys"] == ["model.3.anchor_grid"]
    assert info.extra["stride"] == [8.0]
    assert "optimizer" not in info.extra and "model" not in info.extra


def test_legacy_file_with_class_sources_writes_nothing(
    tmp_path, yolov5, no_models_package, monkeypatch
):
    """Legacy files carry each class's source; torch compares it and, with dump_patches, would
    write .patch files into the working directory. Stand-ins keep that from happening."""
    with yolov5.installed():
        path = _save(_official_ckpt(yolov5.Model().half()), tmp_path / "old.pt", legacy=True)
    assert b"class Focus(nn.Module)" in path.read_bytes()
    monkeypatch.setattr(nn.Module, "dump_patches", True)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, info = read_checkpoint(path)

    assert [str(w.message) for w in caught] == [] and list(workdir.iterdir()) == []
    assert info.extra["model_class"] == "models.yolo.Model" and "model.3.anchors" in state


def test_ema_is_preferred_over_model(tmp_path, yolov5, no_models_package):
    with yolov5.installed():
        model, ema = yolov5.Model(), yolov5.Model()
        with torch.no_grad():
            for p in ema.parameters():
                p.fill_(0.25)
        ema.names = {0: "cat", 1: "dog"}  # newer yolov5 keeps names as a dict
        ckpt = _official_ckpt(model.half(), ema=ema.half(), updates=1234)
        path = _save(ckpt, tmp_path / "last.pt")

    state, info = read_checkpoint(path)

    assert info.extra["source"] == "ema" and info.extra["updates"] == 1234
    assert torch.all(state["model.1.conv.weight"] == 0.25)
    assert info.names == ["cat", "dog"]


def test_bare_pickled_model_loads(tmp_path, yolov5, no_models_package):
    with yolov5.installed():
        path = _save(yolov5.Model(nc=3), tmp_path / "model.pt")

    state, info = read_checkpoint(path)

    assert info.format == "official" and info.nc == 3 and "model.3.m.0.weight" in state


def test_official_checkpoint_loads_into_a_matching_model(tmp_path, yolov5, no_models_package):
    with yolov5.installed():
        source = yolov5.Model()
        path = _save(_official_ckpt(source.half()), tmp_path / "yolov5t.pt")
    target = yolov5.Target()

    info = load_weights(target, path)

    assert info.names == ["class0", "class1"]
    for key, tensor in target.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[key].to(tensor.dtype)), key


# ------------------------------------------------------------------------- malicious pickles


class _Call:
    """Pickles as ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


PAYLOADS = {
    # name: (payload factory(marker), the global the refusal must name, live when unpickled)
    "os.system": (lambda m: _Call(os.system, f"touch {m}"), f"{os.system.__module__}.system"),
    "exec": (lambda m: _Call(exec, _touch_code(m)), "builtins.exec"),
    "eval": (lambda m: _Call(eval, _touch_code(m)), "builtins.eval"),
    "Popen": (lambda m: _Call(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
    "check_call": (
        lambda m: _Call(subprocess.check_call, ["touch", str(m)]),
        "subprocess.check_call",
    ),
    "torch.load": (lambda m: _Call(torch.load, str(m)), "torch.serialization.load"),
    "getattr": (lambda m: _Call(getattr, "abc", "upper"), "builtins.getattr"),
    "codecs": (lambda m: _Call(codecs.encode, "abc", "rot13"), "_codecs.encode"),
}
LIVE = ["os.system", "exec", "eval", "Popen", "check_call"]


@pytest.mark.parametrize("name", LIVE)
def test_payloads_are_live_under_plain_pickle(tmp_path, name):
    """Guards the refusal tests: these payloads do run when unpickled without restriction."""
    marker = tmp_path / "marker"
    result = pickle.loads(pickle.dumps(PAYLOADS[name][0](marker), protocol=2))
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert marker.exists()


def _write_container(kind: str, payload, path: Path, yolov5) -> Path:
    if kind in ("raw2", "raw4"):
        path.write_bytes(pickle.dumps(payload, protocol=int(kind[-1])))
    elif kind == "zip":
        _save(payload, path)
    elif kind == "legacy":
        _save(payload, path, legacy=True)
    elif kind in ("nested-zip", "nested-legacy"):
        with yolov5.installed():
            ckpt = _official_ckpt(yolov5.Model().half())
            ckpt["opt"] = {"hyp": {"lr0": 0.01, "evil": [payload]}}  # deep inside a valid file
            _save(ckpt, path, legacy=kind == "nested-legacy")
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize("kind", ["raw2", "raw4", "zip", "legacy", "nested-zip", "nested-legacy"])
@pytest.mark.parametrize("name", list(PAYLOADS))
def test_malicious_pickle_is_refused_and_never_runs(
    tmp_path, yolov5, no_models_package, name, kind
):
    marker = tmp_path / "marker"
    factory, global_name = PAYLOADS[name]
    path = _write_container(kind, factory(marker), tmp_path / f"evil-{kind}.pt", yolov5)

    with pytest.raises(UnsafeCheckpointError) as excinfo:
        read_checkpoint(path)

    assert not marker.exists()
    assert excinfo.value.global_name == global_name
    assert excinfo.value.path == path
    message = str(excinfo.value)
    assert f"'{global_name}'" in message and str(path) in message
    assert "nothing was executed" in message


def test_refusal_through_load_weights(tmp_path):
    marker = tmp_path / "marker"
    path = _save({"state_dict": {"w": torch.zeros(1)}, "x": _Call(os.system, f"touch {marker}")},
                 tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|nt\.system"):
        load_weights(nn.Linear(1, 1), path)
    assert not marker.exists()


def test_calling_a_model_class_is_refused(tmp_path, yolov5, no_models_package):
    """Stand-ins may be rebuilt from state (NEWOBJ + BUILD), never called with arguments."""
    with yolov5.installed():
        path = _save({"model": _Call(yolov5.Model, 2)}, tmp_path / "call.pt")
    conv_path = _save({"model": _Call(nn.Conv2d, 1, 1, 1)}, tmp_path / "conv.pt")

    with pytest.raises(UnsafeCheckpointError, match=r"calls 'models\.yolo\.Model'") as excinfo:
        read_checkpoint(path)
    assert excinfo.value.global_name == "models.yolo.Model"
    with pytest.raises(UnsafeCheckpointError, match=r"calls 'torch\.nn\.modules\.conv\.Conv2d'"):
        read_checkpoint(conv_path)


def test_dotted_names_do_not_walk_attributes(tmp_path):
    # protocol 4 STACK_GLOBAL('builtins', 'object.__subclasses__') then call it: a classic escape
    raw = (
        b"\x80\x04\x8c\x08builtins\x94\x8c\x15object.__subclasses__\x94\x93\x94)R\x94."
    )
    path = tmp_path / "dotted.pkl"
    path.write_bytes(raw)
    assert isinstance(pickle.loads(raw), list)  # the payload is valid pickle

    with pytest.raises(UnsafeCheckpointError) as excinfo:
        read_checkpoint(path)
    assert excinfo.value.global_name == "builtins.object.__subclasses__"


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(nn.Linear(2, 2), torch.zeros(1, 2)), path)
    with pytest.raises(CheckpointError, match="TorchScript archive") as excinfo:
        read_checkpoint(path)
    assert str(path) in str(excinfo.value)


def test_tar_archive_is_refused(tmp_path):
    payload = tmp_path / "storages"
    payload.write_bytes(b"x")
    path = tmp_path / "old.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(payload, arcname="storages")
    with pytest.raises(CheckpointError, match=r"tar archive \(torch < 0\.4 format\)"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------- state_dicts


def _tiny() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model"])
def test_plain_state_dict_loads(tmp_path, wrap):
    source = _tiny().half()
    sd = OrderedDict(source.state_dict())
    sd["9.anchor_grid"] = torch.zeros(1, 1, 3, 1, 1, 2)  # a v5.0 model.state_dict() has it
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 7}, "model": {"model": sd}}[wrap]
    path = _save(obj, tmp_path / "sd.pt")
    target = _tiny()

    info = load_weights(target, path)

    assert info.format == "state_dict" and info.names is None and info.nc is None
    assert info.extra["dropped_keys"] == ["9.anchor_grid"] and info.extra["dtype"] == "float16"
    assert torch.equal(target[0].weight, source[0].weight.float())
    assert torch.equal(target[1].num_batches_tracked, source[1].num_batches_tracked)
    if wrap == "state_dict":
        assert info.extra["epoch"] == 7


def test_mismatching_state_dict_names_keys_and_shapes(tmp_path):
    sd = _tiny().state_dict()
    sd["0.weight"] = torch.zeros(5, 3, 3, 3)  # wrong shape
    del sd["1.bias"]  # missing
    sd["extra.weight"] = torch.zeros(2)  # unexpected
    path = _save(sd, tmp_path / "bad.pt")
    target = _tiny()
    before = {k: v.clone() for k, v in target.state_dict().items()}

    with pytest.raises(CheckpointMismatchError) as excinfo:
        load_weights(target, path)

    error = excinfo.value
    message = str(error)
    assert isinstance(error, CheckpointError) and isinstance(error, ValueError)
    assert f"checkpoint {path} does not match the model (Sequential)" in message
    assert "missing keys (1): 1.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "shape mismatches (1): 0.weight: checkpoint [5, 3, 3, 3] vs model [4, 3, 3, 3]" in (
        message
    )
    assert error.missing == ["1.bias"] and error.unexpected == ["extra.weight"]
    assert error.mismatched == [("0.weight", (5, 3, 3, 3), (4, 3, 3, 3))]
    for key, value in target.state_dict().items():  # nothing was loaded
        assert torch.equal(value, before[key]), key


def test_mismatch_lists_at_most_five_keys(tmp_path):
    path = _save({f"layer{i}.weight": torch.zeros(1) for i in range(8)}, tmp_path / "many.pt")
    with pytest.raises(CheckpointMismatchError) as excinfo:
        load_weights(nn.Linear(2, 2), path)
    message = str(excinfo.value)
    assert "unexpected keys (8, first 5): layer0.weight, layer1.weight, layer2.weight, " \
           "layer3.weight, layer4.weight, ..." in message
    assert "layer5.weight" not in message
    assert "missing keys (2): weight, bias" in message
    assert len(excinfo.value.unexpected) == 8


def test_v5_checkpoint_into_v6_model_gets_a_hint(tmp_path, yolov5, no_models_package):
    with yolov5.installed():
        path = _save(_official_ckpt(yolov5.Model(stem="focus").half()), tmp_path / "v5.pt")
    v6 = yolov5.Target(stem="conv6")

    with pytest.raises(CheckpointMismatchError) as excinfo:
        load_weights(v6, path)

    message = str(excinfo.value)
    assert "missing keys (6, first 5): model.0.conv.weight, model.0.bn.weight," in message
    assert "unexpected keys (6, first 5): model.0.conv.conv.weight, model.0.conv.bn.weight," in (
        message
    )
    assert "shape mismatches" not in message
    assert "is this a v5.0 checkpoint loaded into a v6 model?" in message
    assert "yolov5s_v5" in message


def test_v6_checkpoint_into_v5_model_gets_a_hint(tmp_path, yolov5):
    path = _save(yolov5.Model(stem="conv6").state_dict(), tmp_path / "v6.pt")
    with pytest.raises(CheckpointMismatchError, match="is this a v6 checkpoint loaded into a v5.0"):
        load_weights(yolov5.Target(stem="focus"), path)


def test_other_class_count_gets_a_hint(tmp_path, yolov5, no_models_package):
    with yolov5.installed():
        path = _save(_official_ckpt(yolov5.Model(nc=2).half()), tmp_path / "nc2.pt")

    with pytest.raises(CheckpointMismatchError) as excinfo:
        load_weights(yolov5.Target(nc=3), path)

    message = str(excinfo.value)
    assert "shape mismatches (2): model.3.m.0.weight: checkpoint [21, 16, 1, 1] vs model " \
        "[24, 16, 1, 1]; model.3.m.0.bias: checkpoint [21] vs model [24]" in message
    assert "only the Detect head (model.3) differs" in message
    assert "checkpoint nc=2, model nc=3" in message


# -------------------------------------------------------------------------- broken files


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "yolov5x.pt"
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint file not found: {path}")):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(nn.Linear(1, 1), str(path))


def test_directory_and_empty_file(tmp_path):
    not_a_file = re.escape(f"checkpoint path is not a file: {tmp_path}")
    with pytest.raises(CheckpointError, match=not_a_file):
        read_checkpoint(tmp_path)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint file is empty: {empty}")):
        read_checkpoint(empty)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_file(tmp_path, legacy):
    full = _save(_tiny().state_dict(), tmp_path / "full.pt", legacy=legacy).read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(full[: len(full) // 2])

    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(path)

    assert type(excinfo.value) is CheckpointError
    assert str(excinfo.value).startswith(f"cannot read checkpoint {path} (truncated or corrupt?)")


def test_force_weights_only_env_is_explained(tmp_path, monkeypatch):
    path = _save(_tiny().state_dict(), tmp_path / "sd.pt")
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match=re.escape(
        f"cannot read checkpoint {path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set"
    )):
        read_checkpoint(path)


def test_module_tree_with_a_cycle(tmp_path, yolov5, no_models_package):
    with yolov5.installed():
        model = yolov5.Model()
        model.model[1].add_module("loop", model)  # only a crafted file looks like this
        path = _save(_official_ckpt(model), tmp_path / "loop.pt")
    with pytest.raises(CheckpointError, match=re.escape(
        f"checkpoint {path} has a malformed model: module tree loops or nests too deep at "
        "model.1.loop"
    )):
        read_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all\n" * 10)
    with pytest.raises(CheckpointError, match=re.escape(f"cannot read checkpoint {garbage}")):
        read_checkpoint(garbage)
    numbers = _save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a model or a dict of weights"):
        read_checkpoint(numbers)
    no_weights = _save({"epoch": 3, "model": None}, tmp_path / "empty-ckpt.pt")
    with pytest.raises(CheckpointError, match=r"holds no model weights.*\['epoch', 'model'\]"):
        read_checkpoint(no_weights)


# ----------------------------------------------------------------------------- our own format


def test_save_state_dict_round_trip(tmp_path):
    source = _tiny()
    meta = {"nc": 2, "yaml": {"depth_multiple": 0.33}, "epoch": 5, "note": "trained", "lr": [0.1]}
    path = save_state_dict(source, tmp_path / "ours.pt", names=["cat", "dog"], meta=meta)

    assert path == tmp_path / "ours.pt" and not (tmp_path / "ours.pt.tmp").exists()
    raw = torch.load(path, weights_only=True)  # loadable without any allowlist of ours
    assert raw["format"] == "yolomlu.state_dict" and raw["names"] == ["cat", "dog"]
    target = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    info = load_weights(target, path)
    assert info.format == "state_dict" and info.names == ["cat", "dog"] and info.nc == 2
    assert info.yaml == {"depth_multiple": 0.33}
    assert info.extra["epoch"] == 5 and info.extra["note"] == "trained"
    assert info.extra["lr"] == [0.1]
    assert torch.equal(target[0].weight, source[0].weight)


def test_save_state_dict_refuses_non_plain_meta(tmp_path):
    with pytest.raises(ValueError, match=r"meta\['opt'\]\['weights'\] is a PosixPath"):
        save_state_dict(_tiny(), tmp_path / "x.pt", meta={"opt": {"weights": Path("a.pt")}})
    with pytest.raises(ValueError, match=r"meta\['best'\] is a float64"):
        save_state_dict(_tiny(), tmp_path / "x.pt", meta={"best": np.float64(0.5)})
    assert not list(tmp_path.iterdir())


def test_plain_values_in_official_metadata(tmp_path, yolov5, no_models_package):
    """The data types real checkpoints carry (sets, numpy, paths, Namespace, datetime) load."""
    import argparse

    with yolov5.installed():
        ckpt = _official_ckpt(
            yolov5.Model().half(),
            opt=argparse.Namespace(save_dir=pathlib.PureWindowsPath("C:/runs/exp")),
            tags={"a", "b"},
            when=datetime.datetime(2021, 4, 12, 10, 0),
            blob=b"\x00\xff",
            scalar=np.float32(1.5),
            loop=(loop := []),
        )
        loop.append(loop)  # a list that contains itself
        path = _save(ckpt, tmp_path / "meta.pt")

    _, info = read_checkpoint(path)

    assert info.extra["opt"] == {"save_dir": "C:\\runs\\exp"}
    assert sorted(info.extra["tags"]) == ["a", "b"]
    assert info.extra["when"] == "2021-04-12T10:00:00"
    assert info.extra["scalar"] == 1.5
    assert info.extra["blob"] == "<bytes>"
    nested = info.extra["loop"]
    for _ in range(10):
        nested = nested[0]
    assert isinstance(nested, list)
