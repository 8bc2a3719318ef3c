"""Typed configs: one dataclass per config group, the schema of its yaml files.

Each yaml file of a group names its schema first in its defaults list (``defaults: [torch_schema,
_self_]``), so Hydra composes the file onto the dataclass: a value of the wrong type (``seed=abc``,
``bench.iters=two``) or a key the schema lacks (``bench.itres=5``) is refused while the config is
composed, before any work, naming the full key and the type it expects. The top-level keys have a
schema too (``config_schema``, first in ``conf/config.yaml``).

:func:`register` puts the schemas in Hydra's ConfigStore. The command line calls it before Hydra
starts (never at import); launchers hand the ConfigStore to their workers with the rest of Hydra's
state. Value checks that a type cannot express (choices, ranges, combinations) stay in
``common.validate_config``. No backend group copies the ``quant`` group: every runner gets the typed
quant settings through the runner interface (``Runner.set_quantization``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

# Interpolations (``${model.img_size}``) are strings until resolved: OmegaConf accepts them in typed
# fields and checks the resolved value's type when it is read.


@dataclass
class ModelConf:
    name: str = MISSING
    arch: str = MISSING
    depth_multiple: float = MISSING
    width_multiple: float = MISSING
    nc: int = MISSING
    names: Optional[list[str]] = None
    weights: Optional[str] = None
    img_size: int = 640


@dataclass
class ShapesDataConf:
    name: str = "shapes"
    root: Optional[str] = None
    split: str = "val"
    n_images: int = 32
    image_size: int = 320
    seed: int = 0
    max_images: Optional[int] = None


@dataclass
class CocoDataConf:
    name: str = "coco"
    root: str = MISSING
    split: str = "val"
    max_images: Optional[int] = None


@dataclass
class TorchBackendConf:
    name: str = "torch"
    device: str = "cpu"
    mode: str = "eager"
    compiler: str = "trace"
    offline_format: str = "torchscript"
    half: bool = False
    channels_last: bool = False
    threads: Optional[int] = None


@dataclass
class OrtBackendConf:
    name: str = "onnxruntime"
    graph_optimization: str = "all"
    threads: Optional[int] = None
    opset: int = 17
    half: bool = False
    quant_format: str = "qdq"


@dataclass
class OpenVinoBackendConf:
    name: str = "openvino"
    precision: str = "auto"
    hint: str = "latency"
    threads: Optional[int] = None
    opset: int = 17
    half: bool = False


@dataclass
class MluLegacyBackendConf:
    name: str = "mlu_legacy"
    python: Optional[str] = None
    mode: str = "eager"
    core_version: str = "MLU270"
    core_number: int = 1
    batch_size: int = 1
    half: bool = False
    input_format: int = 0
    device_id: Optional[int] = None
    quant_params: Optional[str] = None
    detection_output: bool = False
    coords: str = "pixels"
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_box_num: int = 1024
    tfu: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 1800.0
    keep_exchange: bool = False


@dataclass
class CalibConf:
    images: int = 16
    batch_size: int = 16
    method: str = "minmax"
    data: str = "disjoint"
    root: Optional[str] = None


@dataclass
class SensitivityConf:
    images: int = 2


@dataclass
class QuantConf:
    name: str = "none"
    enabled: bool = False
    iteration: int = 1
    use_avg: bool = False
    data_scale: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    firstconv: bool = True
    per_channel: bool = False
    dtype: str = "int8"
    scheme: str = "mlu270"
    mixed_layer: list[str] = field(default_factory=list)
    calib: CalibConf = field(default_factory=CalibConf)
    sensitivity: SensitivityConf = field(default_factory=SensitivityConf)
    fallback_topk: int = 0
    params_file: Optional[str] = None
    float_dtype: Optional[str] = None
    activations: Optional[str] = None
    max_drop: Optional[float] = None
    fold_bn: bool = False


@dataclass
class EvalConf:
    enabled: bool = True
    batch_size: int = 8
    conf_thres: float = 0.001
    iou_thres: float = 0.65
    max_det: int = 300
    max_candidates: int = 30000
    multi_label: bool = True
    parity_images: int = 2


@dataclass
class BenchConf:
    enabled: bool = True
    batch_size: int = 1
    warmup: int = 3
    iters: int = 20
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300
    profile: bool = True
    rounds: int = 1
    engine_alone: bool = False


@dataclass
class TrackingConf:
    uri: Optional[str] = None
    experiment: str = "yolomlu"
    artifact_root: Optional[str] = None
    offline_dir: Optional[str] = None
    run_name: Optional[str] = None


@dataclass
class PathsConf:
    cache_dir: str = ".cache/yolomlu"
    output_dir: str = "outputs"


@dataclass
class ReportConf:
    parent: Optional[str] = None
    out_dir: str = "outputs/report"
    repeats: int = 1


@dataclass
class AugmentConf:
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    flipud: float = 0.0
    scale: float = 0.25
    translate: float = 0.1
    mosaic: float = 0.0


@dataclass
class TrainConf:
    epochs: int = 18
    batch_size: int = 16
    img_size: int = 320
    optimizer: str = "adamw"
    lr0: float = 0.002
    lrf: float = 0.01
    cosine: bool = True
    momentum: float = 0.9
    weight_decay: float = 0.0005
    nominal_batch_size: Optional[int] = None
    warmup_epochs: float = 1.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    ema_tau: float = 500.0
    n_train_images: int = 3000
    n_val_images: int = 200
    data_seed: int = 1
    seed: int = 0
    workers: int = 0
    threads: Optional[int] = 1
    device: str = "cpu"
    bf16: bool = True
    channels_last: bool = True
    cache: bool = True
    eval_every: int = 3
    eval_batch_size: int = 16
    out: str = MISSING
    augment: AugmentConf = field(default_factory=AugmentConf)


@dataclass
class SearchConf:
    name: str = MISSING
    n_trials: int = 12
    max_drop: float = 0.01
    seed: int = 0
    baseline: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransformsConf:
    focus_to_conv: bool = False
    spp_to_sppf: bool = False
    fuse: bool = True


@dataclass
class DetectConf:
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300


@dataclass
class SweepConf:
    rerun: bool = False
    reuse: str = "sweep"
    timeout_s: Optional[float] = None


@dataclass
class PromoteConf:
    name: Optional[str] = None
    alias: str = "champion"
    max_drop: float = 0.010


@dataclass
class GateConf:
    name: Optional[str] = None
    alias: str = "champion"
    max_map_drop: float = 0.005
    max_fps_loss: float = 0.25


@dataclass
class Config:
    """The top-level keys; each group is typed by its own schema (``Any`` here, so that a preset's
    ``override /backend: onnxruntime`` may swap one backend schema for another)."""

    task: str = "evaluate"
    seed: int = 0
    baseline: bool = False
    img_size: int = MISSING
    source: Optional[str] = None
    transforms: TransformsConf = field(default_factory=TransformsConf)
    detect: DetectConf = field(default_factory=DetectConf)
    sweep: SweepConf = field(default_factory=SweepConf)
    promote: PromoteConf = field(default_factory=PromoteConf)
    gate: GateConf = field(default_factory=GateConf)
    model: Any = MISSING
    data: Any = MISSING
    backend: Any = MISSING
    quant: Any = MISSING
    eval: Any = MISSING
    bench: Any = MISSING
    tracking: Any = MISSING
    paths: Any = MISSING
    report: Any = MISSING
    train: Any = MISSING
    search: Any = None


# (group, name in the group, schema): the yaml files start their defaults list with these names.
SCHEMAS: tuple[tuple[str | None, str, type], ...] = (
    (None, "config_schema", Config),
    ("model", "model_schema", ModelConf),
    ("data", "shapes_schema", ShapesDataConf),
    ("data", "coco_schema", CocoDataConf),
    ("backend", "torch_schema", TorchBackendConf),
    ("backend", "onnxruntime_schema", OrtBackendConf),
    ("backend", "openvino_schema", OpenVinoBackendConf),
    ("backend", "mlu_legacy_schema", MluLegacyBackendConf),
    ("quant", "quant_schema", QuantConf),
    ("eval", "eval_schema", EvalConf),
    ("bench", "bench_schema", BenchConf),
    ("tracking", "tracking_schema", TrackingConf),
    ("paths", "paths_schema", PathsConf),
    ("report", "report_schema", ReportConf),
    ("train", "train_schema", TrainConf),
    ("search", "search_schema", SearchConf),
)


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, name, node in SCHEMAS:
        store.store(group=group, name=name, node=node)
