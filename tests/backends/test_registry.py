import pytest
import torch

from yolomlu.backends import BackendError, available_backends, runner_class
from yolomlu.backends.torch_runner import TorchRunner


class TwoLevels(torch.nn.Module):
    """A real (tiny) module with the Detect output contract: a list of per-level maps."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 18, 1, stride=8)
        self.b = torch.nn.Conv2d(3, 18, 1, stride=16)

    def forward(self, x):
        return [self.a(x), self.b(x)]


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(BackendError, match=r"unknown backend 'tensorrt'; available: \[.*'torch'"):
        runner_class("tensorrt")
    assert "torch" in available_backends()


def test_torch_runner_returns_float32_cpu_outputs() -> None:
    with TorchRunner(TwoLevels()) as runner:
        outputs, seconds = runner.timed_infer(torch.rand(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, 18, 4, 4), (2, 18, 2, 2)]
    assert all(o.dtype == torch.float32 and o.device.type == "cpu" for o in outputs)
    assert seconds > 0  # noqa: timing (a measurement exists, no speed claim)


def test_half_on_cpu_computes_in_bfloat16() -> None:
    with TorchRunner(TwoLevels(), half=True) as runner:
        runner.infer(torch.rand(1, 3, 32, 32))
        assert runner.evidence()["backend.compute_dtype"] == "bfloat16"


def test_threads_are_restored_after_use() -> None:
    before = torch.get_num_threads()
    with TorchRunner(TwoLevels(), threads=1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "tpu"}, r"backend.device='tpu' is not supported"),
        ({"mode": "warp"}, r"backend.mode='warp' is not supported"),
        ({"threads": 0}, r"backend.threads must be a positive integer"),
        ({"compiler": "cudagraph", "mode": "fused"}, r"compiler=cudagraph needs backend.device=cuda"),
        ({"compiler": "cudagraph", "device": "cuda"}, r"compiler=cudagraph needs .*mode=fused"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, message) -> None:
    with pytest.raises(BackendError, match=message):
        TorchRunner(TwoLevels(), **kwargs)


def test_missing_sdk_or_device_is_named() -> None:
    with pytest.raises(BackendError, match="torch_mlu"):
        TorchRunner(TwoLevels(), device="mlu").activate()
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA device"):
            TorchRunner(TwoLevels(), device="cuda").activate()


def test_inactive_runner_refuses_to_infer() -> None:
    with pytest.raises(BackendError, match="not active"):
        TorchRunner(TwoLevels()).infer(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("mode", "extra", "runs_type"),
    [
        ("fused", {}, "RecursiveScriptModule"),
        ("offline", {"offline_format": "torchscript"}, "RecursiveScriptModule"),
        ("offline", {"offline_format": "export"}, "GraphModule"),
    ],
)
def test_modes_match_eager_and_leave_evidence(tmp_path, mode, extra, runs_type) -> None:
    torch.manual_seed(0)
    model = TwoLevels().eval()
    x = torch.rand(3, 3, 32, 32)  # another batch size than the traced/exported example
    with TorchRunner(model) as eager:
        expected = eager.infer(x)
    with TorchRunner(model, mode=mode, work_dir=tmp_path, img_size=32, **extra) as runner:
        got = runner.infer(x)
        evidence = runner.evidence()
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(expected, got))
    assert evidence["backend.runs_type"] == runs_type
    if mode == "offline":
        files = list(tmp_path.iterdir())
        assert len(files) == 1 and files[0].stat().st_size == evidence["backend.artifact_bytes"] > 0
        # Loaded back from the file, not the module in memory: a second runner reuses the file.
        with TorchRunner(model, mode=mode, work_dir=tmp_path, img_size=32, **extra) as again:
            assert again.artifact == runner.artifact


def test_half_precision_outputs_are_bfloat16_on_cpu(tmp_path) -> None:
    with TorchRunner(TwoLevels(), mode="fused", half=True, img_size=32) as runner:
        runner.infer(torch.rand(1, 3, 32, 32))
        assert runner.evidence()["backend.output_dtype"] == "bfloat16"
