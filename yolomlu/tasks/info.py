"""task=info: the model's size as YOLOv5 reports it (fused, at img_size)."""

from __future__ import annotations

from omegaconf import DictConfig

from yolomlu.model.summary import format_summary, summarize
from yolomlu.tasks import common


def info(cfg: DictConfig) -> dict[str, float]:
    loaded = common.build_transformed(cfg)
    summary = summarize(loaded.model, img_size=cfg.img_size)
    fused = "fused" if cfg.transforms.fuse else "unfused"
    print(f"{cfg.model.name} ({fused}, {cfg.img_size}x{cfg.img_size}): {format_summary(summary)}", file=common.log_stream())
    return {"layers": summary.layers, "params": summary.params, "gflops": summary.gflops}
