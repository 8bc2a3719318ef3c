"""Safe checkpoint loading: official YOLOv5 ``.pt`` files and plain state_dicts, running no code.

Official ultralytics checkpoints (``yolov5x.pt``) are pickles of a dict such as
``{'epoch': -1, 'best_fitness': ndarray, 'model': <models.yolo.Model, fp16>, 'ema': None, ...}``
whose model object is the whole module tree, its classes living in the yolov5 repository
(``models.yolo``, ``models.common``). A plain ``torch.load`` would import that repository and,
worse, lets any pickle call any function. Here the pickle is read by a restricted unpickler that
resolves globals only through an explicit allowlist (see ``_allowed_globals``):

- yolov5 classes (``models.yolo.*``, ``models.common.*``, ``models.experimental.*``) and
  ``torch.nn`` module classes map to *inert stand-ins*: plain objects that only hold their pickled
  ``__dict__``; they cannot be called and have no methods a pickle could reach;
- torch's tensor/storage rebuild functions, dtypes, ``torch.Size``, ``torch.device``;
- plain data: ``collections.OrderedDict``, ``builtins.set/frozenset/bytearray/complex``, bytes via
  ``_codecs.encode`` (latin-1 only), numpy arrays/scalars/dtypes (``best_fitness`` is an ndarray),
  ``argparse.Namespace``, ``datetime`` values and ``pathlib`` paths (as pure paths).

Anything else (``posix.system``, ``builtins.eval``, ``subprocess.Popen``, ``torch.load`` ...) is
refused with :class:`UnsafeCheckpointError` before it is resolved, so it never runs. The container
format (zip archive or legacy non-zip file, storages, byte order) is still read by ``torch.load``,
to which the restricted unpickler is handed as its ``pickle_module``; TorchScript archives (which
``torch.load`` would hand to ``torch.jit.load``) and pre-0.4 tar files are refused beforehand.

From the loaded tree a flat float32 state_dict is extracted (``model.0.conv.conv.weight`` ...),
preferring ``ema`` over ``model`` when present. Derived buffers our model does not register are
dropped: ``...anchor_grid`` (a buffer in v5.0 ``Detect``; it is ``anchors * stride`` reshaped, so
nothing is lost).
"""

from __future__ import annotations

import _compat_pickle
import argparse
import datetime
import functools
import io
import os
import pathlib
import pickle
import tarfile
import types
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "CheckpointInfo",
    "read_checkpoint",
    "load_weights",
    "save_state_dict",
]

# Buffers that official checkpoints carry but our model derives instead of registering.
_DROPPED_SUFFIXES = ("anchor_grid",)
# Modules whose classes are rebuilt as stand-ins whatever their name: forks add their own blocks
# there, and a stand-in is inert whatever it is called.
_YOLOV5_MODULES = ("models.yolo", "models.common", "models.experimental")
_OWN_FORMAT = "yolomlu.state_dict"
_LIST_LIMIT = 5  # keys shown per category in a mismatch message
_MAX_DEPTH = 64  # nesting of modules (YOLOv5: about 6, model.24.m.0.cv1.conv) and metadata


# --------------------------------------------------------------------------------------- errors


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, corrupt or holds no model weights."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint references a global outside the allowlist (it could run code); nothing ran.

    Attributes: ``path`` (the file), ``global_name`` (``module.name`` as written in the pickle).
    """

    def __init__(self, path: Path, global_name: str, reason: str) -> None:
        self.path = path
        self.global_name = global_name
        super().__init__(
            f"refusing to load checkpoint {path}: {reason}. Only yolov5 model classes, torch.nn "
            "module classes, tensor rebuild functions and plain data types are allowed, and "
            "nothing was executed; the file is malicious or not a YOLOv5/PyTorch checkpoint."
        )


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the model's state_dict (names or shapes).

    Attributes: ``path``, ``missing`` (model keys absent from the checkpoint), ``unexpected``
    (checkpoint keys the model lacks), ``mismatched`` (``(key, checkpoint_shape, model_shape)``).
    """

    def __init__(
        self,
        path: Path,
        model_name: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        hint: str | None,
    ) -> None:
        self.path = path
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        lines = [
            f"checkpoint {path} does not match the model ({model_name}): {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} with another shape"
        ]
        if missing:
            lines.append(f"  missing keys {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys {_listing(unexpected)}")
        if mismatched:
            shown = [f"{k}: checkpoint {_shape(a)} vs model {_shape(b)}" for k, a, b in mismatched]
            lines.append(f"  shape mismatches {_listing(shown, sep='; ')}")
        if hint:
            lines.append(f"  hint: {hint}")
        super().__init__("\n".join(lines))


