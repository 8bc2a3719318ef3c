"""Config -> objects: the one place that turns Hydra config nodes into typed library calls."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from yolomlu.backends import BackendError, Runner, runner_class
from yolomlu.data.categories import COCO80_NAMES
from yolomlu.data.coco import CocoDataset
from yolomlu.data.synthetic import dataset_stats, ensure_shapes
from yolomlu.evaluate.pipeline import DetectHead, NmsSettings
from yolomlu.model import build_yolov5
from yolomlu.model.checkpoint import load_weights
from yolomlu.tracking import TrackingSettings, default_tracking_uri
from yolomlu.tracking.query import BOOKKEEPING_OVERRIDES

# Set by the sweep callback for its jobs: the keys of the sweep's own command-line overrides that give
# every job the same value (joined by the unit separator), so they make no job's variant name.
SWEEP_OVERRIDES_ENV = "YOLOMLU_SWEEP_OVERRIDES"

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# model.weights=demo: the checkpoint trained on the synthetic set, shipped as package data.
DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "demo_yolov5n_v5.pt"

# Keys that say where a job is recorded or cached, not what it computes.
_NON_SEMANTIC_KEYS = ("tracking", "paths", "sweep", "baseline", "search", "promote", "gate")


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python containers."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]


def config_hash(cfg: DictConfig) -> str:
    """Short hash of what the job computes: the resolved config without tracking, paths, sweep and
    baseline keys (where a result is recorded, not what it is)."""
    plain = {k: v for k, v in to_plain(cfg).items() if k not in _NON_SEMANTIC_KEYS}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]


def choose(value: Any, choices: tuple[str, ...], key: str) -> str:
    """Return ``value`` if it is one of ``choices``; else raise naming the key and the choices."""
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {list(choices)}")
    return value


# -- model -------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    model: torch.nn.Module
    names: list[str]
    trained: bool  # weights came from a checkpoint (accuracy means something)
    weights: str | None


def build_model(cfg: DictConfig) -> LoadedModel:
    """Build ``cfg.model`` and load its weights if given; eval mode, no transforms yet."""
    m = cfg.model
    model = build_yolov5(m.arch, m.depth_multiple, m.width_multiple, nc=m.nc)
    names: list[str] | None = list(m.names) if m.names is not None else None
    weights = None
    if m.weights:
        weights = str(DEMO_WEIGHTS if m.weights == "demo" else Path(m.weights).expanduser().resolve())
        info = load_weights(model, weights)
        names = names or info.names
    if names is None:
        names = list(COCO80_NAMES) if m.nc == 80 else [f"class{i}" for i in range(m.nc)]
    if len(names) != m.nc:
        raise ValueError(f"model.names has {len(names)} names but model.nc is {m.nc}")
    model.eval()
    return LoadedModel(model=model, names=names, trained=weights is not None, weights=weights)


def build_transformed(cfg: DictConfig) -> LoadedModel:
    """:func:`build_model`, then ``cfg.transforms`` applied (no equivalence check)."""
    from yolomlu.transforms import apply_transforms

    loaded = build_model(cfg)
    require_effect(apply_transforms(loaded.model, transform_names(cfg), None), cfg)
    return loaded


def require_effect(reports: list, cfg: DictConfig) -> None:
    """Refuse a rewrite that was asked for but found nothing to rewrite: the variant would be
    logged as something it is not."""
    for report in reports:
        if report.replaced == 0 and report.name != "fuse":
            raise ValueError(
                f"transforms.{report.name}=true but model {cfg.model.name} (arch {cfg.model.arch}) has nothing to "
                f"rewrite; v6 models already have a 6x6 stem conv and SPPF"
            )


TRANSFORM_ORDER = ("focus_to_conv", "spp_to_sppf", "fuse")


def transform_names(cfg: DictConfig) -> list[str]:
    """The transforms switched on in ``cfg.transforms``, in the order they must run. ``fuse`` waits
    when an MLU quantization follows (:func:`bn_unfolded_for_quant`)."""
    unknown = set(cfg.transforms) - set(TRANSFORM_ORDER)
    if unknown:
        raise ValueError(f"unknown transforms {sorted(unknown)}; known: {list(TRANSFORM_ORDER)}")
    names = [name for name in TRANSFORM_ORDER if cfg.transforms.get(name)]
    if "fuse" in names and bn_unfolded_for_quant(cfg):
        names.remove("fuse")
    return names


def bn_unfolded_for_quant(cfg: DictConfig) -> bool:
    """Whether the model reaches an MLU quantization (emulated, or in the MLU worker) with its
    BatchNorm layers unfolded: ``quantize_dynamic_mlu`` swaps the convs of the model as built and
    leaves BatchNorm to run after them, so its weight ranges, scales and quant-params file are those
    of the unfolded convs. True for the MLU's schemes unless ``quant.fold_bn``."""
    from yolomlu.quant.qconfig import MLU_SCHEMES
    from yolomlu.tasks.quant_stage import settings_of

    settings = settings_of(cfg)
    return settings.enabled and settings.qconfig.scheme in MLU_SCHEMES and not settings.fold_bn


