"""Differentiable costs of a relaxed config: latency (a fitted latency model's prediction) and
size in bytes, as functions of one weight vector per search dimension.

A *relaxed config* maps each dimension of a supernet's space to a tensor of weights over its
values (index order); a config is the one-hot case. Every layer's cost is a product of
factors that each depend on one dimension: its kept output and input widths (the channel
group that shrinks them, or the kept heads), whether its block is kept (depth) and whether
its quantization unit runs it as an int8 kernel (activation bits). Each factor is linear in
its dimension's weights, so the cost is multilinear in the relaxed config: at a one-hot
vertex it is exactly the cost of that sub-network, and its gradient in dimension ``d``'s
weights is the cost with ``d`` switched to each value (what a straight-through estimator
needs). The numbers follow :mod:`hybridmoo.evaluate`: MACs and layer kinds as
:func:`~hybridmoo.evaluate.latency_model.layer_costs` counts them, bytes as
:func:`~hybridmoo.evaluate.size.size_bytes` counts them (folded BatchNorms store nothing,
int8 layers store one byte per weight plus per-channel quantization parameters, and each
tensor an int8 layer reads or writes a scale and zero point), and the latency model's
runtime switches to its int8 table when any layer runs as an int8 kernel.

One forward of the full model on an example input reads every layer's shape. The one
approximation: a removed block's input and output become one tensor in the extracted network,
which this count keeps apart (a few bytes of quantization parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hybridmoo.evaluate.latency_model import INT8, LatencyModel, LayerCost, layer_costs
from hybridmoo.evaluate.size import (
    CHANNEL_QPARAM_BYTES,
    FLOAT_BYTES,
    INT8_WEIGHT_BYTES,
    INT32_BIAS_BYTES,
    TENSOR_QPARAM_BYTES,
    trace_layers,
)
from hybridmoo.refine.costs import layer_width, macs_model
from hybridmoo.supernet.layout import keep_count

Weights = Mapping[str, torch.Tensor]  # dimension name -> weights over its values
Term = tuple[str, torch.Tensor]  # (dimension, value per choice): a factor linear in the weights


@dataclass
class LayerTerms:
    """What one layer's cost is made of: full sizes and the linear factors that shrink them."""

    kind: str  # conv, dwconv, linear, norm, attention (as layer_costs names them)
    positions: float  # output positions per image (tokens for attention)
    out_size: float
    in_size: float = 0.0
    kernel: float = 1.0  # kernel elements
    groups: float = 1.0
    own_bias: bool = False  # the layer's own bias (a parameter for layer_costs)
    bias: bool = False  # a stored bias: its own or a folded BatchNorm's
    out_cut: list[Term] = field(default_factory=list)  # channels removed per choice
    in_cut: list[Term] = field(default_factory=list)
    active: Term | None = None  # the block's depth dimension: 1 where the block stays
    int8: Term | None = None  # the unit's activation-bits dimension: 1 where it is 8
    stored: bool = True  # False for a BatchNorm folded into its convolution
    norm_bytes: float = 0.0  # an unfolded norm's bytes per channel
    add_bias: bool = False  # int8 Linear on >2-D input: float bias after a MatMul


