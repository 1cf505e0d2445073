"""Fake quantization that computes what onnxruntime's static QDQ INT8 export runs.

The scheme is the one ``onnxruntime.quantization.quantize_static`` uses by default
(``QuantFormat.QDQ``, ``activation_type=QInt8``, ``weight_type=QInt8``, MinMax calibration,
``ActivationSymmetric=False``, ``WeightSymmetric=True``) with ``per_channel=True``:

- weights: symmetric, one scale per output channel, ``scale = absmax / qmax`` with
  ``qmax = 2**(bits-1) - 1`` (127 for 8 bits, 7 for 4 bits), zero point 0, values clamped to
  ``[-qmax, qmax]``. 4-bit weights use that same scheme on the range [-7, 7]; the export stores
  them as int8 (every 4-bit value is an int8 value), so INT8 kernels compute with exactly
  these numbers.
- activations: asymmetric signed int8, one scale and zero point per tensor from the calibrated
  range ``[lo, hi]`` widened to include 0: ``scale = (hi - lo) / 255``,
  ``zero_point = round(-128 - lo / scale)``, ``q = clamp(round(x / scale) + zero_point, -128,
  127)``.
- bias (when both the input and the weight are quantized): int32 with
  ``scale = input_scale * weight_scale[c]``, as onnxruntime quantizes biases.

Rounding is round-half-to-even (``torch.round``, like numpy and onnxruntime). Every function
passes gradients straight through (STE), so the same code serves quantization-aware training.
"""

from __future__ import annotations

import torch

ACT_QMIN, ACT_QMAX = -128, 127
WEIGHT_BITS = (4, 8)
ACT_BITS = (8,)
_TINY = float(torch.finfo(torch.float32).tiny)


def weight_qmax(bits: int) -> int:
    """Largest quantized weight magnitude for ``bits`` (symmetric range ``[-qmax, qmax]``)."""
    if bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be one of {WEIGHT_BITS}, got {bits}")
    return 2 ** (bits - 1) - 1


def weight_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel (dim 0) symmetric scales, computed in float64 and stored as float32
    like onnxruntime; a channel of zeros gets scale 1."""
    absmax = weight.detach().flatten(1).abs().amax(dim=1).double()
    scale = (absmax / weight_qmax(bits)).float()
    return torch.where(scale < _TINY, torch.ones_like(scale), scale)


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` rounded to its per-channel symmetric ``bits``-bit grid (STE gradient)."""
    qmax = weight_qmax(bits)
    scale = weight_scales(weight, bits).view(-1, *([1] * (weight.dim() - 1)))
    q = torch.clamp(torch.round(weight.detach() / scale), -qmax, qmax) * scale
    return weight + (q.to(weight.dtype) - weight).detach()


def act_qparams(lo: float | torch.Tensor,
               hi: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) of the int8 asymmetric per-tensor quantizer for the range [lo, hi]
    (onnxruntime's ``compute_scale_zp`` with qmin=-128, qmax=127): both are 0-d tensors, the
    scale float32, the zero point an integer held in a float32."""
    lo_t = torch.as_tensor(lo).detach().float().clamp(max=0.0)
    hi_t = torch.as_tensor(hi).detach().float().to(lo_t.device).clamp(min=0.0)
    scale = (hi_t.double() - lo_t.double()) / (ACT_QMAX - ACT_QMIN)  # float64, as ORT
    tiny = scale < _TINY
    safe = torch.where(tiny, torch.ones_like(scale), scale)
    zero_point = torch.round(ACT_QMIN - lo_t.double() / safe).clamp(ACT_QMIN, ACT_QMAX)
    zero_point = torch.where(tiny, torch.zeros_like(zero_point), zero_point)
    return safe.float(), zero_point.float()


def fake_quant_act(x: torch.Tensor, scale: torch.Tensor,
                   zero_point: torch.Tensor) -> torch.Tensor:
    """``x`` through QuantizeLinear + DequantizeLinear (int8, per tensor), STE gradient."""
    s = scale.to(x.device, torch.float32)
    zp = zero_point.to(x.device, torch.float32)
    q = torch.clamp(torch.round(x.detach().float() / s) + zp, ACT_QMIN, ACT_QMAX)
    dq = ((q - zp) * s).to(x.dtype)
    return x + (dq - x).detach()


def fake_quant_bias(bias: torch.Tensor, act_scale: torch.Tensor,
                    weight_scale: torch.Tensor) -> torch.Tensor:
    """``bias`` rounded to the int32 grid ``act_scale * weight_scale[c]`` (float32 product, as
    onnxruntime computes it), STE gradient."""
    scale = act_scale.to(bias.device, torch.float32) * weight_scale.to(bias.device, torch.float32)
    q = torch.round(bias.detach().float() / scale) * scale
    return bias + (q.to(bias.dtype) - bias).detach()
