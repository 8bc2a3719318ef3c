"""Apply named transforms to a model and measure, for each, how far its outputs moved.

Every transform here is a function ``model -> int``: it rewrites `model` in place and returns how many
layers it replaced. `apply_transforms` runs a list of them by name and proves each step numerically:
it compares the model after the step with a copy taken just before it, on a batch the caller gives
(the job passes real images, so the proof covers the inputs it is evaluated on).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from yolomlu.model.outputs import max_abs_difference
from yolomlu.transforms.focus import focus_to_conv
from yolomlu.transforms.fuse import fuse
from yolomlu.transforms.spp import spp_to_sppf

__all__ = ["TRANSFORMS", "TransformReport", "apply_transforms", "get_transform", "parity_max_abs"]

Transform = Callable[[nn.Module], int]

# name -> in-place rewrite returning the number of replaced layers. Names are what configs list.
TRANSFORMS: dict[str, Transform] = {
    "focus_to_conv": focus_to_conv,
    "spp_to_sppf": spp_to_sppf,
    "fuse": fuse,
}


@dataclass(frozen=True)
class TransformReport:
    """What one transform step did.

    name: the registry name of the transform.
    replaced: how many layers it replaced (0: the model had nothing to rewrite; the caller decides
        whether that is an error, e.g. a Focus->Conv variant asked of a v6 model).
    parity_max_abs: max |after - before| over all output elements on the check batch, or None when
        no check batch was given (not measured; never a stand-in number).
    """

    name: str
    replaced: int
    parity_max_abs: float | None


def get_transform(name: str) -> Transform:
    """The transform registered under `name`; ValueError listing the known names otherwise."""
    try:
        return TRANSFORMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown transform {name!r}; known: {sorted(TRANSFORMS)}") from None


def _as_tensors(out: Tensor | Sequence[Tensor], who: str) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (list, tuple)) and all(isinstance(t, Tensor) for t in out):
        return list(out)
    raise TypeError(f"{who} must return a Tensor or a list/tuple of Tensors, got {type(out).__name__}")


def _eval_forward(model: nn.Module, batch: Tensor, who: str) -> list[Tensor]:
    # Measuring must not change the model: remember each module's own training flag (they can differ,
    # e.g. a frozen BN inside a training model) and put every one back afterwards.
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return _as_tensors(model(batch), who)
    finally:
        for m, flag in flags:
            m.training = flag


def parity_max_abs(reference: nn.Module, candidate: nn.Module, batch: Tensor) -> float:
    """Max absolute difference between two models' outputs on one batch, both in eval mode, no grad.

    reference, candidate: modules returning a Tensor or a list of Tensors (a YOLOv5 returns nl raw head
        maps [B, na * (nc + 5), H / s_i, W / s_i]); both must live on `batch`'s device.
    batch: float [B, 3, H, W] as the models expect it (0..1 images for YOLOv5).
    Returns max over levels and elements of |candidate - reference|, computed in float64; NaN if
    either output holds NaN (so any `< tolerance` check fails). Training flags are restored afterwards.
    Raises ValueError if the outputs differ in number or shape.
    """
    return max_abs_difference(_eval_forward(reference, batch, "reference"), _eval_forward(candidate, batch, "candidate"))


def apply_transforms(model: nn.Module, names: Sequence[str], check_batch: Tensor | None) -> list[TransformReport]:
    """Apply the named transforms to `model` in place, in order, and report each step.

    names: registry names (`TRANSFORMS`: 'focus_to_conv', 'spp_to_sppf', 'fuse'); all are checked before
        anything changes, and an unknown one raises ValueError listing the known names.
    check_batch: float [B, 3, H, W] on the model's device (real images, preprocessed as for evaluation),
        or None to skip the parity measurement (reports then carry parity_max_abs=None). With a batch,
        each step is compared with a deep copy of the model taken just before it, so a report measures
        that step alone (deviations of a chain add up at most to the sum of the steps).
    Returns one `TransformReport` per name. A step that replaced nothing is reported with replaced=0,
    not refused: whether that is an error depends on the job (see `TransformReport`).
    """
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of transform names, not the single string {names!r}")
    steps = [(name, get_transform(name)) for name in names]
    reports = []
    for name, transform in steps:
        before = copy.deepcopy(model) if check_batch is not None else None
        replaced = transform(model)
        parity = parity_max_abs(before, model, check_batch) if before is not None else None
        reports.append(TransformReport(name, replaced, parity))
    return reports
