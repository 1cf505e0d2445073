"""Fake quantization matching onnxruntime's static QDQ INT8 export (see
:mod:`hybridmoo.quant.fake` for the exact scheme)."""

from hybridmoo.quant.calibration import batch_inputs, calibrate
from hybridmoo.quant.fake import (
    act_qparams,
    fake_quant_act,
    fake_quant_bias,
    fake_quant_weight,
    weight_qmax,
    weight_scales,
)
from hybridmoo.quant.layers import FakeQuant, check_bits, quantized_call, wrap_layers

__all__ = [
    "FakeQuant", "act_qparams", "batch_inputs", "calibrate", "check_bits", "fake_quant_act",
    "fake_quant_bias", "fake_quant_weight", "quantized_call", "weight_qmax", "weight_scales",
    "wrap_layers",
]
