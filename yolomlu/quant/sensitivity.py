"""Per-layer sensitivity: which quantized layers cost the network's output most.

For each quantized layer (module order) three SQNRs, in dB against the float model on one batch:

- layer_sqnr_db: the layer's own output, the emulated layer applied to the float layer's input (the
  error it introduces by itself; `emulate.layer_sqnr`);
- solo_output_sqnr_db: the network output (every raw head map, concatenated) with only this layer
  quantized: what this layer alone does to the predictions;
- cumulative_output_sqnr_db: the network output with this layer and every one before it quantized;
  the last row is the fully quantized model.

`most_sensitive` picks the k layers with the lowest solo SQNR: the candidates for a float fallback
(add them to mixed_layer and evaluate again). Cost: 2 * n_layers + 1 forwards of the batch, so give it a
small one (one or two images).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from yolomlu.quant.emulate import layer_sqnr, quantized_layers, sqnr_db

__all__ = ["COLUMNS", "most_sensitive", "sensitivity_figure", "sensitivity_table"]

COLUMNS = ("name", "layer_sqnr_db", "solo_output_sqnr_db", "cumulative_output_sqnr_db")


def _flat_output(model: nn.Module, batch: Tensor) -> Tensor:
    out = model(batch)
    parts = [out] if isinstance(out, Tensor) else list(out)
    if not parts or not all(isinstance(p, Tensor) for p in parts):
        raise TypeError(f"the model must return a Tensor or a list/tuple of Tensors, got {type(out).__name__}")
    return torch.cat([p.detach().float().flatten() for p in parts])


def _swap(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    parent, _, attr = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = getattr(owner, attr)
    setattr(owner, attr, module)
    return old


@torch.no_grad()
def sensitivity_table(float_model: nn.Module, quant_model: nn.Module, batch: Tensor, progress: bool = True) -> pd.DataFrame:
    """The sensitivity table (columns `COLUMNS`, one row per quantized layer of quant_model, in module order).

    float_model: the float model; quant_model: the same model after `quantize_model` (e.g. a quantized
        deep copy). batch: float [B, C, H, W] on their device.
    The emulated layers of quant_model are swapped into float_model one at a time (solo) and
    accumulating (cumulative); float_model is restored afterwards, also on error, as are both models'
    training flags.
    """
    quantized = quantized_layers(quant_model)
    if not quantized:
        raise ValueError("quant_model has no quantized layer; run quantize_model on it first")
    own = layer_sqnr(float_model, quant_model, batch)
    flags = [(m, m.training) for m in (*float_model.modules(), *quant_model.modules())]
    float_model.eval()
    quant_model.eval()
    swapped: list[tuple[str, nn.Module]] = []  # (name, original float module), in swap order
    from tqdm import tqdm

    bar = tqdm(total=2 * len(quantized), desc="quant sensitivity", unit="fwd", disable=not progress, leave=False)
    try:
        reference = _flat_output(float_model, batch)
        solo = []
        for name, q in quantized.items():
            original = _swap(float_model, name, q)
            try:
                solo.append(sqnr_db(reference, _flat_output(float_model, batch)))
            finally:
                _swap(float_model, name, original)
            bar.update()
        cumulative = []
        for name, q in quantized.items():
            swapped.append((name, _swap(float_model, name, q)))
            cumulative.append(sqnr_db(reference, _flat_output(float_model, batch)))
            bar.update()
    finally:
        bar.close()
        for name, original in reversed(swapped):
            _swap(float_model, name, original)
        for m, flag in flags:
            m.training = flag
    return pd.DataFrame(
        {
            "name": list(quantized),
            "layer_sqnr_db": own["sqnr_db"].to_numpy(dtype=float),
            "solo_output_sqnr_db": solo,
            "cumulative_output_sqnr_db": cumulative,
        }
    )


def most_sensitive(table: pd.DataFrame, k: int) -> list[str]:
    """The k layers whose quantization alone hurts the network output most (lowest
    solo_output_sqnr_db; ties keep module order). k=0 gives []; k above the number of layers raises."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k={k!r} must be a non-negative integer")
    if k > len(table):
        raise ValueError(f"k={k} but the table has only {len(table)} quantized layers")
    ordered = table.sort_values("solo_output_sqnr_db", kind="mergesort")
    return [str(n) for n in ordered["name"].iloc[:k]]


def sensitivity_figure(table: pd.DataFrame, title: str = "", highlight: Sequence[str] = ()):
    """A matplotlib Figure of the table: bars of solo output SQNR per layer (layers in `highlight`, e.g.
    the float-fallback choice, in red), lines of the cumulative output SQNR and of each layer's own SQNR.
    Infinite SQNRs (exact layers) are left out of the plot. No pyplot: nothing global is touched."""
    from matplotlib.figure import Figure

    n = len(table)
    x = np.arange(n)

    def finite(column: str) -> np.ndarray:
        values = table[column].to_numpy(dtype=float)
        return np.where(np.isfinite(values), values, np.nan)

    figure = Figure(figsize=(max(6.0, 0.14 * n + 2.0), 4.2))
    axes = figure.add_subplot()
    chosen = set(highlight)
    colors = ["#c44e52" if name in chosen else "#4c72b0" for name in table["name"]]
    solo = finite("solo_output_sqnr_db")
    axes.bar(x, solo, color=colors, width=0.8, label="network output, only this layer quantized")
    axes.plot(
        x, finite("cumulative_output_sqnr_db"), color="#dd8452", marker=".", lw=1.2,
        label="network output, layers up to this one quantized",
    )  # fmt: skip
    axes.plot(x, finite("layer_sqnr_db"), color="#55a868", ls="none", marker="_", ms=7, label="the layer's own output")
    axes.set_xticks(x)
    axes.set_xticklabels(table["name"], rotation=90, fontsize=5 if n > 40 else 7)
    axes.set_xlim(-0.7, n - 0.3)
    axes.set_ylabel("SQNR (dB, higher is better)")
    default_title = f"quantization sensitivity, {n} layers" + (f" ({len(chosen)} kept float in red)" if chosen else "")
    axes.set_title(title or default_title, fontsize=10)
    axes.legend(fontsize=7, loc="lower left")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure
