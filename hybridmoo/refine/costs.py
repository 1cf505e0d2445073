"""Differentiable costs of a gated network: expected MACs, parameters and bytes per layer from
the expected number of channels (and heads) each layer keeps, and a latency from them.

A layer's full cost is read once from a traced forward (output positions per image, kernel
size, tokens); its expected cost scales with the expected input and output widths, each the
sum of the keep probabilities of the gated units (1 for an ungated position). The numbers
follow :mod:`hybridmoo.evaluate`: layer kinds and MACs as ``layer_costs`` counts them (a
FakeQuant layer with int8 inputs is a ``-int8`` kind), bytes as
:func:`hybridmoo.evaluate.size.size_bytes` counts them: its trace tells which BatchNorms fold
into a convolution (they store nothing and give it a bias) and which tensors the int8 layers
read and write, and its :func:`~hybridmoo.evaluate.size.layer_bytes` gives each layer's bytes
per weight and per output channel, which scale with the expected widths. What no gate changes
(the ungated floats and the per-tensor quantization parameters) is a constant.
Latency is a :class:`hybridmoo.evaluate.latency_model.LatencyModel`'s
``predict_from_layers`` on :class:`LayerCost` records of tensors; without a fitted model,
:func:`macs_model` (milliseconds proportional to MMACs) stands in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hybridmoo.evaluate.latency import TORCH
from hybridmoo.evaluate.latency_model import INT8, LatencyModel, LayerCost, Table
from hybridmoo.evaluate.size import (
    FLOAT_BYTES,
    TENSOR_QPARAM_BYTES,
    TracedLayer,
    layer_bytes,
    trace_layers,
)
from hybridmoo.refine.gates import LayerDims, Segment, attention_modules, gate_vector

FP32 = 32
KINDS = ("conv", "dwconv", "linear", "attention", "norm")
_BN = nn.modules.batchnorm._BatchNorm
_NORMS = (_BN, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class LayerProfile:
    """One layer at full width: ``kind`` (see :data:`KINDS`; attention = the score and value
    matmuls of ``out_size`` heads over ``positions`` tokens), output positions per image,
    widths, kernel elements, groups, bias, int8 inputs, and the bytes the deployable model
    stores per weight and per output channel (a norm's: its affine parameters and running
    statistics, none when folded into a convolution)."""

    kind: str
    positions: int
    in_size: int
    out_size: int
    kernel: int = 1
    groups: int = 1
    bias: bool = False
    int8: bool = False
    head_dim: int = 0
    weight_bytes: int = FLOAT_BYTES
    channel_bytes: int = 0


@dataclass(frozen=True)
class NetProfile:
    """Every costed layer by name, plus the bytes no gate changes (the ungated floating-point
    parameters and buffers, and the quantization parameters of the int8 layers' tensors)."""

    layers: dict[str, LayerProfile]
    constant_bytes: int


@dataclass
class ExpectedCost:
    """A layer's expected cost (0-d tensors, differentiable in the gates)."""

    kind: str
    macs: torch.Tensor
    params: torch.Tensor
    bytes: torch.Tensor


@torch.no_grad()
def profile(plain: nn.Module, example: torch.Tensor,
            quant: Mapping[str, tuple[int, int]]) -> NetProfile:
    """Trace a FakeQuant-free network once on ``example`` and profile its Conv2d, Linear,
    norm and Attention modules; ``quant`` holds ``(w_bits, a_bits)`` of the layers a
    FakeQuant wraps in the real network (``a_bits == 8``: run as an int8 kernel)."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    attention = attention_modules(plain)
    watched = {n: m for n, m in plain.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, *_NORMS)) or n in attention}

    def recorder(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
                shapes[name] = (tuple(args[0].shape), tuple(out.shape))
        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in watched.items()]
    was_training = plain.training
    plain.eval()
    try:
        plain(example)
    finally:
        plain.train(was_training)
        for h in handles:
            h.remove()
    deployed = _deployed(plain, example, quant)
    folded = {r.bn for r in deployed.values() if r.bn is not None}
    quantized = {t for r in deployed.values() if r.int8 for t in (r.inp, r.out)}
    layers: dict[str, LayerProfile] = {}
    counted: set[int] = set()
    for name, m in watched.items():
        if name not in shapes:
            continue  # not on the forward path
        inp, out = shapes[name]
        if name in attention:
            tokens = inp[1] if len(inp) == 3 else 1
            layers[name] = LayerProfile("attention", tokens, m.head_dim, m.num_heads,
                                        head_dim=m.head_dim)
            continue
        tensors = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
        counted.update(id(t) for t in tensors)
        width = layer_width(m)
        positions = max(1, _numel(out[1:]) // width)
        if isinstance(m, _NORMS):
            floats = sum(t.numel() for t in tensors if t.is_floating_point())
            per_channel = 0 if m in folded else FLOAT_BYTES * floats // max(width, 1)
            layers[name] = LayerProfile("norm", positions, width, width,
                                        channel_bytes=per_channel)
            continue
        r = deployed[name]
        per_weight, per_channel = layer_bytes(r)
        if isinstance(m, nn.Conv2d):
            kind = "dwconv" if m.groups > 1 and m.groups == m.in_channels else "conv"
            kernel = m.kernel_size[0] * m.kernel_size[1]
            layers[name] = LayerProfile(kind, positions, m.in_channels, m.out_channels, kernel,
                                        m.groups, m.bias is not None, r.int8,
                                        weight_bytes=per_weight, channel_bytes=per_channel)
        else:
            layers[name] = LayerProfile("linear", positions, m.in_features, m.out_features,
                                        bias=m.bias is not None, int8=r.int8,
                                        weight_bytes=per_weight, channel_bytes=per_channel)
    floats = sum(t.numel() for t in (*plain.parameters(), *plain.buffers())
                 if id(t) not in counted and t.is_floating_point())
    return NetProfile(layers, FLOAT_BYTES * int(floats) + TENSOR_QPARAM_BYTES * len(quantized))


def _deployed(plain: nn.Module, example: torch.Tensor,
              quant: Mapping[str, tuple[int, int]]) -> dict[str, TracedLayer]:
    """The first run of each Conv2d / Linear of ``plain`` as ``size_bytes`` traces it (the
    BatchNorm folded into it, the tensors it reads and writes), marked int8 as ``quant``
    says the real network runs it."""
    names = {id(m): n for n, m in plain.named_modules()}
    deployed: dict[str, TracedLayer] = {}
    for r in trace_layers(plain, example):
        name = names[id(r.layer)]
        if name not in deployed:  # a layer run twice stores its weights once
            r.int8 = quant.get(name, (FP32, FP32))[1] == 8
            deployed[name] = r
    return deployed


def expected_costs(prof: NetProfile, dims: Mapping[str, LayerDims],
                   keep: list[torch.Tensor]) -> dict[str, ExpectedCost]:
    """Expected cost of every profiled layer given the keep probabilities of each gate group
    (``GateBank.keep_probs()``; tensors of ones give the full network)."""
    device = keep[0].device if keep else torch.device("cpu")
    zero = torch.zeros((), device=device)
    out = {}
    for name, p in prof.layers.items():
        d = dims.get(name, LayerDims())
        e_out = _expected(p.out_size, d.out, keep, device)
        if p.kind == "attention":
            macs = 2.0 * p.positions * p.positions * p.head_dim * e_out
            out[name] = ExpectedCost(p.kind, macs, zero, zero)
            continue
        if p.kind == "norm":
            out[name] = ExpectedCost(p.kind, p.positions * e_out, 2.0 * e_out,
                                     p.channel_bytes * e_out)
            continue
        e_in = _expected(p.in_size, d.inp, keep, device)
        per_out = p.kernel * (1.0 if p.kind == "dwconv" else e_in / p.groups)
        weights = per_out * e_out
        bias = e_out if p.bias else zero
        kind = p.kind + (INT8 if p.int8 else "")
        out[name] = ExpectedCost(kind, p.positions * weights, weights + bias,
                                 p.weight_bytes * weights + p.channel_bytes * e_out)
    return out


def total_macs(costs: Mapping[str, ExpectedCost]) -> torch.Tensor:
    """Sum of the expected MACs of the compute layers (norms excluded, as a FLOP counter)."""
    return torch.stack([c.macs for c in costs.values() if c.kind != "norm"]).sum()


def total_bytes(costs: Mapping[str, ExpectedCost], prof: NetProfile) -> torch.Tensor:
    """Expected size in bytes, what no gate changes included."""
    return torch.stack([c.bytes for c in costs.values()]).sum() + float(prof.constant_bytes)


def macs_model() -> LatencyModel:
    """A stand-in latency model: 1 ms per MMAC of every compute layer, nothing else."""
    kinds = [k + suffix for k in KINDS for suffix in ("", INT8)]
    table = Table(0.0, dict.fromkeys(kinds, 0.0),
                  {k: 0.0 if k.startswith("norm") else 1.0 for k in kinds})
    return LatencyModel("macs-proxy", "any", "cpu", 1, "torch", {TORCH: table})


def latency(costs: Mapping[str, ExpectedCost], model: LatencyModel | None = None
            ) -> torch.Tensor:
    """Differentiable latency in ms: ``model.predict_from_layers`` (default
    :func:`macs_model`) on the layers' expected costs."""
    model = model if model is not None else macs_model()
    records = {name: LayerCost(c.kind, c.macs, c.params) for name, c in costs.items()}
    return torch.as_tensor(model.predict_from_layers(records))


def _expected(size: int, segments: list[Segment], keep: list[torch.Tensor],
              device: torch.device) -> torch.Tensor:
    if not segments:
        return torch.tensor(float(size), device=device)
    return gate_vector(size, segments, keep, device).sum()


def layer_width(m: nn.Module) -> int:
    """Output channels of a Conv2d, Linear or norm layer (whatever its memory layout)."""
    if isinstance(m, nn.Conv2d):
        return int(m.out_channels)
    if isinstance(m, nn.Linear):
        return int(m.out_features)
    if isinstance(m, nn.LayerNorm):
        return _numel(tuple(m.normalized_shape))
    if isinstance(m, nn.GroupNorm):
        return int(m.num_channels)
    return int(m.num_features)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
