# -*- coding: utf-8 -*-
"""yolomlu device worker for Cambricon's legacy PyTorch SDK (torch 1.3 + torch_mlu, MLU270/MLU220).

Self-contained on purpose: it runs in the SDK's own environment (Python 3.6/3.7), so it is written in
Python 3.6 syntax and imports only the standard library, numpy, torch and torch_mlu. Nothing of yolomlu
is importable there. The workbench (``yolomlu.backends.mlu_legacy.runner``) copies this file into a job
folder and starts it as ``<backend.python> worker.py <job folder>``.

What it does, in the order of Cambricon's public samples (see the runner's docstring for the list):

1. read ``job.json``; put the job's environment (``CNML_OPTIMIZE=USE_CONFIG:<config.ini>`` ...) in place
   *before* torch_mlu is imported; ``torch.set_grad_enabled(False)``;
2. rebuild the YOLOv5 from ``model_rows.json`` with the compact blocks below (attribute names mirror
   yolomlu's, so ``model_weights.npz`` loads with strict=True);
3. quantize: either ``mlu_quantize.quantize_dynamic_mlu(model, qconfig, dtype=..., gen_quant=True)``
   plus the calibration forwards on the CPU (the quantized state_dict is written to
   ``quant_params.npz``), or a given quant-params file; then, as for deployment, a fresh model,
   ``quantize_dynamic_mlu(model)`` and ``load_state_dict(quant_params, strict=False)``;
4. mode ``eager`` (layer by layer): ``model.to(ct.mlu_device())``; ``fused``: ``ct.set_core_number``,
   ``ct.set_core_version``, ``ct.set_input_format``, ``torch.jit.trace`` on the device, one forward at
   the job's batch size; ``offline``: the same with ``ct.save_as_cambricon(name)`` before tracing and
   ``ct.save_as_cambricon('')`` after that forward, which leaves ``offline/<name>.cambricon`` (+ twins);
5. serve requests: one JSON line per request on stdin (``{"cmd": "infer", "id": 1, "input": "..."}``,
   ``{"cmd": "exit"}``); inputs and outputs are ``.npy``/``.npz`` files in the job folder. Replies go out
   as single lines starting with ``@@yolomlu-worker@@`` on the *original* stdout; everything else the
   SDK prints (fd 1 and fd 2) goes to the log the runner keeps.

With ``detection_output`` the Detect head applies the sigmoid and calls the on-device decode+NMS op
``torch.ops.torch_mlu.yolov5_detection_output`` (as in the study); otherwise it returns the raw per-level
maps. Per-batch times are measured here: from the copy to the device to the outputs back on the host.
"""

import json
import os
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn as nn

MARK = "@@yolomlu-worker@@ "
QCONFIG_KEYS = ("iteration", "use_avg", "data_scale", "mean", "std", "firstconv", "per_channel")


# -- blocks (mirror yolomlu.model: same attribute names, so the same state_dict keys load) -------
class SiLU(nn.Module):
    # torch 1.3 has no nn.SiLU; x * sigmoid(x) is what the study registered.
    def forward(self, x):
        return x * torch.sigmoid(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


def make_act(spec):
    name = spec["name"]
    if name == "silu":
        return SiLU()
    if name == "identity":
        return Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(spec["negative_slope"])
    raise ValueError("unknown activation %r" % (name,))


class Conv(nn.Module):
    def __init__(self, a):
        super(Conv, self).__init__()
        self.conv = nn.Conv2d(a["c1"], a["c2"], tuple(a["k"]), tuple(a["s"]), tuple(a["p"]), groups=a["g"], bias=a["bias"])
        self.has_bn = bool(a["bn"])
        if self.has_bn:
            self.bn = nn.BatchNorm2d(a["c2"], eps=a["bn_eps"])
        self.act = make_act(a["act"])

    def forward(self, x):
        x = self.conv(x)
        if self.has_bn:
            x = self.bn(x)
        return self.act(x)


class Focus(nn.Module):
    def __init__(self, a):
        super(Focus, self).__init__()
        self.conv = Conv(a["conv"])

    def forward(self, x):
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class Bottleneck(nn.Module):
    def __init__(self, a):
        super(Bottleneck, self).__init__()
        self.cv1 = Conv(a["cv1"])
        self.cv2 = Conv(a["cv2"])
        self.add = bool(a["add"])

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    def __init__(self, a):
        super(C3, self).__init__()
        self.cv1 = Conv(a["cv1"])
        self.cv2 = Conv(a["cv2"])
        self.cv3 = Conv(a["cv3"])
        self.m = nn.Sequential(*[Bottleneck(b) for b in a["m"]])

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class SPP(nn.Module):
    def __init__(self, a):
        super(SPP, self).__init__()
        self.cv1 = Conv(a["cv1"])
        self.cv2 = Conv(a["cv2"])
        self.m = nn.ModuleList([nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2) for k in a["k"]])

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.m], 1))