class RelaxedCosts:
    """Latency (ms) and size (bytes) of relaxed configs of ``supernet``; ``latency_model``:
    a fitted :class:`LatencyModel` (default: 1 ms per MMAC, the stand-in refinement uses)."""

    def __init__(self, supernet: Any, example: torch.Tensor,
                 latency_model: LatencyModel | None = None) -> None:
        self.space = supernet.space
        self.latency_model = latency_model if latency_model is not None else macs_model()
        model = supernet.model
        layout = supernet.layout
        self.layers: dict[str, LayerTerms] = {}
        modules = dict(model.named_modules())
        full = layer_costs(model, example[:1])
        traced = {id(r.layer): r for r in trace_layers(model, example[:1])}
        folded = {id(r.bn) for r in traced.values() if r.bn is not None}
        blocks = _block_terms(layout, self.space)
        int8 = {layer: self._indicator(u.a_dim, lambda v: int(v) == 8)
                for u in layout.quant if u.a_dim for layer in u.layers}
        for name, c in full.items():
            m = modules[name]
            t = LayerTerms(c.kind, 1.0, 0.0)
            t.active = next((term for prefix, term in blocks if name.startswith(prefix)), None)
            if c.kind == "attention":  # positions: tokens^2 * head_dim
                t.positions, t.out_size = c.macs / (2.0 * m.num_heads), float(m.num_heads)
            elif c.kind == "norm":
                width = layer_width(m)
                t.positions, t.out_size = c.macs / width, float(width)
                floats = sum(p.numel() for p in (*m.parameters(False), *m.buffers(False))
                             if p.is_floating_point())
                t.stored = id(m) not in folded
                t.norm_bytes = FLOAT_BYTES * floats / width if t.stored else 0.0
            else:
                r = traced[id(m)]
                out, inp = (m.out_channels, m.in_channels) if isinstance(m, nn.Conv2d) else \
                    (m.out_features, m.in_features)
                kernel = m.kernel_size[0] * m.kernel_size[1] if isinstance(m, nn.Conv2d) else 1
                groups = m.groups if isinstance(m, nn.Conv2d) else 1
                t.out_size, t.in_size = float(out), float(inp)
                t.kernel, t.groups = float(kernel), float(groups)
                t.positions = c.macs / (out * kernel * (1 if c.kind == "dwconv" else
                                                         inp / groups))
                t.own_bias, t.add_bias = m.bias is not None, r.add_bias
                t.bias = t.own_bias or r.bn is not None
                t.int8 = int8.get(name)
            self.layers[name] = t
        self._add_channel_cuts(layout)
        self._add_head_cuts(layout)
        self._tensors = _int8_tensors(traced.values(), modules)
        counted = {id(p) for name, t in self.layers.items() if t.kind != "attention"
                   for p in (*modules[name].parameters(False), *modules[name].buffers(False))}
        self._other = [(next((term for prefix, term in blocks
                              if pname.startswith(prefix)), None), FLOAT_BYTES * p.numel())
                       for pname, p in (*model.named_parameters(), *model.named_buffers())
                       if id(p) not in counted and p.is_floating_point()]

    # -- building the terms -------------------------------------------------------------

    def _indicator(self, dim: str, keep) -> Term:
        d = self.space.dims[dim]
        return dim, torch.tensor([float(keep(d.value(i))) for i in range(d.size)])

    def _add_channel_cuts(self, layout: Any) -> None:
        for g in layout.groups:
            d = self.space.dims[g.dim]
            pruned = [g.pruned(keep_count(g.channels, float(d.value(i)), layout.divisor))
                      for i in range(d.size)]
            for m in g.members:
                if m.name not in self.layers:
                    continue
                cut = torch.tensor([float(len(m.pruned(p))) for p in pruned])
                t = self.layers[m.name]
                (t.out_cut if m.out else t.in_cut).append((g.dim, cut))

    def _add_head_cuts(self, layout: Any) -> None:
        for h in layout.heads:
            d = self.space.dims[h.dim]
            gone = torch.tensor([float(h.num_heads - int(d.value(i))) for i in range(d.size)])
            self.layers[h.attn].out_cut.append((h.dim, gone))
            for name, out, per_head in ((f"{h.attn}.qkv", True, 3 * h.head_dim),
                                        (f"{h.attn}.proj", False, h.head_dim)):
                if name in self.layers:
                    t = self.layers[name]
                    (t.out_cut if out else t.in_cut).append((h.dim, per_head * gone))

    # -- evaluating -----------------------------------------------------------------------

    def __call__(self, weights: Weights) -> dict[str, torch.Tensor]:
        """``latency_ms``, ``size_bytes`` and ``macs`` (0-d tensors, differentiable in
        ``weights``) of the relaxed config ``weights``; weights of shape ``(batch, n)`` give
        ``(batch,)`` tensors, one per relaxed config."""
        def value(term: Term | None, default: float = 1.0) -> torch.Tensor:
            if term is None:
                return torch.tensor(default)
            return (weights[term[0]] * term[1].to(weights[term[0]])).sum(-1)

        records: dict[str, LayerCost] = {}
        size = torch.tensor(0.0)
        macs = torch.tensor(0.0)
        int8_share: dict[str, torch.Tensor] = {}  # by layer: active and int8
        unit_active: dict[str, torch.Tensor] = {}  # by activation-bits dim: 1 - P(no layer)
        unit_q: dict[str, torch.Tensor] = {}
        for name, t in self.layers.items():
            e_out = t.out_size - sum((value(term) for term in t.out_cut), torch.tensor(0.0))
            e_in = t.in_size - sum((value(term) for term in t.in_cut), torch.tensor(0.0))
            active = value(t.active)
            q = value(t.int8, 0.0)
            if t.kind == "attention":
                work, params = t.positions * 2.0 * e_out, torch.tensor(0.0)
                size_here = torch.tensor(0.0)
            elif t.kind == "norm":
                work, params = t.positions * e_out, 2.0 * e_out
                size_here = t.norm_bytes * e_out
            else:
                per_out = t.kernel * (1.0 if t.kind == "dwconv" else e_in / t.groups)
                weights_n = per_out * e_out
                work = t.positions * weights_n
                params = weights_n + (e_out if t.own_bias else 0.0)
                int8_bias = (FLOAT_BYTES if t.add_bias else INT32_BIAS_BYTES) if t.bias else 0
                per_channel = q * (CHANNEL_QPARAM_BYTES + int8_bias) + \
                    (1 - q) * (FLOAT_BYTES if t.bias else 0)
                per_weight = q * INT8_WEIGHT_BYTES + (1 - q) * FLOAT_BYTES
                size_here = per_weight * weights_n + per_channel * e_out
                int8_share[name] = active * q
                if t.int8 is not None:
                    dim = t.int8[0]
                    unit_q[dim] = q
                    unit_active[dim] = unit_active.get(dim, torch.tensor(1.0)) * (1 - active)
            macs = macs + (active * work if t.kind != "norm" else 0.0)
            size = size + active * size_here
            records[name] = LayerCost(t.kind, work, params, active * (1 - q))
            if t.int8 is not None:
                records[f"{name}{INT8}"] = LayerCost(t.kind + INT8, work, params, active * q)
        size = size + sum(value(term) * n for term, n in self._other) + \
            TENSOR_QPARAM_BYTES * self._quantized_tensors(int8_share)
        units = [unit_q[d] * (1 - unit_active[d]) for d in unit_q]
        return {"latency_ms": self._latency(records, units), "size_bytes": size,
                "macs": macs}

    def _quantized_tensors(self, int8_share: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tensors some int8 layer reads or writes (1 - prod(1 - share) per tensor)."""
        total = torch.tensor(0.0)
        for users in self._tensors:
            none = torch.tensor(1.0)
            for name in users:
                none = none * (1 - int8_share.get(name, torch.tensor(0.0)))
            total = total + 1 - none
        return total

    def _latency(self, records: Mapping[str, LayerCost], units: list[torch.Tensor]
                 ) -> torch.Tensor:
        """The latency model's prediction. Where an int8 layer switches the network to
        another runtime (onnxruntime's int8 table on CPU), the prediction is that runtime's
        weighted by the chance some quantization unit runs int8 (``units``: each unit's
        chance that it has a kept layer and 8-bit activations)."""
        model = self.latency_model
        plain = model.kind_for({})
        quantized = model.kind_for({"q": LayerCost("conv" + INT8, 0.0, 0.0)})
        if plain == quantized:
            return torch.as_tensor(model.predict_from_layers(records, plain))
        none = torch.tensor(1.0)
        for share in units:
            none = none * (1 - share)
        fp = {k: c for k, c in records.items() if not c.kind.endswith(INT8)}
        runs_fp = model.predict_from_layers(fp, plain) if plain in model.tables else 0.0
        runs_int8 = model.predict_from_layers(records, quantized) \
            if quantized in model.tables else 0.0
        return torch.as_tensor(none * runs_fp + (1 - none) * runs_int8)

    def of_config(self, config: Mapping[str, Any]) -> dict[str, float]:
        """The costs of one config (its one-hot relaxed config), as floats."""
        with torch.no_grad():
            return {k: float(v) for k, v in self(one_hot(self.space, config)).items()}


def one_hot(space: Any, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The relaxed config of ``config``: a one-hot weight vector per dimension."""
    out = {}
    for name, d in space.dims.items():
        w = torch.zeros(d.size)
        w[d.index(config[name])] = 1.0
        out[name] = w
    return out


def _block_terms(layout: Any, space: Any) -> list[tuple[str, Term]]:
    """(block prefix, kept-indicator term) of every skippable block."""
    out = []
    for s in layout.stages:
        if s.dim is None:
            continue
        d = space.dims[s.dim]
        for j, block in enumerate(s.skippable):
            kept = torch.tensor([float(j < int(d.value(i))) for i in range(d.size)])
            out.append((f"{block}.", (s.dim, kept)))
    return out


def _int8_tensors(traced: Any, modules: Mapping[str, nn.Module]) -> list[list[str]]:
    """For each tensor a Conv2d / Linear reads or writes, the layers that touch it."""
    names = {id(m): n for n, m in modules.items()}
    users: dict[tuple[int, int], list[str]] = {}
    for r in traced:
        for key in (r.inp, r.out):
            users.setdefault(key, []).append(names[id(r.layer)])
    return list(users.values())
