"""The job's quantization stage, as the MLU does it, emulated in torch (REFERENCE §3).

Calibrate (or load a quant-params file) -> quantize a copy of the float model -> SQNR evidence ->
per-layer sensitivity -> the quant-params file as an artifact. A backend that quantizes by itself
(ONNX Runtime, the MLU SDK) gets calibration batches instead; see :func:`calibration_batches`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from yolomlu import quant as q
from yolomlu.data.coco import CocoDataset
from yolomlu.evaluate.pipeline import preprocess


@dataclass
class EmulatedQuant:
    model: torch.nn.Module  # the float model with fake-quantized Conv/Linear layers
    scales: dict
    settings: q.QuantSettings
    fallback_layers: list[str]  # the k most sensitive layers (quant.fallback_topk), for a float fallback


def settings_of(cfg: DictConfig) -> q.QuantSettings:
    from yolomlu.tasks.common import to_plain

    return q.QuantSettings.from_mapping(to_plain(cfg.quant))


def calibration_batches(cfg: DictConfig, dataset: CocoDataset, settings: q.QuantSettings) -> list[torch.Tensor]:
    """The calibration images the observers will see (the first ``iteration`` batches of
    ``calib.batch_size`` from the job's dataset), preprocessed as for evaluation."""
    n = min(settings.observed_images, len(dataset))
    ids, bs = dataset.image_ids[:n], settings.calib_batch_size
    return [preprocess([dataset.load_image(i) for i in ids[k : k + bs]], cfg.img_size)[0] for k in range(0, n, bs)]


def emulate(cfg: DictConfig, float_model: torch.nn.Module, dataset: CocoDataset, check: torch.Tensor | None, run, metrics: dict) -> EmulatedQuant:
    """Quantize a copy of ``float_model`` with the MLU's semantics and log the evidence."""
    settings = settings_of(cfg)
    qc = settings.qconfig
    if qc.scheme == "onnxruntime":
        raise ValueError("quant.scheme=onnxruntime is ONNX Runtime's own int8: use it with backend=onnxruntime")
    if settings.calib_method != "minmax":
        raise ValueError(f"quant.calib.method={settings.calib_method} is ONNX Runtime only; the MLU's observers are minmax")
    if settings.params_file:
        scales, info = q.load_quant_params(settings.params_file)
        q.check_quant_params(float_model, info, qc)
        run.set_tags({"quant.source": f"params_file {settings.params_file}"})
    else:
        scales = q.calibrate(float_model, calibration_batches(cfg, dataset, settings), qc)
        run.set_tags({"quant.source": "calibrated", "quant.observed_images": settings.observed_images})
    quantized = copy.deepcopy(float_model)
    metrics["quant_layers"] = q.quantize_model(quantized, scales, qc)
    run.set_tags({"quant_emulated": "true", "quant.scheme": qc.scheme, "quant.dtype": qc.dtype})
    if check is not None:
        frame = q.layer_sqnr(float_model, quantized, check)
        metrics.update(q.sqnr_summary(frame))
        run.log_table(frame, "quant_layer_sqnr.json")
        run.set_tags({"quant.worst_layer": frame.loc[frame["sqnr_db"].idxmin(), "name"]})
    path = q.save_quant_params(Path(cfg.paths.cache_dir) / "quant" / f"{run.run_id}.pth", float_model, scales, qc)
    run.log_artifact(path, "quant_params")
    fallback: list[str] = []
    if settings.sensitivity_images and check is not None:
        batch = check[: settings.sensitivity_images]
        table = q.sensitivity_table(float_model, quantized, batch)
        fallback = q.most_sensitive(table, settings.fallback_topk) if settings.fallback_topk else []
        run.log_table(table, "quant_sensitivity.json")
        run.log_text(table.to_csv(index=False), "quant_sensitivity.csv")
        run.log_figure(q.sensitivity_figure(table, title=f"{cfg.model.name} {qc.dtype}", highlight=fallback), "quant_sensitivity.png")
    return EmulatedQuant(quantized, scales, settings, fallback)


def with_float_fallback(float_model: torch.nn.Module, emulated: EmulatedQuant) -> torch.nn.Module:
    """A copy quantized with the same scales but the fallback layers kept in float (no recalibration)."""
    qc = dataclasses.replace(emulated.settings.qconfig, mixed_layer=emulated.settings.qconfig.mixed_layer + tuple(emulated.fallback_layers))
    model = copy.deepcopy(float_model)
    q.quantize_model(model, emulated.scales, qc)
    return model