def variant_overrides(cfg: DictConfig) -> str | None:
    """What sets this job apart in its sweep: its preset (``experiments=fused`` -> ``fused``) plus its
    other command-line overrides (a grid's ``quant.per_channel=true ...``), leaving out bookkeeping
    ones (where and how a result is recorded) and those every job of the sweep shares. None outside
    a Hydra run or without any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    shared = set(os.environ.get(SWEEP_OVERRIDES_ENV, "").split("\x1f")) - {""}
    overrides = [
        o
        for o in HydraConfig.get().overrides.task
        if not o.lstrip("+~").startswith(BOOKKEEPING_OVERRIDES) and o.split("=", 1)[0].lstrip("+~") not in shared
    ]
    preset = [o.split("=", 1)[1] for o in overrides if o.startswith("experiments=")]
    rest = [o for o in overrides if not o.startswith("experiments=")]
    return " ".join(preset + rest) or None


def variant_name(cfg: DictConfig) -> str:
    """The variant as the report and the ``variant`` tag name it: :func:`variant_overrides`, else the
    descriptive run name."""
    return variant_overrides(cfg) or descriptive_name(cfg)


def detect_head(model: torch.nn.Module) -> DetectHead:
    head = model.detect
    return DetectHead(
        anchors_px=head.anchors_px.detach().float().cpu(),
        strides=tuple(float(s) for s in head.stride),
        nc=int(head.nc),
    )


def model_mb(model: torch.nn.Module) -> float:
    """Size of the weights and buffers as the model holds them, in MiB."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


# -- data --------------------------------------------------------------------------------------
def load_dataset(cfg: DictConfig, subset: bool = True) -> CocoDataset:
    """The job's dataset: a folder (``data.root``) or the generated synthetic set; its first
    ``data.max_images`` images unless ``subset`` is False."""
    d = cfg.data
    if d.root is not None:
        dataset = CocoDataset.from_root(Path(d.root).expanduser())
    elif d.name == "shapes":
        root = ensure_shapes(
            Path(cfg.paths.cache_dir) / "datasets", n_images=d.n_images, img_size=d.image_size, seed=d.seed, split=d.split
        )
        dataset = CocoDataset.from_root(root)
    else:
        raise ValueError(f"data.root is required for data={d.name}")
    if d.max_images is not None and subset:
        if d.max_images < 1:
            raise ValueError(f"data.max_images must be positive or null, got {d.max_images}")
        dataset = dataset.subset(d.max_images)
    return dataset


def describe_dataset(dataset: CocoDataset) -> dict[str, Any]:
    return dataset_stats(dataset.ann_file, image_ids=dataset.image_ids)


# -- backend -----------------------------------------------------------------------------------
def make_runner(cfg: DictConfig, model: torch.nn.Module, **replaced: Any) -> Runner:
    """The runner named by ``backend.name``, given the other backend keys as settings (plus where
    to write files and the input size); ``replaced``: backend keys a task sets its own way."""
    settings = {k: v for k, v in to_plain(cfg.backend).items() if k != "name"}
    settings.update(replaced, work_dir=str(Path(cfg.paths.cache_dir) / "exports"), img_size=cfg.img_size)
    cls = runner_class(cfg.backend.name)
    try:
        return cls(model, **settings)
    except TypeError as exc:
        raise BackendError(f"backend={cfg.backend.name} does not take these settings {sorted(settings)}: {exc}") from exc


