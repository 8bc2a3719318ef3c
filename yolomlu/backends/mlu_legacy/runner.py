"""The Cambricon MLU backend for the legacy SDK (torch 1.3 + torch_mlu ``ct`` API, MLU270/MLU220).

NOT RUN ON MLU HARDWARE. This path has been exercised only against a stand-in of torch_mlu
(``tests/backends/mlu_legacy/standin``) that records the calls (the tests check them, their order and
arguments against Cambricon's samples) and emulates the device's numerics with yolomlu's own
quantization emulation and a CPU reference of ``yolov5_detection_output``. Accuracy measured through it
is a *prediction* (:meth:`MluLegacyRunner.accuracy_prediction`, tag ``accuracy=predicted_standin``); its
times are this machine's CPU times. The first run on a real card is still to come.

The SDK's Python (3.6/3.7, torch 1.3) cannot share this workbench's environment, so the runner drives a
self-contained device worker (``worker.py``) in the SDK's environment through a configured command
(``backend.python``: the SDK's interpreter, or e.g. ``docker exec -i <container> python``). They exchange
files in a job folder under ``work_dir/mlu_legacy/``: the model as architecture rows + ``.npz`` weights
(``model_export``), ``job.json``, calibration batches or a quant-params file, the TFU ``config.ini``,
then one ``.npy`` per input batch and one ``.npz``/``.npy`` per output; the worker's log is
``worker.log``. The worker stays up between batches (compiling a fused graph takes minutes), so requests
and replies also pass as single JSON lines over its stdin/stdout.

| mode    | the worker does (after quantizing)                                   | the study's name |
|---------|-----------------------------------------------------------------------|------------------|
| eager   | ``model.to(ct.mlu_device())``, op by op                                | layer by layer   |
| fused   | ``ct.set_core_number/…version/…input_format`` + ``torch.jit.trace``   | fusion mode      |
| offline | fused, with ``ct.save_as_cambricon(name)`` … ``('')``: a ``.cambricon`` | offline model    |

In offline mode the ``.cambricon`` file (+ ``_twins`` description) is written and returned as
:attr:`artifact`; the batches are still run through the traced graph in the worker (running the file
itself needs the CNRT runtime, a C++ program).

Device time and profiles: what the SDK prints with its switches on (``backend.env``:
``CNRT_GET_HARDWARE_TIME``, ``CNML_PRINT_INFO``; ``GLOG_logtostderr=1`` for glog lines) lands in
``worker.log``. After each batch the runner reads that batch's share of the log: a hardware time
there becomes :attr:`last_device_seconds` (the job's ``device_ms``/``device_fps``), a layer-type
summary or per-layer times become :meth:`profile`'s table (``profile.py`` lists the documented
formats). Where the log holds none (the stand-in never writes any), no device time is logged and a
profile asked for (``bench.profile=true``) fails the job's timing stage saying so: the MLU presets keep
``bench.profile: false``.

The call sequences follow Cambricon's public samples: CambriconECO/Pytorch_Yolov5_Inference
(``quantize_online/quant.py``: ``quantize_dynamic_mlu(..., gen_quant=True)`` + a CPU forward + saving the
state_dict; ``quantize_online/detect.py``: ``quantize_dynamic_mlu(net)`` + ``load_state_dict(strict=False)``
+ ``to(ct.mlu_device())``, the jit branch and ``save_as_cambricon``; ``quantize_online/yolo.py``: sigmoid +
``yolov5_detection_output``), and catch's ``examples/offline/genoff/genoff.py`` (as copied in
CambriconKnight/dev-env-ubuntu: ``set_core_number``, ``set_core_version``, ``save_as_cambricon``,
``set_input_format``, trace with a batch-1 input, one forward at the offline batch size, half precision
as half *inputs* to a float model).

Outputs: the raw per-level Detect maps, or with ``detection_output`` a one-element list holding the
device's decode+NMS buffer, float32 [B, 64 + 7 * max_box_num]; :attr:`detection_buffer` then says how
to decode it (``yolomlu.postprocess.mlu_buffer``).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from yolomlu.backends.base import BackendError, Runner
from yolomlu.backends.mlu_legacy.config_ini import render_config_ini
from yolomlu.backends.mlu_legacy.model_export import export_model, save_export
from yolomlu.backends.mlu_legacy.profile import device_seconds, layer_profile, read_log
from yolomlu.postprocess.mlu_buffer import COORDS, DetectionBufferFormat
from yolomlu.processes import preexec_die_with_parent
from yolomlu.quant.emulate import resolve_layers
from yolomlu.quant.qconfig import QuantSettings
from yolomlu.types import LayerProfile

__all__ = ["CORE_NUMBERS", "MODES", "MluLegacyRunner"]

MODES = ("eager", "fused", "offline")
CORE_NUMBERS = {"MLU270": 16, "MLU220": 4}  # most cores a model may use (genoff: MLU270 up to 16)
# The qconfig keys quantize_dynamic_mlu takes in its qconfig dict (dtype and mixed_layer are arguments).
QCONFIG_KEYS = ("iteration", "use_avg", "data_scale", "mean", "std", "firstconv", "per_channel")
WORKER = Path(__file__).with_name("worker.py")
MARK = "@@yolomlu-worker@@ "
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_LOG_TAIL_CHARS = 4000


class MluLegacyRunner(Runner):
    """Runs a YOLOv5 on a Cambricon MLU270/MLU220 through the legacy SDK's device worker.

    Args:
        model: the (transformed) YOLOv5; exported as rows + weights, never pickled.
        python: the command that runs Python in the SDK's environment, as a string (split like a shell
            would) or a list: ``/opt/cambricon/venv/bin/python`` or ``docker exec -i mlu python``. The job
            folder must be visible at the same path there (bind-mount ``work_dir``).
        mode: "eager" (layer by layer), "fused" or "offline" (see the module docstring).
        core_version: "MLU270" or "MLU220" (``ct.set_core_version``; fused/offline).
        core_number: cores the fused/offline model uses (``ct.set_core_number``): 1..16 (MLU270), 1..4 (MLU220).
        half: feed float16 inputs (the samples' ``half_input``); the model stays float, the device picks fp16.
        qconfig: for the Python API only, a ``quant`` mapping, the same as calling
            ``set_quantization(QuantSettings.from_mapping(qconfig), [])``; a job hands its typed settings
            over through :meth:`set_quantization` (the config holds no copy of them). See there.
        quant_params: a quant-params file (Cambricon's state_dict layout, ``.pth``/``.pt`` read with
            weights_only, or ``.npz``) to load instead of calibrating on the device side.
        detection_output: decode+NMS on the device (``yolov5_detection_output``); ``infer`` then returns
            ``[buffer]``. Needs 3 levels of 3 anchors with integer pixel sizes and square img_size inputs.
        coords: how the buffer's x/y are to be read: "pixels" or "normalized" (a property of the SDK build).
        conf_thres, iou_thres, max_box_num: the op's thresholds and boxes per image.
        tfu: config.ini sections (``{"Tfu": {"enable": True, ...}, "OpOpt": {...}}``); non-empty -> the file is
            written into the job folder and the worker runs with ``CNML_OPTIMIZE=USE_CONFIG:<file>``.
        batch_size: the batch the fused graph is compiled for / the offline model is generated at.
        input_format: channel order for ``ct.set_input_format`` (0 rgba, 1 argb, 2 bgra, 3 abgr).
        device_id: ``ct.set_device(id)`` before the device is used (None: the SDK's default card).
        env: extra environment for the worker (e.g. ``CNRT_GET_HARDWARE_TIME: "on"``, ``MLU_VISIBLE_DEVICES``),
            applied inside the worker before torch_mlu is imported (so it also crosses ``docker exec``).
        work_dir: where job folders go; img_size: network input side; timeout_s: longest wait for the
            worker (start-up with quantization and compilation, or one batch).
        keep_exchange: keep every input/output file in the job folder (default: removed once read).
    """

    name = "mlu_legacy"
    # The SDK quantizes the float model itself (quantize_dynamic_mlu): the job hands over the float model
    # and, for gen_quant, calibration batches (set_calibration), not an emulated int8 model.
    quantizes_itself: ClassVar[bool] = True
    quant_schemes = ("mlu270",)

    def __init__(
        self,
        model: nn.Module,
        python: str | Sequence[str] | None = None,
        mode: str = "eager",
        core_version: str = "MLU270",
        core_number: int = 1,
        half: bool = False,
        qconfig: Mapping[str, Any] | None = None,
        quant_params: str | None = None,
        detection_output: bool = False,
        coords: str = "pixels",
        conf_thres: float = 0.25,
        iou_thres: float = 0.45,
        max_box_num: int = 1024,
        tfu: Mapping[str, Mapping[str, Any]] | None = None,
        batch_size: int = 1,
        input_format: int = 0,
        device_id: int | None = None,
        env: Mapping[str, Any] | None = None,
        work_dir: str | Path | None = None,
        img_size: int = 640,
        timeout_s: float = 1800.0,
        keep_exchange: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise BackendError(f"backend.mode={mode!r} is not supported by the mlu_legacy backend; choose one of {list(MODES)}")
        if core_version not in CORE_NUMBERS:
            raise BackendError(f"backend.core_version={core_version!r} is not known; choose one of {list(CORE_NUMBERS)}")
        most = CORE_NUMBERS[core_version]
        if not isinstance(core_number, int) or not 1 <= core_number <= most:
            raise BackendError(f"backend.core_number={core_number!r} must be an integer from 1 to {most} on {core_version}")
        if coords not in COORDS:
            raise BackendError(f"backend.coords={coords!r} is not valid; choose one of {list(COORDS)}")
        for key, value in (("conf_thres", conf_thres), ("iou_thres", iou_thres)):
            if not 0.0 <= value <= 1.0:
                raise BackendError(f"backend.{key}={value!r} must lie in [0, 1]")
        for key, value in (("max_box_num", max_box_num), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise BackendError(f"backend.{key}={value!r} must be a positive integer")
        if input_format not in (0, 1, 2, 3):
            raise BackendError(f"backend.input_format={input_format!r} must be 0 (rgba), 1 (argb), 2 (bgra) or 3 (abgr)")
        if not isinstance(img_size, int) or img_size < 32 or img_size % 32:
            raise BackendError(f"img_size={img_size!r} must be a positive multiple of 32")
        if not timeout_s or timeout_s <= 0:
            raise BackendError(f"backend.timeout_s={timeout_s!r} must be positive")
        self.model = model
        self.argv = _command(python)
        self.mode = mode
        self.core_version = core_version
        self.core_number = core_number
        self.half = bool(half)
        self._quant_params_setting = quant_params
        self.quant = _checked_settings(_mapping_settings(qconfig))
        self.quant_params = _params_file(quant_params, self.quant)
        self.detection_output = bool(detection_output)
        self.conf_thres, self.iou_thres, self.max_box_num = float(conf_thres), float(iou_thres), max_box_num
        self.tfu = {str(s): dict(keys) for s, keys in (tfu or {}).items()}
        try:
            self._tfu_text = render_config_ini(self.tfu) if self.tfu else None
        except ValueError as exc:
            raise BackendError(f"backend.tfu: {exc}") from None
        self.env = _environment(env, tfu_set=bool(self.tfu))
        self.batch_size = batch_size
        self.input_format = input_format
        self.device_id = device_id
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.img_size = img_size
        self.timeout_s = float(timeout_s)
        self.keep_exchange = bool(keep_exchange)
        # How the job decodes this runner's output: None -> raw per-level maps.
        self.detection_buffer: DetectionBufferFormat | None = (
            DetectionBufferFormat(max_box_num, img_size, img_size, coords, self.conf_thres, self.iou_thres)
            if self.detection_output
            else None
        )
        self.artifact: Path | None = None  # the .cambricon file (mode=offline), once written
        # The quant-params file the worker generated (gen_quant), in Cambricon's layout as .npz: log it, and
        # give it back as backend.quant_params to skip the calibration next time.
        self.generated_quant_params: Path | None = None
        self.job_dir: Path | None = None
        self._calibration: list[torch.Tensor] | None = None
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._log_handle: Any = None
        self._ready: dict[str, Any] = {}
        self._next_id = 0
        self._times: list[tuple[float, float]] = []  # (worker seconds, runner wall seconds) per batch
        self._output_dtype: str | None = None
        self._failed = False
        self._job_quant: dict[str, Any] = {}
        self._log_offset = 0  # where the worker log's next batch share starts
        self._device_time_source: str | None = None  # which documented SDK line the device times came from

    # -- calibration -------------------------------------------------------------------------
    def set_quantization(self, settings: QuantSettings, calibration: Iterable[torch.Tensor]) -> None:
        """The job's quant settings and calibration batches, before :meth:`activate`. dtype and the MLU
        qconfig keys go to ``quantize_dynamic_mlu``; ``mixed_layer`` names/patterns are resolved to layer
        names (kept in float16); ``quant.params_file`` is used like ``quant_params``. The SDK runs
        quantized models only, so ``quant=none`` is refused at :meth:`activate`; scheme mlu370, a
        float_dtype other than float16, max_drop and fallback_topk are refused here, by name. The
        batches (each float32 [b, 3, H, W] in 0..1) feed ``gen_quant``."""
        self.quant = _checked_settings(settings)
        self.quant_params = _params_file(self._quant_params_setting, self.quant)
        batches = list(calibration)
        if batches:
            self.set_calibration(batches)

    def quantized_layers(self) -> int | None:
        return self._ready.get("quant", {}).get("layers")

    def set_calibration(self, batches: Iterable[torch.Tensor]) -> None:
        """Images for device-side calibration (``gen_quant``), each float32 [b, 3, H, W] in 0..1 on the CPU.

        Call before :meth:`activate` when ``qconfig`` asks for quantization and no ``quant_params`` file is
        given. The SDK's ``iteration`` decides how many of these forward calls its observers count.
        """
        kept = []
        for i, x in enumerate(batches):
            if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"calibration batch {i} must be a tensor [b, 3, H, W], got {getattr(x, 'shape', type(x))}")
            kept.append(x.detach().to("cpu", torch.float32).contiguous())
        if not kept:
            raise ValueError("set_calibration needs at least one batch")
        self._calibration = kept

    # -- lifecycle ---------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        if self.argv is None:
            raise BackendError(
                "backend.python is not set: give the command that runs Python in the Cambricon SDK's environment, "
                "e.g. backend.python=/opt/cambricon/venv/bin/python or backend.python='docker exec -i mlu python'"
            )
        if shutil.which(self.argv[0]) is None:
            raise BackendError(
                f"backend.python: command {self.argv[0]!r} not found (from {shlex.join(self.argv)!r}); "
                "it must run Python in the Cambricon SDK's environment"
            )
        if self.work_dir is None:
            raise BackendError("the mlu_legacy backend needs a work_dir for its job folder")
        quant, staged = self._quant_for_job()
        self._job_quant = quant
        doc, _ = _export(self.model)
        if self.detection_output:
            detection = self._detection_settings(doc)
        else:
            detection = None
        if self.quant.qconfig.firstconv:
            _check_firstconv(doc)

        # Absolute: the worker runs inside the job folder, where a relative path would mean another place.
        folder = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.job_dir = (self.work_dir / "mlu_legacy" / folder).resolve()
        self.job_dir.mkdir(parents=True)
        (self.job_dir / "requests").mkdir()
        self._log_offset, self._device_time_source = 0, None
        shutil.copyfile(WORKER, self.job_dir / "worker.py")
        save_export(self.model, self.job_dir)
        if staged is not None:
            np.savez(self.job_dir / quant["params_file"], **staged)
        elif self._calibration is not None:
            np.savez(self.job_dir / "calibration.npz", **{f"batch_{i:05d}": x.numpy() for i, x in enumerate(self._calibration)})
        if self._tfu_text is not None:
            (self.job_dir / "config.ini").write_text(self._tfu_text, encoding="utf-8")
        job = {
            "format": 1,
            "mode": self.mode,
            "core_version": self.core_version,
            "core_number": self.core_number,
            "input_format": self.input_format,
            "device_id": self.device_id,
            "batch_size": self.batch_size,
            "img_size": [self.img_size, self.img_size],
            "half": self.half,
            "model_rows": "model_rows.json",
            "model_weights": "model_weights.npz",
            "quant": quant,
            "calibration": "calibration.npz" if (self.job_dir / "calibration.npz").exists() else None,
            "detection_output": detection,
            "tfu_config": "config.ini" if self._tfu_text is not None else None,
            "env": self.env,
            "offline_name": f"offline/{self._offline_stem()}" if self.mode == "offline" else None,
        }
        (self.job_dir / "job.json").write_text(json.dumps(job, indent=1), encoding="utf-8")
        self._failed = False
        self._start()
        try:
            self._ready = self._await("ready", None, self.timeout_s, "while quantizing and compiling")
            self._check_ready()
        except BaseException:
            self._stop(graceful=False)
            raise

    def _deactivate_impl(self) -> None:
        self._stop(graceful=not self._failed)

    def _quant_for_job(self) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
        """The worker's quant settings, and the arrays of backend.quant_params (None: calibrate)."""
        if not self.quant.enabled:
            raise BackendError(
                f"quant={self.quant.name}: the legacy Cambricon SDK runs quantized models only (int8/int16 "
                "convolutions); choose quant=int8 (or int16, int8_per_channel, int8_mixed)"
            )
        qc = self.quant.qconfig
        job: dict[str, Any] = {"dtype": qc.dtype}
        for key in QCONFIG_KEYS:
            value = getattr(qc, key)
            job[key] = list(value) if isinstance(value, tuple) else value
        if qc.mixed_layer:
            try:
                names = resolve_layers(self.model, qc.mixed_layer)
            except ValueError as exc:
                raise BackendError(f"quant.mixed_layer: {exc}") from None
            job["mixed_layer"] = {name: "float16" for name in names}
        if self.quant_params is not None:
            job["params_file"] = "quant_params_in.npz"
            return job, self._read_quant_params()
        if self._calibration is None:
            raise BackendError(
                f"quant={self.quant.name} on backend=mlu_legacy needs calibration images for quantize_dynamic_mlu(gen_quant=True): "
                "the job must call runner.set_calibration(batches) before activate() (quant.calib.images images in batches of "
                "quant.calib.batch_size), or set backend.quant_params / quant.params_file to a quant-params file"
            )
        return job, None

    def _read_quant_params(self) -> dict[str, np.ndarray]:
        path = self.quant_params
        if not path.is_file():
            raise BackendError(f"backend.quant_params={str(path)!r} is not a file")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        elif path.suffix in (".pth", ".pt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, Mapping):
                raise BackendError(f"backend.quant_params={str(path)!r} holds a {type(state).__name__}, not a state_dict")
            arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in state.items()}
        else:
            raise BackendError(f"backend.quant_params={str(path)!r}: expected a .pth, .pt or .npz file")
        return arrays

    def _offline_stem(self) -> str:
        return f"yolov5_{self.core_version.lower()}_bs{self.batch_size}c{self.core_number}{'_fp16' if self.half else ''}"

    def _detection_settings(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        head = doc["rows"][-1][3][0]
        rows = head["anchors_px"]
        if len(rows) != 3 or any(len(r) != 6 for r in rows):
            raise BackendError(
                f"backend.detection_output=true: yolov5_detection_output takes 3 levels of 3 anchors (18 values); "
                f"this model has {len(rows)} levels of {len(rows[0]) // 2}"
            )
        flat = [v for r in rows for v in r]
        if any(v != round(v) for v in flat):
            raise BackendError(f"backend.detection_output=true: the op takes integer pixel anchors; this model's are {flat}")
        anchors = [int(round(v)) for v in flat]
        return {
            "anchors": anchors,
            "num_anchors": len(anchors),  # 18, as the public sample passes len(anchors_list)
            "img_h": self.img_size,
            "img_w": self.img_size,
            "conf_thres": self.conf_thres,
            "iou_thres": self.iou_thres,
            "max_box_num": self.max_box_num,
        }

    # -- the worker process ------------------------------------------------------------------
    def _start(self) -> None:
        log_path = self.job_dir / "worker.log"
        self._log_handle = open(log_path, "ab", buffering=0)
        env = {**os.environ, **self.env}
        cmd = [*self.argv, str(self.job_dir / "worker.py"), str(self.job_dir)]
        self._log_handle.write(f"[yolomlu runner] {shlex.join(cmd)}\n".encode())
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_handle, cwd=self.job_dir, env=env,
                preexec_fn=preexec_die_with_parent,  # a killed job takes its worker with it
            )
        except OSError as exc:
            self._log_handle.close()
            raise BackendError(f"backend.python: could not start {shlex.join(cmd)!r}: {exc}") from exc
        self._events = queue.Queue()
        threading.Thread(target=self._read_replies, args=(self._proc.stdout, self._events), daemon=True).start()

    def _read_replies(self, stream: Any, events: queue.Queue) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            at = line.find(MARK)
            try:
                if at < 0:
                    raise ValueError("not a reply")
                events.put(json.loads(line[at + len(MARK) :]))
            except ValueError:  # stray output (or a broken reply): keep it with the log
                try:
                    self._log_handle.write(raw)
                except (AttributeError, ValueError, OSError):
                    pass  # the log was closed: the runner is shutting down
        events.put(None)  # EOF: the worker has gone

    def _send(self, request: Mapping[str, Any]) -> None:
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reader sees EOF and _await reports the exit with the log's tail

    def _await(self, event: str, request_id: int | None, timeout: float, doing: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._events.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                self._failed = True
                raise BackendError(
                    f"the MLU worker gave no answer within backend.timeout_s={timeout:g} s {doing}; "
                    f"it is being stopped.\n{self._log_tail()}"
                ) from None
            if message is None:
                self._failed = True
                try:
                    code: Any = self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    code = "unknown: it closed its output but is still running"
                raise BackendError(f"the MLU worker exited (code {code}) {doing}.\n{self._log_tail()}")
            if message.get("event") == "error":
                self._failed = True
                raise BackendError(f"the MLU worker failed {doing}: {message.get('message')}\n{self._log_tail()}")
            if message.get("event") == event and (request_id is None or message.get("id") == request_id):
                return message

    def _log_tail(self) -> str:
        path = self.job_dir / "worker.log" if self.job_dir else None
        if path is None or not path.is_file():
            return "(no worker log)"
        text = path.read_text(encoding="utf-8", errors="replace")
        return f"--- last lines of {path} ---\n{text[-_LOG_TAIL_CHARS:]}"

    def _stop(self, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if graceful and proc.poll() is None:
                self._proc = proc
                self._send({"cmd": "exit"})
                try:
                    self._await("bye", None, 60.0, "while shutting down")
                except BackendError:
                    pass
                self._proc = None
            try:
                proc.wait(timeout=30 if graceful else 0.1)
            except subprocess.TimeoutExpired:
                proc.kill()  # the process this runner started (a docker exec client stops only itself)
                proc.wait(timeout=30)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _check_ready(self) -> None:
        q = self._ready.get("quant", {})
        if q.get("source") == "generated":
            self.generated_quant_params = self.job_dir / q["file"]
        if q.get("unexpected_keys"):
            keys = q["unexpected_keys"]
            raise BackendError(
                f"the quant-params file does not fit this model: {len(keys)} of its keys match no layer "
                f"(e.g. {keys[:5]}); it was made for another model or transform variant"
            )
        if self.mode == "offline":
            files = [self.job_dir / f for f in self._ready.get("offline_files", [])]
            models = [f for f in files if f.suffix == ".cambricon"]
            if not models:
                raise BackendError(
                    f"ct.save_as_cambricon wrote no .cambricon file into {self.job_dir / 'offline'} "
                    f"(found {[f.name for f in files]})\n{self._log_tail()}"
                )
            self.artifact = models[0]

    # -- inference ---------------------------------------------------------------------------
    def timed_infer(self, batch: torch.Tensor) -> tuple[list[torch.Tensor], float]:
        """Run one batch in the worker; the seconds are the worker's own device-synchronised time (copy to
        the device, forward, outputs back on the host), without the file exchange around it."""
        if not self.is_active:
            raise BackendError(f"{self.name} runner is not active: use it as a context manager")
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a batch [B, 3, H, W], got {tuple(batch.shape)}")
        if self.detection_output and tuple(batch.shape[2:]) != (self.img_size, self.img_size):
            raise BackendError(
                f"backend.detection_output=true compiles img_h=img_w={self.img_size} into the op; got a "
                f"{tuple(batch.shape[2:])} batch"
            )
        start = time.perf_counter()
        outputs, seconds = self._exchange(batch)
        self._times.append((seconds, time.perf_counter() - start))
        return outputs, seconds

    def _infer_impl(self, batch: torch.Tensor) -> list[torch.Tensor]:
        return self._exchange(batch)[0]

    def _exchange(self, batch: torch.Tensor) -> tuple[list[torch.Tensor], float]:
        outputs, seconds, _ = self._exchange_logged(batch)
        return outputs, seconds

    def _exchange_logged(self, batch: torch.Tensor) -> tuple[list[torch.Tensor], float, str]:
        """One batch through the worker: outputs, the worker's seconds, and what the SDK wrote to the log
        meanwhile (its hardware time becomes :attr:`last_device_seconds`, None when it wrote none)."""
        _, self._log_offset = read_log(self.job_dir / "worker.log", self._log_offset)  # skip what came before
        self._next_id += 1
        rid = self._next_id
        name = f"requests/in_{rid:06d}.npy"
        np.save(self.job_dir / name, batch.detach().to("cpu", torch.float32).contiguous().numpy())
        self._send({"cmd": "infer", "id": rid, "input": name})
        reply = self._await("result", rid, self.timeout_s, f"on batch {rid}")
        path = self.job_dir / reply["output"]
        if reply["kind"] == "buffer":
            buffer = torch.from_numpy(np.load(path, allow_pickle=False))
            block = self.detection_buffer.block_size
            if buffer.numel() != batch.shape[0] * block:
                raise BackendError(
                    f"yolov5_detection_output returned {tuple(buffer.shape)} for a batch of {batch.shape[0]}: "
                    f"not {batch.shape[0]} block(s) of 64 + 7 * max_box_num = {block} values"
                )
            outputs = [buffer.reshape(batch.shape[0], block)]
        else:
            with np.load(path, allow_pickle=False) as npz:
                outputs = [torch.from_numpy(npz[f"level_{i}"]) for i in range(len(npz.files))]
        if not self.keep_exchange:
            (self.job_dir / name).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        self._output_dtype = reply["dtype"].removeprefix("torch.")
        text, self._log_offset = read_log(self.job_dir / "worker.log", self._log_offset)
        found = device_seconds(text)
        self.last_device_seconds = found[0] if found else None
        if found:
            self._device_time_source = found[1]
        return outputs, float(reply["seconds"]), text

    def accuracy_caveat(self) -> str | None:
        if self._ready.get("standin") and not self._ready.get("standin_emulates"):
            return (
                f"torch_mlu here is a test stand-in ({self._ready.get('torch_mlu_file')}) that says it emulates nothing, "
                "so these outputs predict no MLU accuracy"
            )
        return None

    def accuracy_prediction(self) -> tuple[str, str] | None:
        """("predicted_standin", why) when torch_mlu is a stand-in that emulates the device: the job's mAP
        is then a prediction of the MLU's, never a measurement on one."""
        emulates = self._ready.get("standin_emulates")
        if self._ready.get("standin") and emulates:
            return (
                "predicted_standin",
                f"computed by a stand-in of torch_mlu ({self._ready.get('torch_mlu_file')}), not on an MLU: {emulates}",
            )
        return None

    def timing_twin(self) -> None:
        """None: batches already run in the device worker, a process of its own that does nothing but
        serve them; this process only exchanges files, and the worker's own clock is what counts."""
        return None

    def threads_in_use(self) -> int:
        return 1  # the host side waits for the worker

    def helper_pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None else []

    def _profile_impl(self, batch: torch.Tensor, passes: int) -> LayerProfile:
        """The layer-type table the SDK printed to the worker log during ``passes`` forwards of ``batch``."""
        text = "".join(self._exchange_logged(batch)[2] for _ in range(passes))
        profile = layer_profile(text, passes)
        if profile is None:
            log = self.job_dir / "worker.log"
            if self._ready.get("standin"):
                why = "torch_mlu here is a stand-in, which writes no profile (its times are CPU times)"
            else:
                why = (
                    "switch the SDK's profiling on through backend.env (CNML_PRINT_INFO: on, CNRT_GET_HARDWARE_TIME: on; "
                    "GLOG_logtostderr: 1 for glog lines) and check what it prints there"
                )
            raise BackendError(
                f"the mlu_legacy backend has no per-layer profile: the SDK wrote neither a layer-type summary nor per-layer "
                f"hardware times to {log} during {passes} forward(s): {why}; or set bench.profile=false"
            )
        return profile

    def evidence(self) -> dict[str, Any]:
        graph = {
            "eager": "layer by layer on ct.mlu_device()",
            "fused": "torch.jit.trace on ct.mlu_device() (CNML fusion)",
            "offline": "offline .cambricon written via ct.save_as_cambricon; batches run through the traced graph",
        }[self.mode]
        q = self._ready.get("quant", {})
        facts: dict[str, Any] = {
            "backend.verification": (
                "code not yet run on MLU hardware; tested against a stand-in of torch_mlu that records the calls and "
                "emulates the device's numerics"
            ),
            "backend.sdk_command": shlex.join(self.argv) if self.argv else None,
            "backend.graph": graph,
            "backend.core_version": self.core_version,
            "backend.core_number": self.core_number,
            "backend.compiled_batch_size": self.batch_size if self.mode != "eager" else None,
            "backend.input_dtype": "float16" if self.half else "float32",
            "backend.quant": self.quant.name,
            "backend.quant_dtype": self.quant.qconfig.dtype if self.quant.enabled else None,
            "backend.quant_mixed_layers": len(self._job_quant.get("mixed_layer", {})) or None,
            "backend.quant_source": q.get("source"),
            "backend.quant_layers": q.get("layers"),
            "backend.quant_calibration_batches": q.get("calibration_batches"),
            "backend.quant_missing_keys": len(q.get("missing_keys", [])) if q else None,
            "backend.quant_params_file": str(self.quant_params or self.generated_quant_params or "") or None,
            "backend.output": (
                f"detection buffer (yolov5_detection_output on the device: conf {self.conf_thres}, iou {self.iou_thres}, "
                f"max_box_num {self.max_box_num}, coords {self.detection_buffer.coords})"
                if self.detection_buffer
                else "raw per-level Detect maps"
            ),
            "backend.nms_on_device": str(self.detection_output).lower(),
            "backend.tfu_config": ",".join(self.tfu) if self.tfu else "none (CNML defaults)",
            "backend.cnml_optimize": self._ready.get("cnml_optimize"),
            "backend.timing": "worker: copy to device + forward + copy to host (perf_counter in the SDK process)",
            "timing.device": self._timing_device(),
            "backend.device_time": self._device_time_source
            or "none: the SDK wrote no hardware time to worker.log (backend.env CNRT_GET_HARDWARE_TIME: on prints it)",
            "backend.compile_s": self._ready.get("compile_s"),
            "backend.torch_mlu_file": self._ready.get("torch_mlu_file"),
            "backend.sdk_standin": self._standin_evidence(),
            "backend.job_dir": str(self.job_dir) if self.job_dir else None,
        }
        for key, value in self._ready.get("versions", {}).items():
            facts[f"backend.sdk_{key}"] = value
        if self._output_dtype is not None:
            facts["backend.output_dtype"] = self._output_dtype
        if self._times:
            overhead = [wall - worker for worker, wall in self._times]
            facts["backend.exchange_overhead_ms"] = round(1000 * float(np.mean(overhead)), 3)
        if self.artifact is not None:
            facts["backend.artifact"] = self.artifact.name
            facts["backend.artifact_bytes"] = self.artifact.stat().st_size
            twins = self.artifact.with_name(self.artifact.name + "_twins")
            if twins.exists():
                facts["backend.artifact_twins"] = str(twins)
        return {k: v for k, v in facts.items() if v is not None}

    def _timing_device(self) -> str:
        """What the times were taken on: the card, or this machine's CPU under a stand-in."""
        if self._ready.get("standin"):
            return "standin (CPU): the torch_mlu stand-in ran on this machine's CPU; not MLU time"
        return f"{self.core_version} through the legacy SDK"

    def _standin_evidence(self) -> str | None:
        if not self._ready.get("standin"):
            return None
        emulates = self._ready.get("standin_emulates")
        if emulates:
            return f"true (an emulating test double of torch_mlu, not the SDK: {emulates})"
        return "true (a recording test double of torch_mlu, not the SDK)"


# -- settings helpers ----------------------------------------------------------------------------
def _command(python: str | Sequence[str] | None) -> list[str] | None:
    if python is None:
        return None
    argv = shlex.split(python) if isinstance(python, str) else [str(a) for a in python]
    if not argv:
        raise BackendError("backend.python is empty: give the command that runs Python in the Cambricon SDK's environment")
    return argv


def _mapping_settings(qconfig: Mapping[str, Any] | None) -> QuantSettings:
    if qconfig is None:
        return QuantSettings()
    try:
        return QuantSettings.from_mapping(qconfig)
    except ValueError as exc:
        raise BackendError(f"backend=mlu_legacy: {exc}") from None


def _checked_settings(settings: QuantSettings) -> QuantSettings:
    """``settings`` if this SDK honours them; else a BackendError naming the key."""
    if settings.enabled and settings.qconfig.scheme != "mlu270":
        raise BackendError(
            f"quant.scheme={settings.qconfig.scheme!r}: the legacy SDK (MLU270/MLU220) quantizes with step absmax/qmax "
            "(scheme mlu270); the power-of-two step belongs to the MLU370 stack"
        )
    if settings.enabled and settings.target_float_dtype != "float16":
        raise BackendError(
            f"quant.float_dtype={settings.float_dtype!r}: the legacy SDK runs what an int8 model keeps in floating point "
            "in float16 and takes no setting to change that; leave quant.float_dtype=null"
        )
    if settings.enabled and settings.max_drop is not None:
        raise BackendError(
            f"quant.max_drop={settings.max_drop} is not searched on backend=mlu_legacy (each step would quantize and "
            "compile on the card): search it on the emulation (backend=torch) and pass its quant.max_drop.mixed_layer "
            "list as quant.mixed_layer"
        )
    if settings.enabled and settings.fallback_topk:
        raise BackendError(
            f"quant.fallback_topk={settings.fallback_topk} is not applied by backend=mlu_legacy: name the layers to keep "
            "in float in quant.mixed_layer instead"
        )
    return settings


def _params_file(quant_params: str | None, settings: QuantSettings) -> Path | None:
    chosen = {str(p) for p in (quant_params, settings.params_file) if p}
    if len(chosen) > 1:
        raise BackendError(
            f"backend.quant_params={quant_params!r} and quant.params_file={settings.params_file!r} name different files; give one"
        )
    return Path(chosen.pop()).expanduser() if chosen else None


def _environment(env: Mapping[str, Any] | None, tfu_set: bool) -> dict[str, str]:
    out = {}
    for key, value in (env or {}).items():
        if not _ENV_NAME.match(str(key)):
            raise BackendError(f"backend.env: {key!r} is not an environment variable name (A-Z, 0-9, _)")
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise BackendError(f"backend.env.{key}={value!r}: values must be strings or numbers")
        out[str(key)] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    if tfu_set and "CNML_OPTIMIZE" in out:
        raise BackendError("backend.env.CNML_OPTIMIZE and backend.tfu are both set: the tfu sections already set CNML_OPTIMIZE")
    return out


def _export(model: nn.Module) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        return export_model(model)
    except ValueError as exc:
        raise BackendError(f"backend=mlu_legacy cannot send this model to the device worker: {exc}") from None


def _check_firstconv(doc: Mapping[str, Any]) -> None:
    name, args = doc["rows"][0][2], doc["rows"][0][3][0]
    c1 = (args["conv"] if name == "Focus" else args)["c1"]
    if c1 not in (1, 3, 4):
        raise BackendError(
            f"quant.firstconv=true folds the input normalisation into the first convolution, which needs 1, 3 or 4 "
            f"input channels; this model's first conv (in its {name} stem) reads {c1}: with a Focus stem use "
            "transforms.focus_to_conv=true, or set quant.firstconv=false"
        )
