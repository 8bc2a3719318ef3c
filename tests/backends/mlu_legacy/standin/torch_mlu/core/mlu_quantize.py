"""EMULATING STAND-IN — not Cambricon's code; records calls and computes what the device would.

Stands in for ``torch_mlu.core.mlu_quantize``. ``quantize_dynamic_mlu`` follows Cambricon's semantics
(REFERENCE.md section 3, read from Cambricon/catch) with yolomlu's own implementation of them:

- it treats every ``nn.Conv2d`` / ``nn.Linear`` not named in ``mixed_layer`` (catch's
  ``default_mappings.py`` swaps those types only); BatchNorm and activations stay float;
- ``gen_quant=True`` (the calibration pass on the CPU, as ``quantize_online/quant.py``): each such
  layer's input is watched by yolomlu's ``RangeObserver`` with the qconfig's ``iteration``,
  ``use_avg`` and ``data_scale``; the forward itself stays float; the layer carries the buffers of
  Cambricon's quantized state dict, kept up to date (``scale`` = [s_in, s_w] from yolomlu's
  ``scale_from_range`` / ``weight_scales``, ``quantized_mode``, ``use_symmetry``, per channel
  ``quantized_by_channel`` + ``scale_weight_per_channel``, firstconv ``input_mean``/``input_std`` =
  mean*255 / std*255 on the first conv, whose input is then normalised before it is observed and
  used), so ``state_dict()`` is what ``yolomlu.quant.params_file.quant_state_dict`` writes;
- without ``gen_quant`` (deployment, as ``quantize_online/detect.py``): the layers carry empty buffers
  that ``load_state_dict(state, strict=False)`` fills; the per-channel and firstconv keys are taken
  where the loaded state brings them (catch's loader reads them that way too, see
  ``yolomlu/quant/params_file.py``);
- moving the model to ``ct.mlu_device()`` gives it the device's numerics: each loaded layer becomes
  yolomlu's ``QuantConv2d`` / ``QuantLinear`` (input and weight quantized with the loaded scales,
  step absmax/qmax as on the MLU270; the first conv normalises raw 0..255 pixels with its
  ``input_mean``/``input_std``), and every module's output is rounded to float16
  (``yolomlu.quant.emulate_float_precision``: the legacy stack keeps what an int8 model computes in
  floating point in float16). Inputs arrive in float16 or float32 (half inputs to a float model, as
  genoff.py feeds them) and are computed in float32; outputs come back in the input's dtype.

A layer that got no parameters from the loaded state (its ``scale``/``quantized_mode`` missing) is
refused when the model moves to the device: what the SDK does with one is not known.

Recorded: every call of ``quantize_dynamic_mlu``, every forward of the returned model as
``model.forward`` (tagged ``gen_quant`` or ``deploy``; a traced graph runs without Python hooks, so its
batches are not recorded) and its ``load_state_dict`` calls as ``model.load_state_dict``.
"""

import torch
from torch import nn

from torch_mlu._record import record

# Cambricon's quantized_mode codes (yolomlu/quant/params_file.py): dtype, per channel.
_MODES = {1: ("int8", False), 2: ("int16", False), 3: ("int8", True), 4: ("int16", True)}
_OPTIONAL_KEYS = ("quantized_by_channel", "scale_weight_per_channel", "input_mean", "input_std")


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

    skip = set(mixed_layer or {})
    layers = [(name, m) for name, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear) and name not in skip]
    if gen_quant:
        _prepare_calibration(model, layers, dict(qconfig_spec or {}), dtype or "int8", skip)
    else:
        for _, layer in layers:
            layer.register_buffer("scale", torch.zeros(2))
            layer.register_buffer("quantized_mode", torch.zeros(1, dtype=torch.int32))
            layer.register_buffer("use_symmetry", torch.ones(1, dtype=torch.int64))
    model._standin_layers = [name for name, _ in layers]
    model._standin_phase = "gen_quant" if gen_quant else "deploy"
    model._standin_on_device = False

    model.register_forward_pre_hook(_on_forward)
    model.register_forward_pre_hook(_to_float32)
    model.register_forward_hook(_back_to_input_dtype)
    load = model.load_state_dict

    def recording_load_state_dict(state_dict, strict=True):
        record("model.load_state_dict", keys=len(state_dict), strict=strict)
        _take_optional_keys(model, state_dict)
        return load(state_dict, strict=strict)

    model.load_state_dict = recording_load_state_dict
    to = model.to

    def to_device(*args, **kwargs):
        if model._standin_phase == "deploy" and not model._standin_on_device:
            _emulate_device(model)
        return to(*args, **kwargs)

    model.to = to_device
    return model