class SPPF(nn.Module):
    def __init__(self, a):
        super(SPPF, self).__init__()
        self.cv1 = Conv(a["cv1"])
        self.cv2 = Conv(a["cv2"])
        self.m = nn.MaxPool2d(kernel_size=a["k"], stride=1, padding=a["k"] // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class Concat(nn.Module):
    def __init__(self, a):
        super(Concat, self).__init__()
        self.d = a["d"]

    def forward(self, xs):
        return torch.cat(xs, self.d)


class Detect(nn.Module):
    """Per-level 1x1 convs; with ``detection`` set, sigmoid + the on-device decode+NMS op."""

    def __init__(self, a):
        super(Detect, self).__init__()
        rows = a["anchors_px"]
        self.nc = a["nc"]
        self.no = self.nc + 5
        self.nl = len(rows)
        self.na = len(rows[0]) // 2
        strides = torch.tensor(a["strides"], dtype=torch.float32)
        anchors = torch.tensor(rows, dtype=torch.float32).view(self.nl, self.na, 2) / strides.view(-1, 1, 1)
        self.register_buffer("anchors", anchors)  # stride units, as yolomlu stores them
        self.m = nn.ModuleList([nn.Conv2d(c, self.na * self.no, 1) for c in a["ch"]])
        self.detection = None

    def forward(self, xs):
        outs = [conv(x) for conv, x in zip(self.m, xs)]
        if self.detection is None:
            return tuple(outs)
        d = self.detection
        ys = [y.sigmoid() for y in outs]
        return torch.ops.torch_mlu.yolov5_detection_output(
            ys[0], ys[1], ys[2], d["anchors"], self.nc, d["num_anchors"], d["img_h"], d["img_w"],
            d["conf_thres"], d["iou_thres"], d["max_box_num"])


class Upsample(nn.Upsample):
    def __init__(self, a):
        super(Upsample, self).__init__(size=a["size"], scale_factor=a["scale_factor"], mode=a["mode"])


BLOCKS = {"Conv": Conv, "Focus": Focus, "Bottleneck": Bottleneck, "C3": C3, "SPP": SPP, "SPPF": SPPF,
          "Concat": Concat, "nn.Upsample": Upsample, "Detect": Detect}


class Model(nn.Module):
    def __init__(self, layers):
        super(Model, self).__init__()
        self.model = nn.Sequential(*layers)
        save = set()
        for layer in layers:
            for j in ([layer.f] if isinstance(layer.f, int) else layer.f):
                if j != -1:
                    save.add(j)
        self.save = sorted(save)

    def forward(self, x):
        kept = {}
        for layer in self.model:
            f = layer.f
            if f != -1:
                x = kept[f] if isinstance(f, int) else [x if j == -1 else kept[j] for j in f]
            x = layer(x)
            if layer.i in self.save:
                kept[layer.i] = x
        return x


def build_model(doc):
    layers = []
    for i, row in enumerate(doc["rows"]):
        f, n, name, args = row
        if name not in BLOCKS:
            raise ValueError("row %d: unknown module %r" % (i, name))
        modules = [BLOCKS[name](a) for a in args]
        layer = modules[0] if n == 1 else nn.Sequential(*modules)
        layer.i, layer.f = i, f
        layers.append(layer)
    return Model(layers)


# -- plumbing ------------------------------------------------------------------------------------
class Channel(object):
    """Protocol lines on the original stdout; fd 1 then points at the log, so SDK prints stay out."""

    def __init__(self):
        sys.stdout.flush()
        self.out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)

    def send(self, event, **fields):
        fields["event"] = event
        self.out.write(MARK + json.dumps(fields) + "\n")
        self.out.flush()


def load_npz(path):
    with np.load(path, allow_pickle=False) as npz:
        return dict((k, torch.from_numpy(np.array(npz[k]))) for k in npz.files)


def quant_layers(state):
    return len([k for k in state if k.endswith("quantized_mode")])


