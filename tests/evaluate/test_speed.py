import numpy as np
import pytest
import torch

from yolomlu.backends.torch_runner import TorchRunner
from yolomlu.evaluate.pipeline import NmsSettings
from yolomlu.evaluate.speed import benchmark
from yolomlu.model import build_yolov5
from yolomlu.tasks.common import detect_head

NMS = NmsSettings(conf_thres=0.25, iou_thres=0.45, max_det=300)


@pytest.fixture(scope="module")
def model_and_head():
    model = build_yolov5("v5", 0.33, 0.25, nc=3).eval()
    return model, detect_head(model)


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(n)]


def test_benchmark_counts_iterations_and_batch(model_and_head) -> None:
    model, head = model_and_head
    with TorchRunner(model) as runner:
        timings = benchmark(runner, _images(3), 64, batch_size=2, warmup=1, iterations=4, head=head, nms=NMS, progress=False)
    stats = timings.stats()
    assert (stats.batch_size, stats.iterations) == (2, 4)
    assert len(timings.pre) == len(timings.infer) == len(timings.post) == 4
    assert stats.fps == pytest.approx(2 * 1000.0 / (stats.infer_ms * 2))
    # Orderings that hold by construction whatever the machine's speed (no speed is asserted):
    assert stats.latency_ms_p50 <= stats.latency_ms_p90 <= stats.latency_ms_p99  # noqa: timing
    assert stats.e2e_fps < stats.fps  # noqa: timing (pre-process and NMS add time)
    # A CPU runner has no device timer: the device-only numbers are absent, not zero.
    assert stats.device_ms is None and "device_fps" not in stats.metrics()
    # The conditions of the timed section are recorded; a CPU timing burns CPU time.
    (conditions,) = timings.conditions
    assert conditions.cpu_s > 0 and conditions.wall_s > 0


def test_rounds_pool_into_one_set_of_statistics(model_and_head) -> None:
    model, head = model_and_head
    with TorchRunner(model) as runner:
        rounds = [benchmark(runner, _images(2), 64, batch_size=1, warmup=0, iterations=n, head=head, nms=NMS, progress=False) for n in (2, 3)]
    pooled = rounds[0].pooled(rounds[1])
    assert pooled.stats().iterations == 5 and len(pooled.conditions) == 2
    assert pooled.infer == rounds[0].infer + rounds[1].infer


class _TimedDevice(TorchRunner):
    """A CPU runner that reports a fixed device time per batch, as a CUDA runner does with events."""

    def _infer_impl(self, batch: torch.Tensor) -> list[torch.Tensor]:
        outputs = super()._infer_impl(batch)
        self.last_device_seconds = 0.004
        return outputs


def test_device_time_is_averaged_per_image_and_logged(model_and_head) -> None:
    model, head = model_and_head
    with _TimedDevice(model) as runner:
        stats = benchmark(runner, _images(2), 64, batch_size=4, warmup=0, iterations=3, head=head, nms=NMS, progress=False).stats()
    assert stats.device_ms == pytest.approx(1.0)  # 4 ms per batch of 4
    assert stats.metrics()["device_fps"] == pytest.approx(1000.0)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"iterations": 0}, {"warmup": -1}])
def test_bad_benchmark_settings_are_refused(model_and_head, kwargs) -> None:
    model, head = model_and_head
    settings = {"batch_size": 1, "warmup": 0, "iterations": 1} | kwargs
    with TorchRunner(model) as runner, pytest.raises(ValueError, match="need batch_size"):
        benchmark(runner, _images(1), 64, head=head, nms=NMS, progress=False, **settings)
