"""Speed benchmark: warm-up, then timed iterations of pre-process, inference and post-process."""

from __future__ import annotations

import resource
import sys
import time

import numpy as np

from yolomlu.backends.base import Runner
from yolomlu.evaluate.pipeline import DetectHead, NmsSettings, postprocess, preprocess
from yolomlu.types import SpeedStats


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


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
) -> SpeedStats:
    """Time ``iterations`` batches of ``batch_size`` images (cycled from ``images``).

    Inference time is the runner's own, device synchronised, copies to and from the device
    included; ``fps`` counts inference alone (as the porting study reports it) and ``e2e_fps``
    pre-process + inference + NMS. Where the runner times its device, ``device_fps`` counts the
    forward on the device alone (what a pipeline that keeps tensors on the device would see).
    """
    if not images:
        raise ValueError("benchmark needs at least one image")
    if batch_size < 1 or iterations < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, iterations >= 1, warmup >= 0; got {batch_size}, {iterations}, {warmup}")
    from tqdm import tqdm

    def batch_at(i: int) -> list[np.ndarray]:
        return [images[(i * batch_size + j) % len(images)] for j in range(batch_size)]

    for i in range(warmup):
        x, infos = preprocess(batch_at(i), img_size)
        outputs, _ = runner.timed_infer(x)
        postprocess(outputs, head, nms, infos, runner.detection_buffer)

    runner.reset_device_memory_peak()  # the warm-up's autotuning workspaces are not the model's needs
    pre, infer, post, device = [], [], [], []
    for i in tqdm(range(iterations), desc=f"benchmark bs{batch_size}", disable=not progress, leave=False):
        t0 = time.perf_counter()
        x, infos = preprocess(batch_at(i), img_size)
        pre.append(time.perf_counter() - t0)
        outputs, seconds = runner.timed_infer(x)
        infer.append(seconds)
        if runner.last_device_seconds is not None:
            device.append(runner.last_device_seconds)
        t0 = time.perf_counter()
        postprocess(outputs, head, nms, infos, runner.detection_buffer)
        post.append(time.perf_counter() - t0)

    infer_ms = np.asarray(infer) * 1000.0
    per_image = 1000.0 / batch_size
    mean_pre, mean_infer, mean_post = (float(np.mean(t)) for t in (pre, infer, post))
    mean_device = float(np.mean(device)) if len(device) == iterations else None
    return SpeedStats(
        batch_size=batch_size,
        warmup=warmup,
        iterations=iterations,
        fps=batch_size / mean_infer,
        latency_ms_p50=float(np.percentile(infer_ms, 50)),
        latency_ms_p90=float(np.percentile(infer_ms, 90)),
        latency_ms_p99=float(np.percentile(infer_ms, 99)),
        pre_ms=mean_pre * per_image,
        infer_ms=mean_infer * per_image,
        post_ms=mean_post * per_image,
        e2e_fps=batch_size / (mean_pre + mean_infer + mean_post),
        peak_rss_mb=peak_rss_mb(),
        device_ms=mean_device * per_image if mean_device is not None else None,
        device_fps=batch_size / mean_device if mean_device is not None else None,
    )
