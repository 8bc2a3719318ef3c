"""quant.max_drop: the fewest layers to keep in float so that the quantized model stays within an
accuracy budget.

The drop is ``map50_95`` of the float model (the job's model, unquantized, run by torch in fp32: what
``cpu_reference`` measures) minus ``map50_95`` of the quantized candidate, both on the job's
evaluation images; the search issue's ``search.max_drop`` uses the same definition. Layers are ranked
by the existing sensitivity analysis (each layer quantized alone, the SQNR of the network's output:
``quant.sensitivity``), computed with the MLU's emulation on the job's parity images; for a backend
that quantizes itself (ONNX Runtime, OpenVINO) that ranking is the proxy, and every step is measured
on the backend itself.

Steps: k = 0, 1, 2, 4, 8, ... most sensitive layers in float until the budget is met (or every layer
is float), then a bisection between the last two k for the fewest that meet it (the drop is taken to
shrink as layers return to float; each step tried is logged, met or not). The result is a ready
``mixed_layer`` list.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from yolomlu import quant as q
from yolomlu.quant.qconfig import MLU_SCHEMES
from yolomlu.tasks.stages import StageResult

COLUMNS = ["step", "float_layers", "map50_95", "drop", "meets_budget", "fps", "layers"]


@dataclass
class BudgetResult:
    layers: list[str]  # the fewest most-sensitive layers to keep in float; [] if int8 alone meets it
    met: bool
    float_map: float
    steps: pd.DataFrame  # COLUMNS, one row per step tried, in the order tried


def search(
    max_drop: float,
    float_map: float,
    ranking: list[str],
    measure: Callable[[list[str]], tuple[float, float | None]],
) -> BudgetResult:
    """Find the fewest layers of ``ranking`` (most sensitive first) to keep in float.

    measure(layers) -> (map50_95, fps or None) of the quantized model with ``layers`` in float.
    """
    if max_drop < 0:
        raise ValueError(f"quant.max_drop={max_drop} must be >= 0 (a drop of mAP50-95 the quantized model may lose)")
    rows: list[dict] = []
    results: dict[int, float] = {}

    def step(k: int) -> bool:
        if k not in results:
            layers = ranking[:k]
            score, fps = measure(layers)
            results[k] = score
            rows.append(
                {
                    "step": len(rows) + 1, "float_layers": k, "map50_95": score, "drop": float_map - score,
                    "meets_budget": float_map - score <= max_drop, "fps": fps, "layers": ",".join(layers),
                }
            )  # fmt: skip
        return float_map - results[k] <= max_drop

    low, k = -1, 0  # low: the largest k known to miss the budget
    while not step(k):
        low = k
        if k == len(ranking):
            return BudgetResult(list(ranking), False, float_map, pd.DataFrame(rows, columns=COLUMNS))
        k = min(len(ranking), max(1, 2 * k))
    high = k  # meets it; the fewest lies in (low, high]
    while high - low > 1:
        middle = (low + high) // 2
        if step(middle):
            high = middle
        else:
            low = middle
    return BudgetResult(ranking[:high], True, float_map, pd.DataFrame(rows, columns=COLUMNS))


def sensitivity_ranking(float_model: torch.nn.Module, batches: list[torch.Tensor], settings: q.QuantSettings, check: torch.Tensor) -> list[str]:
    """Every quantizable layer, most sensitive first: the MLU emulation (its own scheme, or mlu270 for
    another backend's quantizer, with the job's per-channel choice) calibrated on ``batches``, each
    layer quantized alone, ranked by the SQNR of the network's output on ``check``."""
    qc = settings.qconfig
    emulated = qc if qc.scheme in MLU_SCHEMES else dataclasses.replace(qc, scheme="mlu270", firstconv=False)
    emulated = dataclasses.replace(emulated, mixed_layer=())
    scales = q.calibrate(float_model, batches, emulated)
    quantized = copy.deepcopy(float_model)
    q.quantize_model(quantized, scales, emulated)
    table = q.sensitivity_table(float_model, quantized, check)
    return q.most_sensitive(table, len(table))


def stage_result(result: BudgetResult, max_drop: float, mixed_layer: tuple[str, ...]) -> StageResult:
    """The search, logged: the steps table, the chosen list as a ready mixed_layer setting, the count."""
    chosen = list(mixed_layer) + result.layers
    tags = {
        "quant.max_drop": max_drop,
        "quant.max_drop.met": str(result.met).lower(),
        "quant.max_drop.mixed_layer": "[" + ",".join(chosen) + "]",
        "quant.max_drop.float_map50_95": round(result.float_map, 4),
    }
    return StageResult(
        metrics={"quant_float_layers": float(len(result.layers)), "quant_budget_steps": float(len(result.steps))},
        tags=tags,
        tables={"quant_budget_search.json": result.steps},
        texts={"quant_budget_search.csv": result.steps.to_csv(index=False)},
    )