# -- calibration (gen_quant) ---------------------------------------------------------------------
def _prepare_calibration(model, layers, qconfig, dtype, skip):
    from yolomlu.quant import QMAX, RangeObserver, first_conv, weight_scales

    per_channel = bool(qconfig.get("per_channel", False))
    mode = (1 if dtype == "int8" else 2) + (2 if per_channel else 0)
    data_scale = float(qconfig.get("data_scale", 1.0))
    first = None
    if qconfig.get("firstconv", True):  # catch's default qconfig has firstconv=True
        first, conv = first_conv(model)
        if conv.in_channels not in (1, 3, 4) or first in skip:
            raise ValueError(
                "stand-in quantize_dynamic_mlu: firstconv needs a quantized first conv with 1, 3 or 4 input channels; "
                "%s takes %d%s" % (first, conv.in_channels, " and is in mixed_layer" if first in skip else "")
            )
    if dtype not in QMAX:
        raise ValueError("stand-in quantize_dynamic_mlu: dtype=%r is not one of %s" % (dtype, sorted(QMAX)))
    for name, layer in layers:
        scales = weight_scales(layer.weight, dtype, per_channel, data_scale)
        layer.register_buffer("scale", torch.tensor([1.0, 0.0 if per_channel else scales[0]], dtype=torch.float32))
        layer.register_buffer("quantized_mode", torch.tensor([mode], dtype=torch.int32))
        layer.register_buffer("use_symmetry", torch.tensor([1]))
        if per_channel:
            layer.register_buffer("quantized_by_channel", torch.tensor([1]))
            layer.register_buffer("scale_weight_per_channel", torch.tensor(scales, dtype=torch.float32))
        if name == first:  # Cambricon multiplies in float32: Tensor(mean).mul(255)
            layer.register_buffer("input_mean", torch.tensor(qconfig.get("mean", [0.0] * 3), dtype=torch.float32).mul(255).view(1, -1, 1, 1))
            layer.register_buffer("input_std", torch.tensor(qconfig.get("std", [1.0] * 3), dtype=torch.float32).mul(255).view(1, -1, 1, 1))
        layer._standin_observer = RangeObserver(int(qconfig.get("iteration", 1)), bool(qconfig.get("use_avg", False)), data_scale)
        layer._standin_dtype = dtype
        layer.register_forward_pre_hook(_observe)


def _observe(layer, inputs):
    """Normalise the first conv's raw-pixel input (firstconv), observe the input, keep s_in current."""
    from yolomlu.quant import scale_from_range

    x = inputs[0]
    if hasattr(layer, "input_mean"):
        x = (x - layer.input_mean) / layer.input_std
    observer = layer._standin_observer
    observer.update(x)
    if observer.calls:
        layer.scale[0] = scale_from_range(observer.min, observer.max, layer._standin_dtype)
    return (x,) + tuple(inputs[1:])


# -- deployment ----------------------------------------------------------------------------------
def _take_optional_keys(model, state_dict):
    """Give a layer the per-channel / firstconv buffers the loaded state brings for it."""
    if model._standin_phase != "deploy":
        return
    layers = dict(model.named_modules())
    for name in model._standin_layers:
        for key in _OPTIONAL_KEYS:
            value = state_dict.get("%s.%s" % (name, key))
            if value is not None and not hasattr(layers[name], key):
                layers[name].register_buffer(key, torch.zeros_like(torch.as_tensor(value)))


def _emulate_device(model):
    """The device's numerics: yolomlu's quantized layers with the loaded scales, float16 between layers."""
    from yolomlu.quant import LayerScales, QuantConv2d, QuantLinear, emulate_float_precision

    layers = dict(model.named_modules())
    for name in model._standin_layers:
        layer = layers[name]
        mode = int(layer.quantized_mode.flatten()[0])
        if mode not in _MODES or not float(layer.scale[0]) > 0:
            raise RuntimeError(
                "stand-in: layer %s got no quantization parameters from the loaded state dict (scale=%s, "
                "quantized_mode=%d); what the SDK does with such a layer is not known" % (name, layer.scale.tolist(), mode)
            )
        dtype, per_channel = _MODES[mode]
        per_channel = per_channel or int(getattr(layer, "quantized_by_channel", torch.zeros(1)).flatten()[0]) == 1
        weight = tuple(layer.scale_weight_per_channel.tolist()) if per_channel else (float(layer.scale[1]),)
        scales = LayerScales(float(layer.scale[0]), weight, dtype, per_channel)
        norm = None
        if hasattr(layer, "input_mean"):  # firstconv: the device takes raw 0..255 pixels
            norm = (layer.input_mean.flatten().tolist(), layer.input_std.flatten().tolist())
        cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        quantized = cls.from_float(layer, scales, "mlu270", norm)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, quantized)
    emulate_float_precision(model, "float16")
    model._standin_on_device = True


# -- hooks on the returned model -----------------------------------------------------------------
def _on_forward(model, inputs):
    record("model.forward", inputs[0], phase=model._standin_phase)


def _to_float32(model, inputs):
    # The device takes half inputs to a float model (genoff.py's half_input) and computes in float.
    model._standin_input_dtype = inputs[0].dtype
    return (inputs[0].float(),) + tuple(inputs[1:])


def _back_to_input_dtype(model, inputs, output):
    dtype = model._standin_input_dtype
    if dtype == torch.float32:
        return None
    if torch.is_tensor(output):
        return output.to(dtype)
    return type(output)(y.to(dtype) for y in output)
