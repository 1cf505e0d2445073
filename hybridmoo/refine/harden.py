"""Hardening: a gated network back to a plain, physically smaller one.

Each group keeps the units whose test-time gate exceeds 0.5, i.e. ``log_alpha > 0``, the units
the cost model counts as kept with probability above one half (at least one; channel counts
rounded up to a multiple of ``divisor`` by taking the next-largest gates). The surviving
gates are folded into the consumers' weight columns, the wrappers give their original modules
back (plain timm layers and FakeQuant), torch-pruning's per-layer functions remove the other
channels and heads, and the learned quantizer steps are baked into the weights. What remains
is a timm model with FakeQuant wrappers, exportable like any extracted sub-network.
"""

from __future__ import annotations

import math

import torch
import torch_pruning as tp
from torch import nn

from hybridmoo.quant import FakeQuant
from hybridmoo.refine.gates import GatedNet, GateGroup, set_module
from hybridmoo.refine.lsq import bake

THRESHOLD = 0.5


def kept_units(gates: list[torch.Tensor], groups: list[GateGroup],
               divisor: int = 1) -> list[list[int]]:
    """The units each group keeps: gate > 0.5, at least one, channel counts rounded up to a
    multiple of ``divisor`` (or all), largest gates first."""
    kept = []
    for gate, group in zip(gates, groups, strict=True):
        k = max(1, int((gate > THRESHOLD).sum()))
        if divisor > 1 and not group.is_heads:
            k = min(group.size, math.ceil(k / divisor) * divisor)
        order = torch.argsort(-gate.detach().cpu(), stable=True)[:k]
        kept.append(sorted(int(i) for i in order))
    return kept


def kept_masks(kept: list[list[int]], groups: list[GateGroup]) -> list[torch.Tensor]:
    """The hardening decision as 0/1 vectors per group (what the cost model reads as keep
    probabilities to give the hardened network's cost)."""
    masks = []
    for keep, group in zip(kept, groups, strict=True):
        mask = torch.zeros(group.size)
        mask[list(keep)] = 1.0
        masks.append(mask)
    return masks


@torch.no_grad()
def harden(gated: GatedNet, divisor: int = 1) -> dict[str, tuple[int, int]]:
    """Turn ``gated.net`` (in place) into the plain pruned network; returns ``(kept, total)``
    units per group, by the group's root layer (or attention module) name."""
    net, bank = gated.net, gated.bank
    bank.stochastic = False
    bank.refresh()
    kept = kept_units(bank.test_gates(), gated.groups, divisor)
    steps: dict[str, tuple[torch.Tensor, int]] = {}
    for name, wrapped in gated.layers.items():
        wrapped.layer.weight.copy_(wrapped.gated_weight())
        if wrapped.log_step is not None:
            steps[name] = (wrapped.log_step.detach().exp(), wrapped.w_bits)
        set_module(net, name, wrapped.original)
    gated.handle.remove()
    modules = dict(net.named_modules())
    for group, keep in zip(gated.groups, kept, strict=True):
        removed = sorted(set(range(group.size)) - set(keep))
        if not removed:
            continue
        if group.is_heads:
            _remove_heads(modules, group, removed, steps)
            continue
        for member in group.members:
            idxs = member.pruned(frozenset(removed))
            if idxs:
                _prune(modules[member.name], idxs, member.out)
                if member.out and member.name in steps:
                    steps[member.name] = (_drop(steps[member.name][0], idxs),
                                          steps[member.name][1])
    for name, (step, bits) in steps.items():
        bake(_layer(modules[name]).weight, step, bits)
    return {g.name: (len(k), g.size) for g, k in zip(gated.groups, kept, strict=True)}


def _remove_heads(modules: dict[str, nn.Module], group: GateGroup, heads: list[int],
                  steps: dict[str, tuple[torch.Tensor, int]]) -> None:
    attn = modules[group.name]
    width = group.size * group.head_dim
    channels = [h * group.head_dim + j for h in heads for j in range(group.head_dim)]
    rows = [part * width + c for part in range(3) for c in channels]
    qkv = f"{group.name}.qkv"
    _prune(modules[qkv], rows, out=True)
    if qkv in steps:
        steps[qkv] = (_drop(steps[qkv][0], rows), steps[qkv][1])
    _prune(modules[f"{group.name}.proj"], channels, out=False)
    attn.num_heads -= len(heads)
    if hasattr(attn, "attn_dim"):
        attn.attn_dim = attn.num_heads * group.head_dim


def _prune(module: nn.Module, idxs: list[int], out: bool) -> None:
    layer = _layer(module)
    pruner = tp.pruner.function.PrunerBox[tp.ops.module2type(layer)]
    pruner(layer, idxs, to_output=out)


def _layer(module: nn.Module) -> nn.Module:
    return module.layer if isinstance(module, FakeQuant) else module


def _drop(values: torch.Tensor, idxs: list[int]) -> torch.Tensor:
    keep = torch.ones(len(values), dtype=torch.bool)
    keep[idxs] = False
    return values[keep.to(values.device)]
