"""RECORDING STAND-IN — not Cambricon's code; records calls so tests can check the sequence.

Stands in for ``torch_mlu.core.mlu_quantize``. ``quantize_dynamic_mlu`` keeps the model's arithmetic in
float (so the worker's raw outputs can be compared with yolomlu's model) and only gives every
``nn.Conv2d`` / ``nn.Linear`` not named in ``mixed_layer`` the buffers of the quantized state_dict layout
that ``yolomlu/quant/params_file.py`` documents (``scale`` = [input scale, weight scale],
``quantized_mode``, ``use_symmetry``; per channel ``quantized_by_channel`` and
``scale_weight_per_channel``; with firstconv ``input_mean``/``input_std`` on the first conv). With
``gen_quant=True`` the input scale is qmax / absmax of the inputs seen in the first ``iteration`` forward
calls. A pre-hook casts each layer's input to its weight dtype, as the device accepts half inputs to a
float model. Every forward of the returned model is recorded as ``model.forward`` (tagged ``gen_quant`` or
``deploy``), and its ``load_state_dict`` calls as ``model.load_state_dict``.
"""

import torch
from torch import nn

from torch_mlu._record import record


def quantize_dynamic_mlu(model, qconfig_spec=None, dtype=None, mapping=None, inplace=False, gen_quant=False, mixed_layer=None):
    kwargs = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if gen_quant:
        kwargs["gen_quant"] = gen_quant
    if mixed_layer is not None:
        kwargs["mixed_layer"] = mixed_layer
    args = (model,) if qconfig_spec is None else (model, qconfig_spec)
    record("mlu_quantize.quantize_dynamic_mlu", *args, **kwargs)

    qconfig = dict(qconfig_spec or {})
    qmax = 32767.0 if dtype == "int16" else 127.0
    per_channel = bool(qconfig.get("per_channel"))
    mode = (2 if dtype == "int16" else 1) + (2 if per_channel else 0)
    iteration = int(qconfig.get("iteration", 1))
    skip = set(mixed_layer or {})
    first = True
    for name, layer in model.named_modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        if name in skip:
            first = False
            continue
        w_absmax = float(layer.weight.detach().abs().max()) or 1.0
        layer.register_buffer("scale", torch.tensor([1.0, 0.0 if per_channel else qmax / w_absmax]))
        layer.register_buffer("quantized_mode", torch.tensor([mode], dtype=torch.int32))
        layer.register_buffer("use_symmetry", torch.tensor([1]))
        if per_channel:
            layer.register_buffer("quantized_by_channel", torch.tensor([1]))
            layer.register_buffer("scale_weight_per_channel", torch.ones(layer.weight.shape[0]))
        channels = layer.weight.shape[1]
        # catch's default qconfig has firstconv=True; the MLU's first-conv op takes 1, 3 or 4 channels.
        firstconv = first and qconfig.get("firstconv", True) and channels in (1, 3, 4)
        if firstconv:  # the device normalises 0..255 pixels itself: (x - mean*255) / (std*255)
            mean = torch.tensor(qconfig.get("mean", [0.0] * channels), dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(qconfig.get("std", [1.0] * channels), dtype=torch.float32).view(1, -1, 1, 1)
            layer.register_buffer("input_mean", mean * 255.0)
            layer.register_buffer("input_std", std * 255.0)
        first = False
        layer._standin_seen = 0
        layer.register_forward_pre_hook(_make_pre_hook(gen_quant, iteration, qmax, firstconv))

    phase = "gen_quant" if gen_quant else "deploy"

    def on_forward(module, inputs):
        record("model.forward", inputs[0], phase=phase)

    model.register_forward_pre_hook(on_forward)
    load = model.load_state_dict

    def recording_load_state_dict(state_dict, strict=True):
        record("model.load_state_dict", keys=len(state_dict), strict=strict)
        return load(state_dict, strict=strict)

    model.load_state_dict = recording_load_state_dict
    return model


def _make_pre_hook(gen_quant, iteration, qmax, firstconv):
    def pre_hook(layer, inputs):
        x = inputs[0]
        if firstconv:
            x = (x.to(layer.input_mean.dtype) - layer.input_mean) / layer.input_std
        if gen_quant and layer._standin_seen < iteration:
            layer._standin_seen += 1
            absmax = float(x.detach().abs().max())
            if absmax > 0:
                layer.scale[0] = qmax / absmax
        return (x.to(layer.weight.dtype),) + tuple(inputs[1:])

    return pre_hook