def _listing(items: list[str], sep: str = ", ") -> str:
    head = sep.join(items[:_LIST_LIMIT])
    if len(items) > _LIST_LIMIT:
        return f"({len(items)}, first {_LIST_LIMIT}): {head}{sep}..."
    return f"({len(items)}): {head}"


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


# ------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file says besides its tensors.

    path:   the file read
    format: ``'official'`` (a pickled yolov5 model tree) or ``'state_dict'`` (name -> tensor)
    names:  class names indexed by class id, when the file has them
    nc:     number of classes (the model's ``nc``, else ``yaml['nc']``, else ``len(names)``)
    yaml:   the architecture dict of official models (``depth_multiple``, ``width_multiple``,
            ``anchors``, ``backbone``, ``head`` ...)
    extra:  plain-Python metadata: the checkpoint's own fields (``epoch``, ``best_fitness``,
            ``date``, ``opt`` ... or the ``meta`` of :func:`save_state_dict`) plus, derived here,
            ``source`` (``'ema'``, ``'model'`` or ``'state_dict'``), ``model_class`` (official
            only, e.g. ``'models.yolo.Model'``), ``stride`` (official, when stored), ``dtype``
            (of the stored floating tensors, e.g. ``'float16'``) and ``dropped_keys``.
    """

    path: Path
    format: Literal["official", "state_dict"]
    names: list[str] | None
    nc: int | None
    yaml: dict | None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------- restricted unpickling


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler; turned into UnsafeCheckpointError once the path is known."""

    def __init__(self, global_name: str, reason: str) -> None:
        super().__init__(reason)
        self.global_name = global_name
        self.reason = reason


class _StandIn:
    """Inert stand-in for a pickled module class (yolov5 or torch.nn).

    It keeps the pickled ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``names``,
    ``yaml`` ...) and nothing else: no forward, no hooks, no properties. Only the unpickler's
    NEWOBJ + BUILD path creates one; a pickle that tries to *call* the class is refused.
    """

    pickled_name = "?"
    # torch's legacy loader reads this when a class's saved source differs from the current one;
    # False keeps it from writing a .patch file into the working directory.
    dump_patches = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise _Refused(
            self.pickled_name,
            f"it calls {self.pickled_name!r}; model classes may only be rebuilt from their "
            "pickled state, never called",
        )

    def __setstate__(self, state: Any) -> None:
        # Write into __dict__ directly: setattr would honour names such as __class__.
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        else:
            slots = None
        for part in (state, slots):
            if part is None:
                continue
            if not isinstance(part, dict) or not all(isinstance(k, str) for k in part):
                name = self.pickled_name
                raise _Refused(name, f"it gives {name!r} a state that is not a dict")
            self.__dict__.update(part)

    def __repr__(self) -> str:
        return f"<stand-in {self.pickled_name}>"


@functools.cache
def _stand_in(full_name: str) -> type[_StandIn]:
    """One stand-in class per pickled class name, reused so identical names share a type."""
    short = full_name.rsplit(".", 1)[-1]
    # qualname = the short name: torch's legacy loader looks the source up and must not find it.
    return type(short, (_StandIn,), {"pickled_name": full_name, "__qualname__": short})


