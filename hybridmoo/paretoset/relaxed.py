"""Run a supernet on a *relaxed config*: a weight vector over the values of each dimension
(see :mod:`.costs`), so that the task loss has a gradient in those weights.

Every elastic choice becomes a weighted mixture on the full model (the supernet's "mask"
execution, with weights instead of zeros and ones):

- a channel group's kept-channel mask is ``sum_c w_c * mask_c`` over its width values (the
  channels in the group's order), multiplied into the output of every layer the group
  shrinks, except a convolution whose output goes straight into a BatchNorm the group also
  shrinks: batch statistics normalise a scaled channel back (``BN(m x) = BN(x)``), which
  leaves no gradient in ``m``, and the mask after the BatchNorm removes the channel alike;
- a head group's mask likewise, on the input of the attention's output projection;
- a skippable block's output is ``x + s * (block(x) - x)`` with ``s`` the weight of the
  depths that keep it;
- a quantized layer runs ``sum_b w_b * Q_b(weight)`` and (for activation bits)
  ``sum_b w_b * Q_b(input)``, each ``Q_b`` the fake quantizer the sub-network with ``b`` bits
  runs; quantization scales follow the channels of the config the weights' largest entries
  name.

In training mode every BatchNorm normalises with its batch's statistics taken as constants
(detached): the output is the training-mode output, but the statistics do not absorb a mask
(they would leave its gradient near zero, though a mask of 0.1 changes the loss).

With one-hot weights this is exactly the sub-network (``forward(x, config)`` in "mask"
execution); with straight-through one-hot weights (hard values forward, soft gradients) it is
the forward the Pareto set model trains through. The supernet's own weights are not trained
here: the caller freezes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn
from torch.func import functional_call
from torch.utils.hooks import RemovableHandle

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.size import trace_layers
from hybridmoo.quant import (
    act_qparams,
    fake_quant_act,
    fake_quant_bias,
    fake_quant_weight,
    weight_scales,
)
from hybridmoo.supernet.channels import BN
from hybridmoo.supernet.layout import FP32, keep_count
from hybridmoo.supernet.masking import Masker

Weights = Mapping[str, torch.Tensor]


class RelaxedSupernet:
    """Forward passes of ``supernet``'s model on relaxed configs."""

    def __init__(self, supernet: Any) -> None:
        self.supernet = supernet
        self.space = supernet.space
        layout = supernet.layout
        self.model: nn.Module = supernet.model
        self.modules = dict(self.model.named_modules())
        self._reference = Masker(self.model, layout)  # the input keep of the argmax plan
        example = torch.zeros(1, supernet.in_chans, supernet.image_size, supernet.image_size,
                              device=next(self.model.parameters()).device)
        names = {id(m): n for n, m in self.modules.items()}
        normed = {names[id(r.layer)]: names[id(r.bn)] for r in trace_layers(self.model, example)
                  if r.bn is not None}  # convolution -> the BatchNorm it feeds
        # group masks: (dim, (n_values, channels) keep matrix), and the layers they shrink
        self._groups = []
        for g in layout.groups:
            d = self.space.dims[g.dim]
            rank = torch.empty(g.channels, dtype=torch.long)
            rank[list(g.order)] = torch.arange(g.channels)
            keep = torch.stack([(rank < keep_count(g.channels, float(d.value(i)),
                                                   layout.divisor)).float()
                                for i in range(d.size)])
            masked = {m.name for m in g.members if m.out}
            outs = [(m.name, torch.tensor(m.idxs), torch.tensor(m.root_idxs))
                    for m in g.members if m.out and normed.get(m.name) not in masked]
            self._groups.append((g.dim, keep, outs))
        self._heads = []
        for h in layout.heads:
            d = self.space.dims[h.dim]
            rank = torch.empty(h.num_heads, dtype=torch.long)
            rank[list(h.order)] = torch.arange(h.num_heads)
            keep = torch.stack([(rank < int(d.value(i))).float() for i in range(d.size)])
            self._heads.append((h.dim, keep, f"{h.attn}.proj", h.head_dim))
        self._blocks = []
        for s in layout.stages:
            if s.dim is not None:
                d = self.space.dims[s.dim]
                for j, block in enumerate(s.skippable):
                    kept = torch.tensor([float(j < int(d.value(i))) for i in range(d.size)])
                    self._blocks.append((s.dim, kept, block))
        self._units = [(u.w_dim, u.a_dim, u.layers) for u in layout.quant]

    def __call__(self, x: torch.Tensor, weights: Weights) -> torch.Tensor:
        """The output for images ``x`` of the relaxed config ``weights``."""
        self.supernet.check_input(x)
        config = self.argmax(weights)
        handles: list[RemovableHandle] = []
        try:
            if self.model.training:
                self._detach_statistics(handles)
            self._mask_channels(weights, handles)
            self._mask_heads(weights, handles)
            self._mix_depth(weights, handles)
            params = self._mix_quant(weights, config, handles)
            return functional_call(self.model, params, (x,), tie_weights=False) \
                if params else self.model(x)
        finally:
            for h in handles:
                h.remove()

    def argmax(self, weights: Weights) -> dict[str, Any]:
        """The config of each dimension's largest weight."""
        missing = set(self.space.dims) - set(weights)
        if missing:
            raise ConfigError(f"the relaxed config has no weights for {sorted(missing)[:3]}")
        return {name: d.value(int(torch.argmax(weights[name]))) for name, d in
                self.space.dims.items()}

    def _detach_statistics(self, handles: list[RemovableHandle]) -> None:
        for m in self.modules.values():
            if isinstance(m, BN):
                handles.append(m.register_forward_hook(_constant_statistics, prepend=True))

    def _mask_channels(self, weights: Weights, handles: list[RemovableHandle]) -> None:
        masks: dict[str, torch.Tensor] = {}
        for dim, keep, outs in self._groups:
            w = weights[dim]
            root = w @ keep.to(w)
            for name, idxs, root_idxs in outs:
                m = self.modules[name]
                size = m.num_features if isinstance(m, BN) else m.weight.shape[0]
                base = masks.get(name, torch.ones(size, dtype=w.dtype, device=w.device))
                masks[name] = base.scatter(0, idxs.to(w.device), root[root_idxs.to(w.device)]
                                           * base[idxs.to(w.device)])
        for name, mask in masks.items():
            m = self.modules[name]
            k = mask if isinstance(m, nn.Linear) else mask.view(1, -1, 1, 1)
            handles.append(m.register_forward_hook(lambda _m, _a, out, k=k: out * k.to(out)))

    def _mask_heads(self, weights: Weights, handles: list[RemovableHandle]) -> None:
        for dim, keep, proj, head_dim in self._heads:
            w = weights[dim]
            mask = (w @ keep.to(w)).repeat_interleave(head_dim)
            handles.append(self.modules[proj].register_forward_pre_hook(
                lambda _m, args, k=mask: (args[0] * k.to(args[0]), *args[1:])))

    def _mix_depth(self, weights: Weights, handles: list[RemovableHandle]) -> None:
        for dim, kept, block in self._blocks:
            w = weights[dim]
            s = w @ kept.to(w)
            handles.append(self.modules[block].register_forward_hook(
                lambda _m, args, out, s=s: args[0] + s.to(out) * (out - args[0])))

    def _mix_quant(self, weights: Weights, config: Mapping[str, Any],
                   handles: list[RemovableHandle]) -> dict[str, torch.Tensor]:
        """Mixed fake-quantized weights and biases by parameter name (input mixtures are
        registered as hooks)."""
        input_keep = self._reference.input_keep_of(self.supernet.layout.plan(config))
        params: dict[str, torch.Tensor] = {}
        for w_dim, a_dim, layers in self._units:
            w_bits = self._bits(w_dim)
            a_bits = self._bits(a_dim)
            ww = weights[w_dim] if w_dim else torch.ones(1)
            wa = weights[a_dim] if a_dim else torch.ones(1)
            for name in layers:
                layer = self.modules[name]
                weight = layer.weight
                if name in input_keep:
                    keep = input_keep[name].to(weight)
                    weight = weight * keep.view(1, -1, *([1] * (weight.dim() - 2)))
                qparams = self._qparams(name) if any(b < FP32 for b in a_bits) else None
                mixed_w = 0.0
                mixed_b = 0.0 if layer.bias is not None else None
                for i, wb in enumerate(w_bits):
                    quantized = fake_quant_weight(weight, wb) if wb < FP32 else layer.weight
                    mixed_w = mixed_w + ww[i] * quantized
                    if layer.bias is None:
                        continue
                    for j, ab in enumerate(a_bits):
                        bias = layer.bias if wb >= FP32 or ab >= FP32 else fake_quant_bias(
                            layer.bias, qparams[0], weight_scales(weight, wb))
                        mixed_b = mixed_b + ww[i] * wa[j] * bias
                if any(b < FP32 for b in w_bits):
                    params[f"{name}.weight"] = mixed_w
                    if mixed_b is not None:
                        params[f"{name}.bias"] = mixed_b
                if qparams is not None:
                    handles.append(layer.register_forward_pre_hook(
                        lambda _m, args, wa=wa, ab=a_bits, q=qparams: (
                            _mix_inputs(args[0], wa, ab, q), *args[1:])))
        return params

    def _bits(self, dim: str | None) -> list[int]:
        if dim is None:
            return [FP32]
        d = self.space.dims[dim]
        return [int(d.value(i)) for i in range(d.size)]

    def _qparams(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        ranges = self.supernet.act_ranges
        if name not in ranges:
            raise ConfigError(f"the supernet has no calibrated input range for {name!r}: "
                              f"call supernet.calibrate(batches) first")
        device = self.modules[name].weight.device
        scale, zero_point = act_qparams(*ranges[name])
        return scale.to(device), zero_point.to(device)


def _constant_statistics(bn: nn.Module, args: tuple[Any, ...], _out: Any) -> torch.Tensor:
    """The training-mode BatchNorm output with the batch statistics detached (timm's
    BatchNormAct2d: then its dropout and activation)."""
    x = args[0]
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims).detach()
    var = x.var(dims, unbiased=False).detach()
    out = F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)
    if isinstance(bn, BatchNormAct2d):
        out = bn.act(bn.drop(out))
    return out


def _mix_inputs(x: torch.Tensor, w: torch.Tensor, bits: list[int],
                qparams: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    out = 0.0
    for i, b in enumerate(bits):
        out = out + w[i].to(x) * (fake_quant_act(x, *qparams) if b < FP32 else x)
    return out


@contextmanager
def frozen(model: nn.Module):
    """``model``'s parameters without gradients and its buffers (BatchNorm statistics)
    restored afterwards, whatever its forward passes in training mode did."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        own = dict(model.named_buffers())
        with torch.no_grad():
            for name, b in buffers.items():
                own[name].copy_(b)
