"""Speed benchmark: pre-process, warm-up and timed inference, post-process, each phase on its own."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolomlu.backends.base import Runner
from yolomlu.evaluate.conditions import Conditions, ConditionsProbe, pool
from yolomlu.evaluate.pipeline import DetectHead, NmsSettings, postprocess, preprocess
from yolomlu.types import SpeedStats


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux the kernel's high-water mark of this process's own memory map (``VmHWM``):
    ``getrusage``'s ``ru_maxrss`` would also carry the peak of the parent that started it (the
    kernel keeps the larger of the two across ``exec``), so a timing process started by a job that
    had just quantized a model would report the job's peak, not its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


@dataclass
class Timings:
    """The raw seconds of one benchmark, per batch, or of several rounds of one pooled together.

    pre, post: seconds per batch of pre-processing and decode + NMS; infer: the runner's seconds
    per batch; device: the device's own seconds per batch where the runner times its device (else
    empty); conditions: one per timed inference section (see ``conditions``).
    """

    batch_size: int
    warmup: int
    pre: list[float]
    infer: list[float]
    post: list[float]
    device: list[float]
    conditions: list[Conditions]
    peak_rss_mb: float

    def pooled(self, other: "Timings") -> "Timings":
        """These timings and ``other``'s (another round of the same engine and batch) together."""
        if other.batch_size != self.batch_size:
            raise ValueError(f"cannot pool timings of batch {self.batch_size} and {other.batch_size}")
        return Timings(
            self.batch_size, self.warmup, self.pre + other.pre, self.infer + other.infer, self.post + other.post,
            self.device + other.device, self.conditions + other.conditions, max(self.peak_rss_mb, other.peak_rss_mb),
        )  # fmt: skip

    def stats(self) -> SpeedStats:
        infer_ms = np.asarray(self.infer) * 1000.0
        bs = self.batch_size
        per_image = 1000.0 / bs
        mean_pre, mean_infer, mean_post = (float(np.mean(t)) for t in (self.pre, self.infer, self.post))
        mean_device = float(np.mean(self.device)) if len(self.device) == len(self.infer) else None
        return SpeedStats(
            batch_size=bs,
            warmup=self.warmup,
            iterations=len(self.infer),
            fps=bs / mean_infer,
            latency_ms_p50=float(np.percentile(infer_ms, 50)),
            latency_ms_p90=float(np.percentile(infer_ms, 90)),
            latency_ms_p99=float(np.percentile(infer_ms, 99)),
            pre_ms=mean_pre * per_image,
            infer_ms=mean_infer * per_image,
            post_ms=mean_post * per_image,
            e2e_fps=bs / (mean_pre + mean_infer + mean_post),
            peak_rss_mb=self.peak_rss_mb,
            device_ms=mean_device * per_image if mean_device is not None else None,
            device_fps=bs / mean_device if mean_device is not None else None,
        )

    def overall_conditions(self) -> Conditions:
        return pool(self.conditions)


def benchmark(
    runner: Runner,
    images: list[np.ndarray],
    img_size: int,
    batch_size: int,
    warmup: int,
    iterations: int,
    head: DetectHead,
    nms: NmsSettings,
    progress: bool = True,
) -> Timings:
    """Time ``iterations`` batches of ``batch_size`` images (cycled from ``images``); return the
    seconds of each phase per batch and the conditions the inference was timed under.

    Three phases, each engine on its own: every batch is pre-processed (timed, kept once per
    distinct batch), then the warm-up and the timed inferences run back to back on the kept
    batches, then every batch's outputs are post-processed (decode + NMS, timed). So the engine's
    threads never share the cores with torch's pre/post-processing threads, as they would if the
    phases alternated batch by batch; ``e2e_fps`` is the sum of the three per-batch means.

    Inference time is the runner's own, device synchronised, copies to and from the device
    included; ``fps`` counts inference alone (as the porting study reports it). Where the runner
    times its device, ``device_fps`` counts the forward on the device alone.
    """
    if not images:
        raise ValueError("benchmark needs at least one image")
    if batch_size < 1 or iterations < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, iterations >= 1, warmup >= 0; got {batch_size}, {iterations}, {warmup}")
    from tqdm import tqdm

    def start_of(i: int) -> int:  # batches cycle through the images: equal starts, equal batches
        return (i * batch_size) % len(images)

    def batch_at(i: int) -> list[np.ndarray]:
        return [images[(start_of(i) + j) % len(images)] for j in range(batch_size)]

    # Phase 1: pre-process. One untimed call first (allocations), then every iteration's batch.
    preprocess(batch_at(0), img_size)
    pre: list[float] = []
    kept: dict[int, tuple] = {}
    for i in range(iterations):
        t0 = time.perf_counter()
        x, infos = preprocess(batch_at(i), img_size)
        pre.append(time.perf_counter() - t0)
        kept.setdefault(start_of(i), (x, infos))

    # Phase 2: warm-up, then the timed inferences, under the conditions probe.
    for i in range(warmup):
        runner.timed_infer(kept[start_of(i % iterations)][0])
    runner.reset_device_memory_peak()  # the warm-up's autotuning workspaces are not the model's needs
    infer, device, outputs = [], [], {}
    with ConditionsProbe(runner.threads_in_use(), also_own=runner.helper_pids()) as probe:
        for i in tqdm(range(iterations), desc=f"benchmark bs{batch_size}", disable=not progress, leave=False):
            got, seconds = runner.timed_infer(kept[start_of(i)][0])
            infer.append(seconds)
            if runner.last_device_seconds is not None:
                device.append(runner.last_device_seconds)
            outputs.setdefault(start_of(i), got)

    # Phase 3: post-process every iteration's outputs (equal batches have equal outputs).
    postprocess(outputs[start_of(0)], head, nms, kept[start_of(0)][1], runner.detection_buffer)
    post = []
    for i in range(iterations):
        t0 = time.perf_counter()
        postprocess(outputs[start_of(i)], head, nms, kept[start_of(i)][1], runner.detection_buffer)
        post.append(time.perf_counter() - t0)
    return Timings(batch_size, warmup, pre, infer, post, device, [probe.result], peak_rss_mb())
