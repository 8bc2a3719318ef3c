"""A job's timed section — benchmark and layer profile — in a process that ran nothing else.

:func:`time_in_fresh_process` runs :func:`time_runner` on a runner's timing twin (a runner that
reopens the engine the job's runner built) in a fresh process (``evaluate.isolated``). A runner
whose batches already run in a process of its own (the MLU device worker) has no twin: the job
times it where it is, with :func:`time_runner`, and says so. :func:`time_alone` times the engine
with its plain API in another fresh process: the check that the workbench's figure is the engine's."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from yolomlu.backends.base import Runner
from yolomlu.evaluate.conditions import Conditions
from yolomlu.evaluate.isolated import run_isolated
from yolomlu.evaluate.pipeline import DetectHead, NmsSettings, preprocess
from yolomlu.evaluate.speed import Timings, benchmark
from yolomlu.types import LayerProfile


@dataclass(frozen=True)
class BenchPlan:
    """What to time: ``iterations`` batches of ``batch_size`` after ``warmup``, then (``profile``)
    one per-layer-type profile of a batch."""

    img_size: int
    batch_size: int
    warmup: int
    iterations: int
    head: DetectHead
    nms: NmsSettings
    profile: bool = False
    progress: bool = True


@dataclass
class TimedResult:
    timings: Timings | None  # None: the benchmark was off
    profile: LayerProfile | None
    device_memory_mb: float | None
    facts: dict[str, Any] = field(default_factory=dict)  # where and how it was timed (tags)


def time_runner(runner: Runner, images: list[np.ndarray], plan: BenchPlan, benchmark_enabled: bool = True) -> TimedResult:
    """Benchmark (and profile) ``runner`` here; activate it first if it is not active."""
    activated = not runner.is_active
    runner.activate()
    try:
        timings = profile = memory = None
        if benchmark_enabled:
            timings = benchmark(
                runner, images, plan.img_size, plan.batch_size, plan.warmup, plan.iterations, plan.head, plan.nms, plan.progress
            )
            memory = runner.device_memory_mb()
        if plan.profile:
            batch = preprocess([images[i % len(images)] for i in range(plan.batch_size)], plan.img_size)[0]
            profile = runner.profile(batch)
        facts = {"timing.pid": os.getpid(), "timing.threads": runner.threads_in_use(), "timing.torch_threads": torch.get_num_threads()}
        return TimedResult(timings, profile, memory, facts)
    finally:
        if activated:
            runner.deactivate()


def time_in_fresh_process(twin: Runner, images: list[np.ndarray], plan: BenchPlan, benchmark_enabled: bool = True) -> TimedResult:
    """:func:`time_runner` on ``twin`` (a runner's timing twin, inactive) in a fresh process."""
    result = run_isolated("yolomlu.evaluate.timed:time_runner", twin, images, plan, benchmark_enabled)
    result.facts["timing.process"] = "a fresh process that ran nothing before this timing"
    return result


@dataclass(frozen=True)
class AloneTiming:
    """An engine timed alone: the seconds of each of its back-to-back calls on one batch."""

    engine: str
    batch_size: int
    seconds: list[float]
    peak_rss_mb: float
    conditions: list[Conditions]

    def pooled(self, other: "AloneTiming") -> "AloneTiming":
        return AloneTiming(
            self.engine, self.batch_size, self.seconds + other.seconds, max(self.peak_rss_mb, other.peak_rss_mb),
            self.conditions + other.conditions,
        )  # fmt: skip

    def metrics(self) -> dict[str, float]:
        ms = np.asarray(self.seconds) * 1000.0
        return {
            "alone_fps": self.batch_size / float(np.mean(self.seconds)),
            "alone_latency_ms_p50": float(np.percentile(ms, 50)),
            "alone_latency_ms_p90": float(np.percentile(ms, 90)),
            "alone_peak_rss_mb": self.peak_rss_mb,
        }


def time_engine(spec, batch: torch.Tensor, warmup: int, iterations: int) -> AloneTiming:
    """Open ``spec`` (an ``EngineSpec``) with the engine's own API and time ``iterations`` calls on
    ``batch`` (float32 [B, 3, H, W]) after ``warmup``: no runner, no pre- or post-processing.
    Meant to run in a fresh process (:func:`time_alone`)."""
    import time

    from yolomlu.evaluate.conditions import ConditionsProbe
    from yolomlu.evaluate.speed import peak_rss_mb

    if iterations < 1 or warmup < 0:
        raise ValueError(f"need iterations >= 1 and warmup >= 0; got {iterations}, {warmup}")
    run = spec.open()
    for _ in range(warmup):
        run(batch)
    seconds = []
    threads = spec.threads or (os.cpu_count() if spec.kind == "onnx" else torch.get_num_threads())
    with ConditionsProbe(threads) as probe:
        for _ in range(iterations):
            t0 = time.perf_counter()
            run(batch)
            seconds.append(time.perf_counter() - t0)
    return AloneTiming(spec.describe(), int(batch.shape[0]), seconds, peak_rss_mb(), [probe.result])


def time_alone(spec, batch: torch.Tensor, warmup: int, iterations: int) -> AloneTiming:
    """:func:`time_engine` in a fresh process."""
    return run_isolated("yolomlu.evaluate.timed:time_engine", spec, batch, warmup, iterations)


def split_iterations(total: int, rounds: int) -> list[int]:
    """``total`` iterations in ``rounds`` rounds as even as can be (the first ones one longer)."""
    if rounds < 1 or total < rounds:
        raise ValueError(f"bench.rounds={rounds} must be between 1 and bench.iters={total}")
    return [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]
