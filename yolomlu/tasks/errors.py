"""Expected errors in one line: what the command line prints instead of a traceback.

A bad value, a key or type the config lacks, a missing or corrupt file, a backend that cannot do
what was asked: each is worded as one line naming the bad thing (and, for config errors, what the
key takes). Anything else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` or
``YOLOMLU_VERBOSE=1`` shows every traceback.
"""

from __future__ import annotations

import os

VERBOSE_ENV = ("YOLOMLU_VERBOSE", "HYDRA_FULL_ERROR")
# The command line sets HYDRA_FULL_ERROR=1 for itself (so that Hydra raises rather than prints);
# what the user had set is kept here.
_USER_VERBOSE = "YOLOMLU_USER_VERBOSE"


def verbose() -> bool:
    """Whether the user asked for tracebacks (checked before the command line changes the variables)."""
    if _USER_VERBOSE in os.environ:
        return os.environ[_USER_VERBOSE] == "1"
    chosen = any(os.environ.get(name, "") not in ("", "0") for name in VERBOSE_ENV)
    os.environ[_USER_VERBOSE] = "1" if chosen else "0"
    return chosen


def exit_status(exc: BaseException) -> int:
    """2 for a config that does not compose, 1 for any other expected error."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return 2 if isinstance(exc, (HydraException, OmegaConfBaseException)) else 1


def describe(exc: BaseException) -> str | None:
    """One line for an expected error (None for anything else, which deserves its traceback).

    Config errors name the full key and what it takes; the others give their own message, which
    names the file, value or setting (the workbench's errors are written that way). A message of
    several lines (a checkpoint mismatch lists keys and a hint below its first line) is joined
    into one with '; ': the line is what scripts and logs keep."""
    message = _describe(exc)
    if message is None:
        return None
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def _describe(exc: BaseException) -> str | None:
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

    from yolomlu.backends.base import BackendError

    cause = exc.__cause__ if isinstance(exc, HydraException) and exc.__cause__ is not None else exc
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        if isinstance(cause, MissingMandatoryValue):
            return f"config error: {key} has no value and needs one (add {key}=...)"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            return f"config error: {key} is not a config key{_known_keys_hint(key)}"
        if isinstance(cause, ValidationError):
            expected = _schema_type(key)
            return f"config error: {key}: {_first_line(cause.msg)}" + (f" ({key} takes {expected})" if expected else "")
        return f"config error: {key}: {_first_line(getattr(cause, 'msg', str(cause)))}"
    if isinstance(exc, HydraException):
        # Hydra's "Could not find 'model/yolov9'" lists the options, then its search path: not the user's concern.
        text = str(exc).split("\nConfig search path")[0]
        return f"config error: {' '.join(text.split())}"
    if isinstance(exc, (ValueError, OSError, BackendError, LookupError)):
        text = str(exc) if not isinstance(exc, KeyError) else str(exc.args[0] if exc.args else exc)
        return f"{type(exc).__name__}: {text}"
    return None


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


def _schema_node(parts: list[str]):
    """The schema dataclass of the node at ``parts`` (a top-level node or a group with one schema);
    None where the node's keys depend on the option chosen or there is no schema."""
    from dataclasses import fields, is_dataclass

    from yolomlu.tasks import schema

    if not parts:
        return schema.Config
    options = [node for group, _, node in schema.SCHEMAS if group == parts[0]]
    node = options[0] if len(options) == 1 else None
    if node is None:
        hits = {f.name: f.type for f in fields(schema.Config)}
        node = getattr(schema, str(hits.get(parts[0], "")), None)
    for part in parts[1:]:
        if not is_dataclass(node):
            return None
        hits = {f.name: f.type for f in fields(node)}
        node = getattr(schema, str(hits.get(part, "")), None)
    return node if is_dataclass(node) else None


def _schema_type(full_key: str) -> str | None:
    """The type the schema gives ``full_key`` (``int``, ``Optional[float]``), where one schema says."""
    from dataclasses import fields

    from yolomlu.tasks import schema

    parts = full_key.split(".")
    node = _schema_node(parts[:-1])
    if node is not None:
        return {f.name: str(f.type) for f in fields(node)}.get(parts[-1])
    if len(parts) == 2:  # a group of several schemas (data=shapes|coco): the type they all give the key
        found = {str(f.type) for group, _, option in schema.SCHEMAS if group == parts[0] for f in fields(option) if f.name == parts[1]}
        return found.pop() if len(found) == 1 else None
    return None


def _known_keys_hint(full_key: str) -> str:
    """'; <parent> takes: a, b, c' from the schemas, or where to look when the parent's keys depend
    on the option chosen (backend=torch and backend=onnxruntime take different keys)."""
    from dataclasses import fields

    parts = full_key.split(".")[:-1]
    node = _schema_node(parts)
    if node is None:
        return f"; see the keys in conf/{parts[0]}/<option>.yaml" if parts else ""
    return f"; {'.'.join(parts) or 'the top level'} takes: {', '.join(f.name for f in fields(node))}"
