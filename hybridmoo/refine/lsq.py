"""Learned step-size quantization (LSQ, Esser et al. 2020) of per-channel symmetric weights,
on the grid :mod:`hybridmoo.quant.fake` (and onnxruntime) uses.

Steps are learned as ``log(step)`` (Adam then changes them by a relative amount per step,
whatever their scale). The learned step of a channel is capped at ``absmax / qmax``: it can
only learn to clip the largest weights, never to leave the top of the grid unused. So after
baking (writing the quantized values into the weight) the channel's absmax is ``qmax * step``
and FakeQuant's own ``absmax / qmax`` scale is the learned step again: the exported network
computes what the refinement trained.
"""

from __future__ import annotations

import torch

from hybridmoo.quant import weight_qmax, weight_scales


def initial_steps(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """FakeQuant's per-channel scales (``absmax / qmax``): LSQ starts where FakeQuant is."""
    return weight_scales(weight, bits).clone()


def effective_steps(weight: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """The steps in use: ``|step|`` capped at ``absmax / qmax`` of each channel (FakeQuant's
    scale, 1 for a channel of zeros) and kept above a thousandth of it."""
    cap = weight_scales(weight, bits).to(weight.device)
    s = step.abs()
    # A step within rounding of the cap (exp(log(cap)) at the start) is the cap exactly, with
    # its gradient kept: FakeQuant's grid is reproduced bit for bit and the step still learns.
    s = torch.where((s - cap).abs() <= 1e-6 * cap, s + (cap - s).detach(), torch.minimum(s, cap))
    return torch.maximum(s, cap * 1e-3)


def lsq_weight(weight: torch.Tensor, step: torch.Tensor,
               bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(``weight`` on its ``bits``-bit grid of learned steps, the effective steps). Gradients:
    straight through the rounding for ``weight`` (zero where clipped), LSQ's for ``step``
    (``round(w / s) - w / s`` inside the range, ``±qmax`` where clipped)."""
    qmax = weight_qmax(bits)
    s = effective_steps(weight.detach(), step, bits)
    view = s.view(-1, *([1] * (weight.dim() - 1)))
    v = torch.clamp(weight / view, -qmax, qmax)
    v = v + (torch.round(v) - v).detach()
    return v * view, s


@torch.no_grad()
def bake(weight: torch.Tensor, step: torch.Tensor, bits: int) -> None:
    """Write the quantized values into ``weight`` (in place); FakeQuant then finds the learned
    steps as its own scales."""
    quantized, _ = lsq_weight(weight, step, bits)
    weight.copy_(quantized)