def check_quantization(cfg: DictConfig) -> None:
    """Hand a backend that quantizes itself the job's quant settings (no images) so it refuses, by
    name and before any work, what it cannot honour."""
    from yolomlu.tasks.quant_stage import settings_of

    settings = settings_of(cfg)
    if settings.enabled and runner_class(cfg.backend.name).quantizes_itself:
        make_runner(cfg, torch.nn.Identity()).set_quantization(settings, [])


def eval_nms(cfg: DictConfig) -> NmsSettings:
    e = cfg.eval
    return NmsSettings(e.conf_thres, e.iou_thres, e.max_det, e.max_candidates, e.multi_label)


def bench_nms(cfg: DictConfig) -> NmsSettings:
    b = cfg.bench
    return NmsSettings(b.conf_thres, b.iou_thres, b.max_det)


# -- tracking ----------------------------------------------------------------------------------
def tracking_settings(cfg: DictConfig) -> TrackingSettings:
    t = cfg.tracking
    uri = t.uri or default_tracking_uri(Path.cwd())
    return TrackingSettings(uri=uri, experiment=t.experiment, artifact_root=t.artifact_root, offline_dir=t.offline_dir)


def run_name(cfg: DictConfig, in_sweep: bool = False) -> str:
    """``tracking.run_name``, else in a sweep the variant (unique among the sweep's jobs, which
    differ by their overrides), else :func:`descriptive_name`."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    return (variant_overrides(cfg) if in_sweep else None) or descriptive_name(cfg)


def descriptive_name(cfg: DictConfig) -> str:
    """model-backend-device-mode-precision-bs<batch>-<size>, e.g. demo-torch-cpu-eager-fp32-bs1-320."""
    b = cfg.backend
    precision = cfg.quant.name if cfg.quant.name != "none" else "half" if b.get("half") else "fp32"
    mode = b.get("mode", "")
    if mode == "fused" and b.get("compiler", "trace") != "trace":
        mode = f"{mode}-{b.compiler}"  # torch.compile and CUDA graphs are other variants than a trace
    parts = [cfg.model.name, b.name, b.get("device", ""), mode, precision]
    parts += [f"bs{cfg.bench.batch_size}", str(cfg.img_size)]
    return "-".join(p for p in parts if p)


def environment_tags() -> dict[str, str]:
    """Where and with what a job ran: device, threads, versions, git commit."""
    tags = {
        "host": platform.node(),
        "cpu": _cpu_name(),
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "git_commit": _git_commit(),
        "code_hash": code_hash(),
    }
    if torch.cuda.is_available():
        tags["gpu"] = torch.cuda.get_device_name()
        tags["cuda"] = str(torch.version.cuda)
        tags["gpu_driver"] = _nvidia_driver()
    for package in ("yolomlu", "numpy", "mlflow", "hydra-core", "pycocotools"):
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return tags


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


@functools.cache
def code_hash() -> str:
    """Digest of the package's source (its .py and .yaml files): a result measured by other code
    is not this code's result, committed or not."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _nvidia_driver() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _git_commit() -> str:
    # A copy of the tree without .git (a lent GPU machine) is told its commit through the environment.
    if os.environ.get("YOLOMLU_GIT_COMMIT"):
        return os.environ["YOLOMLU_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_stream() -> Any:
    """Where human-readable results go (stdout; kept apart for tests)."""
    return sys.stdout


# -- validation --------------------------------------------------------------------------------
TASKS = ("evaluate", "detect", "info", "import", "report", "export", "train", "time_engine", "search", "promote", "gate")
ARCHS = ("v5", "v6")
DATASETS = ("shapes", "coco")


def validate_config(cfg: DictConfig) -> None:
    """Refuse an invalid value before any work starts, naming the key, the value and the choices.

    Hydra already refuses unknown keys (the config is in struct mode); this checks values.
    """
    choose(cfg.task, TASKS, "task")
    if not isinstance(cfg.img_size, int) or cfg.img_size < 32 or cfg.img_size % 32:
        raise ValueError(f"img_size={cfg.img_size!r} must be a positive multiple of 32")
    choose(cfg.model.arch, ARCHS, "model.arch")
    if not isinstance(cfg.model.nc, int) or cfg.model.nc < 1:
        raise ValueError(f"model.nc={cfg.model.nc!r} must be a positive integer")
    choose(cfg.data.name, DATASETS, "data.name")
    max_images = cfg.data.max_images
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"data.max_images={max_images!r} must be a positive integer or null (null: every image)")
    # The thresholds by their full keys (NmsSettings would refuse them too, naming neither group nor key).
    for group in ("eval", "bench", "detect"):
        for key in ("conf_thres", "iou_thres"):
            value = cfg[group][key]
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{group}.{key}={value!r} must be a number between 0 and 1")
    for key in ("eval.batch_size", "bench.batch_size", "bench.iters", "eval.max_det", "eval.max_candidates", "bench.max_det", "detect.max_det"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value!r} must be a positive integer")
    eval_nms(cfg)
    bench_nms(cfg)
    if not isinstance(cfg.eval.parity_images, int) or cfg.eval.parity_images < 0:
        raise ValueError(f"eval.parity_images={cfg.eval.parity_images!r} must be a non-negative integer")
    transform_names(cfg)
    if not isinstance(cfg.bench.warmup, int) or cfg.bench.warmup < 0:
        raise ValueError(f"bench.warmup={cfg.bench.warmup!r} must be a non-negative integer")
    rounds = cfg.bench.rounds
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= cfg.bench.iters:
        raise ValueError(f"bench.rounds={rounds!r} must be an integer from 1 to bench.iters={cfg.bench.iters}")
    choose(cfg.sweep.reuse, ("sweep", "any"), "sweep.reuse")
    from yolomlu.tasks.quant_stage import settings_of

    settings = settings_of(cfg)  # every quant key and value
    schemes = runner_class(cfg.backend.name).quant_schemes
    if settings.enabled and settings.qconfig.scheme not in schemes:
        raise ValueError(
            f"quant.scheme={settings.qconfig.scheme} cannot run on backend={cfg.backend.name}, which takes "
            f"{list(schemes) or 'no quantization'}" + (f": set quant.scheme={schemes[0]}" if schemes else "")
        )
    _check_stem_and_transforms(cfg, settings)
    # Constructing a runner is cheap and checks every backend setting; so is handing it the quant settings.
    make_runner(cfg, torch.nn.Identity())
    check_quantization(cfg)


