"""The job's quantization stage, as the MLU does it, emulated in torch (REFERENCE §3).

Calibrate (or load a quant-params file) -> quantize a copy of the float model -> SQNR evidence ->
per-layer sensitivity -> the quant-params file as an artifact. A backend that quantizes by itself
(ONNX Runtime, the MLU SDK) gets calibration batches instead.

The quantizer sees the model as ``quantize_dynamic_mlu`` sees it: the convolutions with their
BatchNorm layers *unfolded* (``transforms.fuse`` is not applied before an MLU quantization; see
``common.bn_unfolded_for_quant``), so weight ranges, scales and the quant-params file are the
device's. ``quant.fold_bn=true`` folds them first on purpose, and the run says so.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from yolomlu import quant as q
from yolomlu.backends import runner_class
from yolomlu.data.coco import CocoDataset
from yolomlu.evaluate.pipeline import preprocess
from yolomlu.quant.qconfig import MLU_SCHEMES
from yolomlu.tasks.stages import StageResult

BN_UNFOLDED = "unfolded: each BatchNorm runs after its quantized conv, as quantize_dynamic_mlu sees the model"
BN_FOLDED = "folded into the convs before quantizing (quant.fold_bn=true: a deliberate variant, not what quantize_dynamic_mlu does)"


@dataclass
class Quantized:
    """What the quant stage hands to the runner.

    model: the model the runner gets: the float model (no quantization, or a backend that quantizes
    itself) or an emulated int8/int16 copy; calibration: batches for a backend that quantizes itself.
    """

    model: torch.nn.Module
    calibration: list[torch.Tensor] | None = None
    float_model: torch.nn.Module | None = None
    scales: dict = field(default_factory=dict)
    settings: q.QuantSettings | None = None
    fallback_layers: list[str] = field(default_factory=list)  # the k most sensitive (quant.fallback_topk)

    def with_float_fallback(self) -> torch.nn.Module:
        """A copy quantized with the same scales but the fallback layers kept in float (no recalibration)."""
        qc = self.settings.qconfig
        qc = dataclasses.replace(qc, mixed_layer=qc.mixed_layer + tuple(self.fallback_layers))
        model = copy.deepcopy(self.float_model)
        q.quantize_model(model, self.scales, qc)
        q.emulate_float_precision(model, self.settings.target_float_dtype)
        return model


def settings_of(cfg: DictConfig) -> q.QuantSettings:
    from yolomlu.tasks.common import to_plain

    return q.QuantSettings.from_mapping(to_plain(cfg.quant))


def calibration_images(cfg: DictConfig, dataset: CocoDataset, settings: q.QuantSettings) -> tuple[list, str]:
    """The calibration images the observers will see (``observed_images`` of them: the first
    ``iteration`` batches of ``calib.batch_size``), and where they came from, in words.

    By default (``quant.calib.data=disjoint``) they are images the evaluation never sees, so an
    accuracy is never measured on the images the scales were fitted to: the generated shapes set's
    own ``calib`` split (same generator and seed, another split: other images), or for a dataset
    folder the images after the evaluated ``data.max_images``. ``quant.calib.root`` names a folder
    of images instead; ``quant.calib.data=eval`` takes the first evaluated images (earlier versions'
    choice).
    """
    from yolomlu.data.coco import DataError, read_image
    from yolomlu.data.sources import list_images
    from yolomlu.data.synthetic import ensure_shapes
    from yolomlu.tasks.common import load_dataset

    n = settings.observed_images
    if settings.calib_root:
        files = list_images(settings.calib_root)[:n]
        return [read_image(f) for f in files], f"{len(files)} images of the folder {settings.calib_root}"
    if settings.calib_data == "eval":
        ids = dataset.image_ids[:n]
        return [dataset.load_image(i) for i in ids], f"the first {len(ids)} evaluated images (quant.calib.data=eval)"
    d = cfg.data
    if d.name == "shapes" and d.root is None:
        root = ensure_shapes(Path(cfg.paths.cache_dir) / "datasets", n_images=n, img_size=d.image_size, seed=d.seed, split="calib")
        calib = CocoDataset.from_root(root)
        return [calib.load_image(i) for i in calib.image_ids], f"{n} images of the generated set's calib split (never evaluated)"
    full = load_dataset(cfg, subset=False)
    evaluated = set(dataset.image_ids)
    spare = [i for i in full.image_ids if i not in evaluated][:n]
    if not spare:
        raise DataError(
            f"quant.calib.data=disjoint needs images the evaluation does not see, but all {len(full)} images of "
            f"{full.ann_file} are evaluated: set data.max_images below {len(full)}, quant.calib.root=<a folder of "
            "images>, or quant.calib.data=eval"
        )
    return [full.load_image(i) for i in spare], f"{len(spare)} images of {d.name} after the {len(dataset)} evaluated ones"


def calibration_batches(cfg: DictConfig, dataset: CocoDataset, settings: q.QuantSettings) -> tuple[list[torch.Tensor], str]:
    """:func:`calibration_images` in batches of ``calib.batch_size``, preprocessed as for evaluation."""
    images, source = calibration_images(cfg, dataset, settings)
    bs = settings.calib_batch_size
    batches = [preprocess(images[k : k + bs], cfg.img_size)[0] for k in range(0, len(images), bs)]
    return batches, source


def quantize(
    cfg: DictConfig,
    model: torch.nn.Module,
    dataset: CocoDataset,
    check: torch.Tensor | None,
    unfolded: bool,
    settings: q.QuantSettings | None = None,
) -> tuple[Quantized, StageResult]:
    """The stage: nothing (quant=none), calibration batches for a backend that quantizes itself, or
    the MLU emulation. ``unfolded``: the model's BatchNorm layers were left unfolded for it.
    ``settings``: the job's quant settings as a stage before changed them (an accuracy budget's
    float layers); default: the config's."""
    settings = settings or settings_of(cfg)
    if not settings.enabled:
        return Quantized(model), StageResult()
    bn = {"quant.bn": BN_UNFOLDED if unfolded else BN_FOLDED} if settings.qconfig.scheme in MLU_SCHEMES else {}
    if runner_class(cfg.backend.name).quantizes_itself:
        batches, source = calibration_batches(cfg, dataset, settings)
        tags = {"quant.source": "calibrated by the backend", "quant.calib_images": source, **bn}
        return Quantized(model, calibration=batches, settings=settings), StageResult(tags=tags)
    quantized, result = emulate(cfg, model, dataset, check, settings)
    result.tags.update(bn)
    return quantized, result