def _latin1_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it for bytes: ``encode(str, 'latin1')`` only.

    The real function looks codecs up by name (``'zlib'``, ``'rot13'``, ...); nothing in a
    checkpoint needs more than latin-1.
    """
    name = encoding.lower().replace("-", "_") if isinstance(encoding, str) else None
    latin1 = name in ("latin1", "latin_1")
    if not (isinstance(text, str) and latin1 and errors == "strict"):
        raise _Refused("_codecs.encode", f"it calls '_codecs.encode' with encoding {encoding!r}")
    return text.encode("latin-1")


@functools.cache
def _allowed_globals() -> dict[str, Any]:
    """``'module.name'`` -> object for every global a checkpoint may reference (built on first use).

    Each entry is either data (dtypes), a constructor of inert values, a tensor rebuild function
    from ``torch._utils``, or a stand-in. ``builtins.getattr``, ``copyreg`` and friends are out on
    purpose: with them a pickle reaches any attribute of any object.
    """
    import numpy as np

    allowed: dict[str, Any] = {
        "collections.OrderedDict": OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.bytearray": bytearray,
        "builtins.complex": complex,
        "_codecs.encode": _latin1_encode,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.Tensor": torch.Tensor,
        "torch._tensor.Tensor": torch.Tensor,
        "torch.nn.parameter.Parameter": nn.Parameter,
        "torch.UntypedStorage": torch.UntypedStorage,
        "torch.storage.UntypedStorage": torch.UntypedStorage,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        # opt values of yolov5 v6+ (argparse defaults such as ROOT / 'data/coco128.yaml')
        "argparse.Namespace": argparse.Namespace,
        "datetime.datetime": datetime.datetime,
        "datetime.date": datetime.date,
        "datetime.time": datetime.time,
        "datetime.timedelta": datetime.timedelta,
        "datetime.timezone": datetime.timezone,
        # numpy: best_fitness is an ndarray, some scalars are numpy floats
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
    }
    for name in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
    ):
        if hasattr(torch._utils, name):  # v3 is newer than the oldest torch we support
            allowed[f"torch._utils.{name}"] = getattr(torch._utils, name)
    for value in vars(torch).values():
        if isinstance(value, torch.dtype):
            allowed[str(value)] = value  # 'torch.float16'
    multiarray = _numpy_multiarray()
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x names
        allowed[f"{module}._reconstruct"] = multiarray._reconstruct
        allowed[f"{module}.scalar"] = multiarray.scalar
    # Paths are rebuilt as pure paths: inert, and a WindowsPath loads on Linux too.
    for module in ("pathlib", "pathlib._local"):  # Python <= 3.12 / 3.13+
        for name, cls in (
            ("Path", pathlib.PurePath),
            ("PurePath", pathlib.PurePath),
            ("PosixPath", pathlib.PurePosixPath),
            ("PurePosixPath", pathlib.PurePosixPath),
            ("WindowsPath", pathlib.PureWindowsPath),
            ("PureWindowsPath", pathlib.PureWindowsPath),
        ):
            allowed[f"{module}.{name}"] = cls
    # torch.nn module classes, under the names the pickle writes; rebuilt as stand-ins so no
    # torch.nn code (constructors, __setstate__, hooks) runs on pickled data.
    for submodule in vars(nn.modules).values():
        if not isinstance(submodule, types.ModuleType):
            continue
        for value in vars(submodule).values():
            if isinstance(value, type) and issubclass(value, nn.Module):
                full_name = f"{value.__module__}.{value.__qualname__}"
                if full_name.startswith("torch.nn.modules."):
                    allowed[full_name] = _stand_in(full_name)
    return allowed


def _numpy_multiarray() -> types.ModuleType:
    try:
        from numpy._core import multiarray  # numpy >= 2 (and a shim in 1.26)
    except ImportError:  # pragma: no cover - numpy 1.24/1.25
        from numpy.core import multiarray
    return multiarray


def _resolve_global(module: str, name: str) -> Any:
    """The allowlisted object for ``module.name``, or raise ``_Refused`` naming it."""
    full_name = f"{module}.{name}"
    allowed = _allowed_globals()
    if full_name in allowed:
        return allowed[full_name]
    if module in _YOLOV5_MODULES and name.isidentifier():
        return _stand_in(full_name)
    raise _Refused(full_name, f"it references the global {full_name!r}, which is not allowed")


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose every global lookup goes through the allowlist.

    ``find_class`` is the only way a pickle obtains a callable or a class (GLOBAL, STACK_GLOBAL,
    INST, OBJ, EXT* all end here), so REDUCE / NEWOBJ / BUILD can only ever reach allowlisted
    objects. torch.load subclasses this and assigns ``persistent_load`` for its storages.
    """

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 0-2 pickles written by Python 3 name builtins '__builtin__' (fix_imports);
        # the base find_class maps such Python 2 names back, so this override must too. The C
        # unpickler does not expose the protocol, so map always (as torch's weights_only does):
        # the result still has to be on the allowlist.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        return _resolve_global(str(module), str(name))


class _RestrictedPickle:
    """The ``pickle_module`` given to ``torch.load``: it needs ``Unpickler`` and ``load``."""

    __name__ = "yolomlu_restricted_pickle"  # torch.load compares it with 'dill'
    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


# ---------------------------------------------------------------------------------- file level