def _check_stem_and_transforms(cfg: DictConfig, settings) -> None:
    """Refuse, from the architecture file alone (no model is built), a rewrite the model has nothing
    for and an MLU firstconv on a Focus stem: each would otherwise fail only after the model, the
    data and the reference outputs were made."""
    from yolomlu.model import load_arch

    rows = [row for part in ("backbone", "head") for row in load_arch(cfg.model.arch)[1][part]]
    modules = {row[2] for row in rows}
    model = f"model {cfg.model.name} (arch {cfg.model.arch})"
    if cfg.transforms.focus_to_conv and "Focus" not in modules:
        raise ValueError(
            f"transforms.focus_to_conv=true but {model} has no Focus stem to rewrite: it already starts with the "
            "6x6 stride-2 conv the rewrite makes. Set transforms.focus_to_conv=false, or choose a v5.0 model (*_v5)"
        )
    if cfg.transforms.spp_to_sppf and "SPP" not in modules:
        raise ValueError(
            f"transforms.spp_to_sppf=true but {model} has no SPP to rewrite: it already has SPPF. Set "
            "transforms.spp_to_sppf=false, or choose a v5.0 model (*_v5)"
        )
    q = settings.qconfig
    if settings.enabled and q.firstconv and q.scheme.startswith("mlu") and rows[0][2] == "Focus" and not cfg.transforms.focus_to_conv:
        raise ValueError(
            f"quant.firstconv=true needs a first conv on 1, 3 or 4 input channels, but {model} starts with a Focus "
            "stem on 12 (the 4 pixel phases of RGB stacked): set transforms.focus_to_conv=true (the equivalent 6x6 "
            "conv on 3 channels) or quant.firstconv=false"
        )
