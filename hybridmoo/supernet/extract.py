"""Physical extraction: a deep copy of the model with a :class:`Plan` applied for real.

Channels go through torch-pruning's per-layer pruning functions (one table, ``PrunerBox``),
which also slice BatchNorm weights and running statistics to the kept channels. Attention
heads are removed by pruning the matching rows of ``qkv`` (in each of its q, k and v parts)
and columns of ``proj`` with the same functions; ``num_heads`` and ``attn_dim`` are updated so
timm's Attention runs with fewer heads of the same ``head_dim``. Removed blocks become
``nn.Identity`` in their stage (the other blocks keep their names). Quantized layers are
wrapped in :class:`hybridmoo.quant.FakeQuant`, the only hybridmoo class an extracted network
may hold.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from hybridmoo.quant import wrap_layers
from hybridmoo.supernet.layout import Layout, Plan


def extract(model: nn.Module, layout: Layout, plan: Plan,
            act_ranges: Mapping[str, tuple[float, float]] | None = None) -> nn.Module:
    """A standalone copy of ``model`` running as ``plan`` (weights copied, not shared)."""
    net = copy.deepcopy(model)
    for p in net.parameters():
        p.grad = None
    modules = dict(net.named_modules())
    groups = {g.root: g for g in layout.groups}
    with torch.no_grad():
        for root, root_pruned in plan.channels.items():
            for member in groups[root].members:
                idxs = member.pruned(root_pruned)
                if idxs:
                    _prune(modules[member.name], idxs, member.out)
        heads = {h.attn: h for h in layout.heads}
        for attn, removed in plan.heads.items():
            _remove_heads(modules[attn], removed, heads[attn].head_dim)
    for block in plan.skip:
        parent_name, _, child = block.rpartition(".")
        setattr(modules[parent_name], child, nn.Identity())
    if plan.quant:
        wrap_layers(net, plan.quant, act_ranges)
    return net


def _prune(module: nn.Module, idxs: list[int], out: bool) -> None:
    pruner = tp.pruner.function.PrunerBox[tp.ops.module2type(module)]
    pruner(module, idxs, to_output=out)


def _remove_heads(attn: nn.Module, heads: tuple[int, ...], head_dim: int) -> None:
    width = attn.num_heads * head_dim
    channels = [h * head_dim + j for h in heads for j in range(head_dim)]
    _prune(attn.qkv, [part * width + c for part in range(3) for c in channels], out=True)
    _prune(attn.proj, channels, out=False)
    attn.num_heads -= len(heads)
    attn.attn_dim = attn.num_heads * head_dim