def emulate(
    cfg: DictConfig, float_model: torch.nn.Module, dataset: CocoDataset, check: torch.Tensor | None, settings: q.QuantSettings
) -> tuple[Quantized, StageResult]:
    """Quantize a copy of ``float_model`` with the MLU's semantics; the evidence as a StageResult."""
    qc = settings.qconfig
    if qc.scheme not in MLU_SCHEMES:
        raise ValueError(f"quant.scheme={qc.scheme} is not an MLU scheme: the emulation runs mlu270 or mlu370")
    if settings.target_activations != "symmetric":
        raise ValueError("quant.activations=asymmetric: the MLU quantizes activations symmetrically (scale = qmax / absmax)")
    if settings.calib_method != "minmax":
        raise ValueError(f"quant.calib.method={settings.calib_method} is ONNX Runtime only; the MLU's observers are minmax")
    result = StageResult()
    if settings.params_file:
        scales, info = q.load_quant_params(settings.params_file)
        q.check_quant_params(float_model, info, qc)
        result.tags["quant.source"] = f"params_file {settings.params_file}"
    else:
        batches, source = calibration_batches(cfg, dataset, settings)
        scales = q.calibrate(float_model, batches, qc)
        result.tags.update({"quant.source": "calibrated", "quant.calib_images": source})
    quantized = copy.deepcopy(float_model)
    result.metrics["quant_layers"] = q.quantize_model(quantized, scales, qc)
    q.emulate_float_precision(quantized, settings.target_float_dtype)
    result.tags.update(
        {
            "quant_emulated": "true",
            "quant.scheme": qc.scheme,
            "quant.dtype": qc.dtype,
            "quant.float_dtype": f"{settings.target_float_dtype} (BatchNorm, activations and every layer's output)",
        }
    )
    if check is not None:
        frame = q.layer_sqnr(float_model, quantized, check)
        result.metrics.update(q.sqnr_summary(frame))
        result.tables["quant_layer_sqnr.json"] = frame
        result.tags["quant.worst_layer"] = frame.loc[frame["sqnr_db"].idxmin(), "name"]
    path = Path(cfg.paths.cache_dir) / "quant" / f"quant_params-{uuid.uuid4().hex[:12]}.pth"
    result.artifacts.append((q.save_quant_params(path, float_model, scales, qc), "quant_params"))
    fallback: list[str] = []
    if settings.sensitivity_images and check is not None:
        batch = check[: settings.sensitivity_images]
        table = q.sensitivity_table(float_model, quantized, batch)
        fallback = q.most_sensitive(table, settings.fallback_topk) if settings.fallback_topk else []
        result.tables["quant_sensitivity.json"] = table
        result.texts["quant_sensitivity.csv"] = table.to_csv(index=False)
        result.figures["quant_sensitivity.png"] = q.sensitivity_figure(table, title=f"{cfg.model.name} {qc.dtype}", highlight=fallback)
    return Quantized(quantized, float_model=float_model, scales=scales, settings=settings, fallback_layers=fallback), result