def _open_restricted(path: Path) -> Any:
    """Unpickle ``path`` through the allowlist; every failure is a CheckpointError naming it."""
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if os.getenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        # torch.load then refuses any pickle_module, ours included, with an unrelated message.
        raise CheckpointError(
            f"cannot read checkpoint {path}: TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which makes "
            "torch.load refuse the restricted unpickler this loader reads checkpoints with; "
            "unset it (the loader allows only an explicit list of globals and runs no code)"
        )
    try:
        with path.open("rb") as f:
            _check_container(f, path)
            f.seek(0)
            with warnings.catch_warnings():
                # Legacy files embed each module class's source; ours are stand-ins without one.
                warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
                warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
                return torch.load(
                    f,
                    map_location="cpu",
                    pickle_module=_RestrictedPickle,
                    weights_only=False,  # the restriction is _RestrictedUnpickler's allowlist
                    mmap=False,
                )
    except _Refused as e:
        raise UnsafeCheckpointError(path, e.global_name, e.reason) from None
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated or corrupt?); expected a file written by torch.save "
            f"(a YOLOv5 .pt or a state_dict): {type(e).__name__}: {e}"
        ) from e


def _check_container(f: io.BufferedReader, path: Path) -> None:
    """Refuse containers that torch.load would not read through our pickle module."""
    head = f.read(4)
    if not head:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    f.seek(0)
    if head == b"PK\x03\x04":
        # Same test as torch.load's, with the same reader, so a file it would hand to
        # torch.jit.load (which runs TorchScript code) is caught here.
        records = torch._C.PyTorchFileReader(f).get_all_records()
        if "constants.pkl" in records:
            raise CheckpointError(
                f"{path} is a TorchScript archive (it carries code), not a checkpoint; refusing it"
            )
    elif tarfile.is_tarfile(f):
        # torch.load extracts pre-0.4 tar checkpoints to disk (symlinks included); nothing
        # YOLOv5-era uses that format.
        raise CheckpointError(f"{path} is a tar archive (torch < 0.4 format), not supported")


# ----------------------------------------------------------------------------- interpretation


