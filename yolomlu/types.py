"""Plain result types shared by every stage. Nothing of ours is imported here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections of one image, in original-image pixels.

    boxes:  float32 [N, 4], x1 y1 x2 y2 with 0 <= x1 <= x2 <= W and 0 <= y1 <= y2 <= H
    scores: float32 [N], confidence (objectness x class probability)
    labels: int64 [N], model class indices (0 .. nc-1), not dataset category ids
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.labels.shape != (n,):
            raise ValueError(
                f"Detections shapes disagree: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"labels {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True)
class SpeedStats:
    """What one benchmark measured. Latencies are per batch; pre/infer/post are per image."""

    batch_size: int
    warmup: int
    iterations: int
    fps: float  # images/s through inference alone, at `batch_size`
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    pre_ms: float
    infer_ms: float
    post_ms: float
    e2e_fps: float  # images/s through pre-process + inference + post-process
    peak_rss_mb: float
    # Where the runner times its device: the forward alone, without host<->device copies.
    device_ms: float | None = None  # per image
    device_fps: float | None = None

    def metrics(self) -> dict[str, float]:
        return {
            "fps": self.fps,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p90": self.latency_ms_p90,
            "latency_ms_p99": self.latency_ms_p99,
            "pre_ms": self.pre_ms,
            "infer_ms": self.infer_ms,
            "post_ms": self.post_ms,
            "e2e_fps": self.e2e_fps,
            "peak_rss_mb": self.peak_rss_mb,
        } | ({"device_ms": self.device_ms, "device_fps": self.device_fps} if self.device_ms is not None else {})


@dataclass(frozen=True)
class LayerProfileRow:
    layer_type: str  # the study's taxonomy: CONV, ACTIVE, STRIDEDSLICE, CONCAT, MULT, ADD, ...
    count: int
    time_us: float
    ratio: float  # share of the total time, 0..1


@dataclass(frozen=True)
class LayerProfile:
    """Per-layer-type time table of one forward pass, slowest first."""

    rows: list[LayerProfileRow] = field(default_factory=list)

    @property
    def total_us(self) -> float:
        return sum(r.time_us for r in self.rows)
