"""A tiny fake-quant wrapper around one Conv/Linear layer, and helpers to place it."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from hybridmoo.errors import ConfigError
from hybridmoo.quant.fake import (
    ACT_BITS,
    WEIGHT_BITS,
    act_qparams,
    fake_quant_act,
    fake_quant_bias,
    fake_quant_weight,
    weight_scales,
)

QUANTIZABLE = (nn.Conv2d, nn.Linear)
FP32 = 32


def check_bits(w_bits: int, a_bits: int) -> None:
    """Raise :class:`ConfigError` unless the bit widths are supported."""
    if w_bits not in (*WEIGHT_BITS, FP32):
        raise ConfigError(f"weight bits must be one of {[*WEIGHT_BITS, FP32]}, got {w_bits!r}")
    if a_bits not in (*ACT_BITS, FP32):
        raise ConfigError(f"activation bits must be one of {[*ACT_BITS, FP32]}, got {a_bits!r}")


def quantized_call(layer: nn.Module, x: torch.Tensor, w_bits: int, a_bits: int,
                   act_scale: torch.Tensor | None, act_zero_point: torch.Tensor | None
                   ) -> torch.Tensor:
    """``layer(x)`` with its input and weight fake-quantized (bits 32 = left in FP32)."""
    if a_bits < FP32:
        if act_scale is None or act_zero_point is None:
            raise ConfigError("activation quantization needs calibrated ranges: run "
                              "hybridmoo.quant.calibrate(module, batches) first")
        x = fake_quant_act(x, act_scale, act_zero_point)
    if w_bits >= FP32:
        return layer(x)
    params = {"weight": fake_quant_weight(layer.weight, w_bits)}
    if a_bits < FP32 and getattr(layer, "bias", None) is not None:
        params["bias"] = fake_quant_bias(layer.bias, act_scale, weight_scales(layer.weight, w_bits))
    return functional_call(layer, params, (x,))


class FakeQuant(nn.Module):
    """``layer`` (a Conv2d or Linear) run with per-channel symmetric ``w_bits`` weights and an
    int8 per-tensor input quantizer whose range ``act_range`` = [lo, hi] comes from
    :func:`hybridmoo.quant.calibrate` (a buffer, so it travels in the state dict)."""

    def __init__(self, layer: nn.Module, w_bits: int = FP32, a_bits: int = FP32) -> None:
        super().__init__()
        if not isinstance(layer, QUANTIZABLE):
            raise ConfigError(f"FakeQuant wraps Conv2d or Linear, got {type(layer).__name__}")
        check_bits(w_bits, a_bits)
        self.layer = layer
        self.w_bits = int(w_bits)
        self.a_bits = int(a_bits)
        self.observing = False
        self.register_buffer("act_range", torch.full((2,), float("nan")))

    def extra_repr(self) -> str:
        return f"w_bits={self.w_bits}, a_bits={self.a_bits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            observe_range(self.act_range, x)
            return self.layer(x)
        scale = zero_point = None
        if self.a_bits < FP32:
            if torch.isnan(self.act_range).any():
                raise ConfigError("this FakeQuant layer quantizes its input but was never "
                                  "calibrated: run hybridmoo.quant.calibrate(module, batches)")
            scale, zero_point = act_qparams(self.act_range[0], self.act_range[1])
        return quantized_call(self.layer, x, self.w_bits, self.a_bits, scale, zero_point)


@torch.no_grad()
def observe_range(act_range: torch.Tensor, x: torch.Tensor) -> None:
    """Widen ``act_range`` = [lo, hi] (NaN = empty) in place to cover ``x``."""
    lo, hi = x.detach().aminmax()
    lo, hi = lo.float().to(act_range.device), hi.float().to(act_range.device)
    empty = torch.isnan(act_range[0])
    act_range[0] = torch.where(empty, lo, torch.minimum(act_range[0], lo))
    act_range[1] = torch.where(empty, hi, torch.maximum(act_range[1], hi))


def wrap_layers(module: nn.Module, policy: Mapping[str, tuple[int, int]],
                act_ranges: Mapping[str, tuple[float, float]] | None = None) -> nn.Module:
    """Replace each named Conv/Linear layer of ``module`` (in place) by a :class:`FakeQuant`
    with its ``(w_bits, a_bits)`` from ``policy``; ``act_ranges`` gives calibrated input
    ranges by layer name. Returns ``module``."""
    layers = dict(module.named_modules())
    for name, (w_bits, a_bits) in policy.items():
        layer = layers.get(name)
        if not isinstance(layer, QUANTIZABLE):
            raise ConfigError(f"cannot quantize {name!r}: not a Conv2d/Linear layer of the module")
        wrapped = FakeQuant(layer, w_bits, a_bits)
        if act_ranges is not None and name in act_ranges:
            wrapped.act_range.copy_(torch.tensor(act_ranges[name], dtype=torch.float32))
        wrapped.to(layer.weight.device)
        parent_name, _, child = name.rpartition(".")
        parent = layers[parent_name] if parent_name else module
        setattr(parent, child, wrapped)
    return module
