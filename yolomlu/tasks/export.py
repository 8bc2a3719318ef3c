"""task=export: the (transformed) model as one self-contained ONNX file, ending at the Detect convs."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from yolomlu.backends.onnx_export import DEFAULT_OPSET, export_onnx
from yolomlu.tasks import common


def export_task(cfg: DictConfig) -> dict[str, float]:
    loaded = common.build_transformed(cfg)
    opset = cfg.backend.get("opset", DEFAULT_OPSET)
    path = Path(cfg.paths.output_dir) / "export" / f"{cfg.model.name}-{cfg.img_size}.onnx"
    export_onnx(loaded.model.float().cpu(), path, cfg.img_size, opset)
    size_mb = path.stat().st_size / 2**20
    print(f"[yolomlu] exported {cfg.model.name} at {cfg.img_size}px to {path.resolve()} ({size_mb:.1f} MiB, opset {opset})", file=common.log_stream())
    return {"model_mb": size_mb}