def flush_c_stdio():
    """Flush the C library's stdout buffer. The SDK prints its timings and profiles with printf; with fd 1
    pointing at a file, libc holds them back until its buffer fills, and the runner reads the log for each
    batch once the reply has come. Best effort: without libc nothing is lost but the timely read."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def log(message):
    sys.stderr.write("[yolomlu worker] %s\n" % message)
    sys.stderr.flush()


class Worker(object):
    def __init__(self, job, ct, mlu_quantize):
        self.job = job
        self.ct = ct
        self.mlu_quantize = mlu_quantize
        self.input_scale = 255.0 if job["quant"].get("firstconv") else 1.0
        self.half = bool(job["half"])
        self.module = None
        self.timings = []

    # model + quantization
    def float_model(self):
        with open(self.job["model_rows"]) as fh:
            doc = json.load(fh)
        model = build_model(doc)
        model.load_state_dict(load_npz(self.job["model_weights"]), strict=True)
        return model.eval()

    def calibration_batches(self):
        with np.load(self.job["calibration"], allow_pickle=False) as npz:
            names = sorted(npz.files)
            return [torch.from_numpy(np.array(npz[k])) for k in names]

    def quantized_state(self):
        q = self.job["quant"]
        if q.get("params_file"):
            state = load_npz(q["params_file"])
            return state, {"source": "file", "file": q["params_file"], "layers": quant_layers(state)}
        qconfig = dict((k, q[k]) for k in QCONFIG_KEYS if k in q)
        kwargs = {"dtype": q["dtype"], "gen_quant": True}
        if q.get("mixed_layer"):
            kwargs["mixed_layer"] = q["mixed_layer"]
        # CambriconECO/Pytorch_Yolov5_Inference quantize_online/quant.py: quantize, forward, save.
        net = self.mlu_quantize.quantize_dynamic_mlu(self.float_model(), qconfig, **kwargs)
        net = net.eval().float()
        batches = self.calibration_batches()
        for x in batches:
            net(x.float() * self.input_scale)
        state = net.state_dict()
        np.savez("quant_params.npz", **dict((k, v.detach().cpu().numpy()) for k, v in state.items()))
        return state, {"source": "generated", "file": "quant_params.npz", "calibration_batches": len(batches),
                       "layers": quant_layers(state)}

    def deploy_model(self, state):
        # quantize_online/detect.py: quantize_dynamic_mlu(model), load_state_dict(strict=False). Layers
        # kept in float at calibration are named again here (inferred: the samples use no mixed_layer).
        mixed = self.job["quant"].get("mixed_layer")
        if mixed:
            net = self.mlu_quantize.quantize_dynamic_mlu(self.float_model(), mixed_layer=mixed)
        else:
            net = self.mlu_quantize.quantize_dynamic_mlu(self.float_model())
        result = net.load_state_dict(state, strict=False)
        missing = list(getattr(result, "missing_keys", []))
        unexpected = list(getattr(result, "unexpected_keys", []))
        net = net.eval().float()
        det = self.job.get("detection_output")
        if det:
            net.model[-1].detection = det
        return net, missing, unexpected

    def example(self, batch):
        h, w = self.job["img_size"]
        x = torch.randn(batch, 3, h, w, dtype=torch.float) * self.input_scale
        return x.half() if self.half else x

    # device phase
    def prepare(self):
        job, ct = self.job, self.ct
        torch.manual_seed(0)
        # The legacy SDK runs quantized models only; the runner refuses a job without quantization.
        state, qinfo = self.quantized_state()
        net, missing, unexpected = self.deploy_model(state)
        qinfo["missing_keys"], qinfo["unexpected_keys"] = missing, unexpected
        if unexpected:  # before the device sees a model whose layers got no parameters
            raise ValueError("the quant-params file does not fit this model: %d of its keys match no layer (e.g. %s); "
                             "it was made for another model or transform variant" % (len(unexpected), unexpected[:5]))
        mode = job["mode"]
        info = {"quant": qinfo, "offline_files": []}
        start = time.perf_counter()
        if mode == "eager":
            if job.get("device_id") is not None:
                ct.set_device(job["device_id"])
            self.module = net.to(ct.mlu_device())
        else:
            # genoff.py's order: core number, core version, device, offline name, input format.
            ct.set_core_number(job["core_number"])
            ct.set_core_version(job["core_version"])
            if job.get("device_id") is not None:
                ct.set_device(job["device_id"])
            if mode == "offline":
                ct.save_as_cambricon(job["offline_name"])
            ct.set_input_format(job["input_format"])
            self.module = torch.jit.trace(net.to(ct.mlu_device()), self.example(1).to(ct.mlu_device()), check_trace=False)
            # The first forward at the job's batch size compiles the fused graph (and, after
            # save_as_cambricon(name), writes the offline model), as genoff.py does.
            self.module(self.example(job["batch_size"]).to(ct.mlu_device()))
            if mode == "offline":
                ct.save_as_cambricon("")
                folder = os.path.dirname(job["offline_name"]) or "."
                info["offline_files"] = sorted(os.path.join(folder, f) for f in os.listdir(folder))
        info["compile_s"] = time.perf_counter() - start
        return info

    def infer(self, request):
        x = torch.from_numpy(np.load(request["input"], allow_pickle=False))
        if self.input_scale != 1.0:
            x = x * self.input_scale
        if self.half:
            x = x.half()
        start = time.perf_counter()
        xd = x.to(self.ct.mlu_device())
        t_fwd = time.perf_counter()
        out = self.module(xd)
        t_fwd = time.perf_counter() - t_fwd
        outs = [out] if torch.is_tensor(out) else list(out)
        host = [o.cpu() for o in outs]  # returns once the device has finished
        seconds = time.perf_counter() - start
        flush_c_stdio()  # the SDK's printf lines of this batch (hardware time, profile) into the log now
        dtype = str(host[0].dtype)
        path = os.path.join("results", "out_%06d" % request["id"])
        if self.job.get("detection_output"):
            path += ".npy"
            np.save(path, host[0].float().numpy())
            kind = "buffer"
        else:
            path += ".npz"
            np.savez(path, **dict(("level_%d" % i, h.float().numpy()) for i, h in enumerate(host)))
            kind = "raw"
        timing = {"id": request["id"], "batch": int(x.shape[0]), "seconds": seconds, "forward_s": t_fwd}
        self.timings.append(timing)
        return {"id": request["id"], "output": path, "kind": kind, "dtype": dtype, "seconds": seconds,
                "forward_s": t_fwd, "shapes": [list(h.shape) for h in host]}


def apply_environment(job):
    for key, value in job.get("env", {}).items():
        os.environ[key] = str(value)
    if job.get("tfu_config"):
        os.environ["CNML_OPTIMIZE"] = "USE_CONFIG:" + os.path.abspath(job["tfu_config"])


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: worker.py <job folder>\n")
        return 2
    os.chdir(argv[1])
    channel = Channel()
    try:
        with open("job.json") as fh:
            job = json.load(fh)
        apply_environment(job)  # CNML reads CNML_OPTIMIZE when torch_mlu loads it
        import torch_mlu
        import torch_mlu.core.mlu_model as ct
        import torch_mlu.core.mlu_quantize as mlu_quantize

        torch.set_grad_enabled(False)
        if not os.path.isdir("results"):
            os.makedirs("results")
        if job["mode"] == "offline":
            folder = os.path.dirname(job["offline_name"])
            if folder and not os.path.isdir(folder):
                os.makedirs(folder)
        worker = Worker(job, ct, mlu_quantize)
        info = worker.prepare()
        info["versions"] = {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torch_mlu": str(getattr(torch_mlu, "__version__", "unknown")),
            "numpy": np.__version__,
        }
        info["torch_mlu_file"] = getattr(torch_mlu, "__file__", None)
        # A test double of torch_mlu says so: RECORDING_STANDIN (not the SDK), and EMULATING_STANDIN (what it
        # computes instead of the device: its numbers are a prediction, not the device's).
        info["standin"] = bool(getattr(torch_mlu, "RECORDING_STANDIN", False) or getattr(torch_mlu, "EMULATING_STANDIN", None))
        info["standin_emulates"] = getattr(torch_mlu, "EMULATING_STANDIN", None) or None
        info["cnml_optimize"] = os.environ.get("CNML_OPTIMIZE")
        channel.send("ready", **info)
        while True:
            line = sys.stdin.readline()
            if not line:
                log("stdin closed; exiting")
                break
            request = json.loads(line)
            if request["cmd"] == "exit":
                break
            if request["cmd"] != "infer":
                raise ValueError("unknown command %r" % (request["cmd"],))
            channel.send("result", **worker.infer(request))
        with open("timings.json", "w") as fh:
            json.dump(worker.timings, fh)
        channel.send("bye", batches=len(worker.timings))
        return 0
    except Exception as exc:  # report, then fail: the runner raises with the log's tail
        traceback.print_exc()
        sys.stderr.flush()
        channel.send("error", message="%s: %s" % (type(exc).__name__, exc))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
