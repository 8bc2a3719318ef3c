"""Quantization the way the Cambricon MLU does it: qconfig, calibration, int8/int16 emulation, the
quant-params file, firstconv and per-layer sensitivity.

A job's quant stage, in order:
    settings = QuantSettings.from_mapping(plain_quant_group)
    scales = calibrate(model, batches, settings.qconfig)        # or load_quant_params(path)
    quant_model = copy.deepcopy(model); quantize_model(quant_model, scales, settings.qconfig)
    layer_sqnr(model, quant_model, batch), sensitivity_table(model, quant_model, batch)
    save_quant_params(path, model, scales, settings.qconfig)

Importing this package changes no global state and imports no plotting backend.
"""

from yolomlu.quant.emulate import (
    DETECT_PATTERN,
    FLOAT_DTYPES,
    emulate_float_precision,
    QuantConv2d,
    QuantLinear,
    effective_scale,
    fake_quantize,
    layer_sqnr,
    quantize_model,
    quantized_layers,
    resolve_layers,
    restore_float,
    sqnr_db,
    sqnr_summary,
)
from yolomlu.quant.firstconv import FoldedFirstConv, check_first_conv, first_conv, fold_first_conv, normalize
from yolomlu.quant.observers import (
    InputRange,
    LayerScales,
    RangeObserver,
    calibrate,
    observe_inputs,
    quantizable_layers,
    scale_from_range,
    scales_from_ranges,
    weight_scales,
)
from yolomlu.quant.params_file import (
    QuantParamsInfo,
    check_quant_params,
    load_quant_params,
    quant_state_dict,
    save_quant_params,
)
from yolomlu.quant.qconfig import DTYPES, QMAX, SCHEMES, QConfig, QuantSettings, qrange
from yolomlu.quant.sensitivity import most_sensitive, sensitivity_figure, sensitivity_table

__all__ = [
    "DETECT_PATTERN",
    "FLOAT_DTYPES",
    "emulate_float_precision",
    "DTYPES",
    "QMAX",
    "SCHEMES",
    "FoldedFirstConv",
    "InputRange",
    "LayerScales",
    "QConfig",
    "QuantConv2d",
    "QuantLinear",
    "QuantParamsInfo",
    "QuantSettings",
    "RangeObserver",
    "calibrate",
    "check_first_conv",
    "check_quant_params",
    "effective_scale",
    "fake_quantize",
    "first_conv",
    "fold_first_conv",
    "layer_sqnr",
    "load_quant_params",
    "most_sensitive",
    "normalize",
    "observe_inputs",
    "qrange",
    "quant_state_dict",
    "quantizable_layers",
    "quantize_model",
    "quantized_layers",
    "resolve_layers",
    "restore_float",
    "save_quant_params",
    "scale_from_range",
    "scales_from_ranges",
    "sensitivity_figure",
    "sensitivity_table",
    "sqnr_db",
    "sqnr_summary",
    "weight_scales",
]