def read_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Read a checkpoint without executing code from it.

    Accepts official yolov5 checkpoints (zip or legacy format; ``ema`` is used when it is not
    None, else ``model``), a bare pickled model, our own :func:`save_state_dict` files and plain
    state_dicts (``{name: tensor}``, ``{'state_dict': {...}}`` or ``{'model': {...}}``).

    Returns ``(state_dict, info)``: the state_dict maps official names (``model.0.conv.conv.weight``
    ...) to CPU tensors, floating ones cast to float32 (integer buffers such as
    ``num_batches_tracked`` keep their dtype); ``...anchor_grid`` buffers are dropped (listed in
    ``info.extra['dropped_keys']``).

    Raises CheckpointError (missing, empty, truncated or corrupt file; no weights inside),
    UnsafeCheckpointError (a global outside the allowlist; nothing was executed).
    """
    path = Path(path)
    obj = _open_restricted(path)
    if isinstance(obj, _StandIn):  # torch.save(model) without a dict around it
        return _from_official(path, {}, obj, "model")
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a model or a dict of weights"
        )
    ema, model = obj.get("ema"), obj.get("model")
    if isinstance(ema, _StandIn):
        return _from_official(path, obj, ema, "ema")
    if isinstance(model, _StandIn):
        return _from_official(path, obj, model, "model")
    if _is_tensor_mapping(obj.get("state_dict")):
        meta = obj.get("meta") if obj.get("format") == _OWN_FORMAT else None
        rest = {k: v for k, v in obj.items() if k not in ("state_dict", "names", "meta", "format")}
        extra = _plain(meta) if isinstance(meta, Mapping) else _plain(rest)
        return _from_state_dict(path, obj["state_dict"], obj.get("names"), extra)
    if _is_tensor_mapping(model):
        rest = {k: v for k, v in obj.items() if k not in ("model", "names")}
        return _from_state_dict(path, model, obj.get("names"), _plain(rest))
    if _is_tensor_mapping(obj):
        return _from_state_dict(path, obj, None, {})
    keys = sorted(str(k) for k in obj)
    raise CheckpointError(
        f"checkpoint {path} holds no model weights: expected a yolov5 model under 'model'/'ema' "
        f"or a state_dict, found keys {keys[:10]}"
    )


def _from_official(
    path: Path, ckpt: Mapping, model: _StandIn, source: str
) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    raw: dict[str, torch.Tensor] = OrderedDict()
    try:
        _flatten(model, "", raw, ())
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path} has a malformed model: {e}") from None
    state, extra = _finish(path, raw)
    other = ckpt.get("model") if source == "ema" else None
    attrs = {**(vars(other) if isinstance(other, _StandIn) else {}), **vars(model)}
    yaml = attrs.get("yaml") if isinstance(attrs.get("yaml"), Mapping) else None
    names = _names(attrs.get("names"), extra)
    nc = _first_int(_plain(attrs.get("nc")), (yaml or {}).get("nc"), len(names) if names else None)
    stride = attrs.get("stride")
    skip = ("model", "ema", "optimizer")  # weights, and optimizer state nobody logs
    fields = {k: v for k, v in ckpt.items() if isinstance(k, str) and k not in skip}
    info = CheckpointInfo(
        path=path,
        format="official",
        names=names,
        nc=nc,
        yaml=_plain(yaml) if yaml is not None else None,
        extra={
            **_plain(fields),
            **extra,
            "source": source,
            "model_class": type(model).pickled_name,
            **({"stride": stride.tolist()} if isinstance(stride, torch.Tensor) else {}),
        },
    )
    return state, info


def _from_state_dict(
    path: Path, tensors: Mapping, raw_names: Any, fields: dict
) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    state, extra = _finish(path, OrderedDict(tensors))
    names = _names(raw_names, extra)
    yaml = fields.get("yaml") if isinstance(fields.get("yaml"), dict) else None
    nc = _first_int(fields.get("nc"), (yaml or {}).get("nc"), len(names) if names else None)
    info = CheckpointInfo(
        path=path,
        format="state_dict",
        names=names,
        nc=nc,
        yaml=yaml,
        extra={**fields, **extra, "source": "state_dict"},
    )
    return state, info


def _flatten(obj: _StandIn, prefix: str, out: dict, ancestors: tuple[int, ...]) -> None:
    """``nn.Module.state_dict`` order (parameters, persistent buffers, children), read off the
    pickled dicts without running any module code."""
    # Only a crafted pickle nests this deep or makes a module its own descendant.
    if id(obj) in ancestors or len(ancestors) > _MAX_DEPTH:
        raise CheckpointError(f"module tree loops or nests too deep at {prefix or '<root>'}")
    attrs = vars(obj)
    non_persistent = attrs.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, tensor in (attrs.get(group) or {}).items():
            if tensor is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
            out[prefix + name] = tensor
    for name, child in (attrs.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _StandIn):
            raise CheckpointError(f"{prefix}{name} is a {type(child).__name__}, not a module")
        _flatten(child, f"{prefix}{name}.", out, (*ancestors, id(obj)))


def _finish(path: Path, raw: Mapping) -> tuple[dict[str, torch.Tensor], dict]:
    """Drop derived buffers, cast floating tensors to float32, note what was stored."""
    state: dict[str, torch.Tensor] = OrderedDict()
    dropped, dtypes = [], set()
    for key, tensor in raw.items():
        if key.rsplit(".", 1)[-1] in _DROPPED_SUFFIXES:
            dropped.append(key)
            continue
        tensor = tensor.detach()  # also turns Parameters into plain tensors
        if tensor.is_floating_point():
            dtypes.add(str(tensor.dtype).removeprefix("torch."))
            tensor = tensor.to(torch.float32)
        state[key] = tensor
    if not state:
        raise CheckpointError(f"checkpoint {path} contains no tensors")
    dtype = dtypes.pop() if len(dtypes) == 1 else (sorted(dtypes) or None)
    return state, {"dtype": dtype, "dropped_keys": dropped}


def _names(raw: Any, extra: dict) -> list[str] | None:
    """Class names as a list indexed by class id; a dict must have keys 0..n-1."""
    if isinstance(raw, (list, tuple)):
        return [str(n) for n in raw]
    if isinstance(raw, Mapping):
        keys = sorted(raw, key=lambda k: (not isinstance(k, int), str(k)))
        if keys == list(range(len(keys))):
            return [str(raw[k]) for k in keys]
        extra["names_raw"] = _plain(raw)  # ids with gaps: keep them rather than renumber
    return None


def _first_int(*values: Any) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _plain(value: Any, depth: int = 0) -> Any:
    """Metadata as plain Python (for logging): numpy -> Python, paths -> str, tensors described."""
    import numpy as np

    if depth > _MAX_DEPTH:  # pickles can nest deeply or refer to themselves
        return "<...>"
    if isinstance(value, np.generic):  # before the builtins: np.float64 is a float subclass
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, (str, int)) else str(k)): _plain(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, argparse.Namespace):
        return _plain(vars(value), depth + 1)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), depth + 1)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, torch.Tensor):
        return f"<tensor {_shape(tuple(value.shape))} {str(value.dtype).removeprefix('torch.')}>"
    if isinstance(value, _StandIn):
        return f"<{value.pickled_name}>"
    return f"<{type(value).__name__}>"


def _is_tensor_mapping(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


# ------------------------------------------------------------------------------ into a model


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> CheckpointInfo:
    """Load a checkpoint into ``model`` strictly (every key, every shape) and describe it.

    Raises CheckpointMismatchError naming the file, up to five missing keys, unexpected keys and
    shape mismatches (``key: checkpoint [a, b] vs model [c, d]``) and, when the pattern is
    recognisable, a hint (a v5.0 Focus stem into a v6 model, a Detect head for another nc ...);
    the model is left untouched then. Other errors as :func:`read_checkpoint`.
    """
    path = Path(path)
    state, info = read_checkpoint(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        hint = _mismatch_hint(state, expected, missing, unexpected, mismatched)
        raise CheckpointMismatchError(
            path, type(model).__name__, missing, unexpected, mismatched, hint
        )
    model.load_state_dict(state, strict=True)
    return info


def _mismatch_hint(
    ckpt: Mapping[str, torch.Tensor],
    model: Mapping[str, torch.Tensor],
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str | None:
    """A guess at the cause, from the stem and head key patterns of official YOLOv5 names."""
    focus, stem = "model.0.conv.conv.weight", "model.0.conv.weight"

    def six_by_six(state: Mapping[str, torch.Tensor]) -> bool:
        return stem in state and tuple(state[stem].shape[-2:]) == (6, 6)

    if focus in ckpt and six_by_six(model):
        return (
            f"the checkpoint has a v5.0 Focus stem ({focus}) and the model a v6+ 6x6 stem conv "
            f"({stem}): is this a v5.0 checkpoint loaded into a v6 model? Use the matching "
            "'*_v5' model (e.g. yolov5s_v5)."
        )
    if six_by_six(ckpt) and focus in model:
        return (
            f"the checkpoint has a v6+ 6x6 stem conv ({stem}) and the model a v5.0 Focus stem "
            f"({focus}): is this a v6 checkpoint loaded into a v5.0 model? Use the v6 model "
            "(e.g. yolov5s)."
        )
    if mismatched and not missing and not unexpected:
        # Detect owns the 'anchors' buffer [nl, na, 2]; its convs output na * (nc + 5) channels.
        anchors = next((k for k in model if k.endswith(".anchors")), None)
        head = anchors.rsplit(".", 1)[0] + "." if anchors else None
        if head and all(k.startswith(head) for k, _, _ in mismatched):
            na = model[anchors].shape[-2]
            key, ck, md = mismatched[0]
            return (
                f"only the Detect head ({head[:-1]}) differs: was the checkpoint trained for "
                f"another number of classes? ({key}: checkpoint nc={ck[0] // na - 5}, "
                f"model nc={md[0] // na - 5})"
            )
        return "same layers, other widths: a checkpoint of another model size (width_multiple)?"
    if missing or unexpected:
        return "other layers: a checkpoint of another model depth, version or architecture?"
    return None


# ---------------------------------------------------------------------------------- our format


def save_state_dict(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    names: list[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save weights in our own format: a torch zip of
    ``{'format': 'yolomlu.state_dict', 'version': 1, 'state_dict': {name: tensor}, 'names': [...],
    'meta': {...}}`` that loads with ``torch.load(..., weights_only=True)`` and with
    :func:`read_checkpoint` (``meta`` becomes ``info.extra``; its ``nc`` and ``yaml``, if given,
    fill ``info.nc`` and ``info.yaml``).

    ``meta`` may hold only None, bool, int, float, str, and lists/tuples/str-keyed dicts of them
    (ValueError names the first offending entry). The file is written atomically (temporary file,
    then rename). Returns the path written.
    """
    path = Path(path)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = OrderedDict()
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key] = value.detach().cpu().clone()  # clone: do not save a larger shared storage
    meta = dict(meta or {})
    _check_plain(meta, "meta")
    payload = {
        "format": _OWN_FORMAT,
        "version": 1,
        "state_dict": tensors,
        "names": [str(n) for n in names] if names is not None else None,
        "meta": meta,
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_plain(value: Any, where: str) -> None:
    # Exact types: subclasses such as np.float64 would need numpy globals to load back.
    if value is None or type(value) in (bool, int, float, str):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-str key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__name__}; meta holds only None, bool, int, float, str, lists "
        "and str-keyed dicts (convert numpy scalars with float()/int(), paths with str())"
    )
