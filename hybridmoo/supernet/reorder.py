"""Store every elastic channel group and attention head group in its importance order, so
that a width is a prefix of the stored channels (and a head count a prefix of the heads).

The permutation is applied to every coupled layer of a group at once (the same layers
torch-pruning removes channels from), which leaves the network's function unchanged; the
group's order becomes the identity. Slicing then takes views (``weight[:k]``) instead of
gathers. A group whose members do not map one to one onto its channels in the same order
(channels spread or repeated through a reshape) keeps its stored order: slicing gathers it.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from hybridmoo.supernet.channels import channel_count, channel_dim
from hybridmoo.supernet.layout import ChannelGroup, HeadGroup, Layout


@torch.no_grad()
def sort_channels(model: nn.Module, layout: Layout) -> Layout:
    """Permute ``model``'s weights in place so each group's importance order is its stored
    order; returns the layout with those orders as the identity."""
    modules = dict(model.named_modules())
    groups = tuple(_sort_group(modules, g) for g in layout.groups)
    heads = tuple(_sort_heads(modules[h.attn], h) for h in layout.heads)
    return Layout(groups, heads, layout.stages, layout.quant, dict(layout.dims), layout.divisor)


def permutable(group: ChannelGroup) -> bool:
    """True when every member's channels correspond one to one, in the same order, to the
    group's channels."""
    for m in group.members:
        if len(m.idxs) != group.channels or sorted(m.root_idxs) != list(range(group.channels)):
            return False
        pairs = sorted(zip(m.root_idxs, m.idxs, strict=True))
        if [i for _, i in pairs] != sorted(m.idxs):
            return False
    return True


def _sort_group(modules: dict[str, nn.Module], group: ChannelGroup) -> ChannelGroup:
    identity = tuple(range(group.channels))
    if group.order == identity or not permutable(group):
        return group
    done: set[tuple[str, int]] = set()
    for m in group.members:
        module = modules[m.name]
        dim = channel_dim(module, m.out)
        if (m.name, dim) in done:
            continue
        done.add((m.name, dim))
        by_root = dict(zip(m.root_idxs, m.idxs, strict=True))
        positions = sorted(m.idxs)
        source = list(range(channel_count(module, dim)))
        for position, root in zip(positions, group.order, strict=True):
            source[position] = by_root[root]
        _permute(module, dim, torch.tensor(source))
    return replace(group, order=identity)


def _permute(module: nn.Module, dim: int, source: torch.Tensor) -> None:
    """Position ``i`` of ``module``'s channel dimension ``dim`` takes old channel
    ``source[i]``, in every tensor that has that dimension."""
    names = ("weight", "bias", "running_mean", "running_var") if dim == 0 else ("weight",)
    for name in names:
        t = getattr(module, name, None)
        if isinstance(t, torch.Tensor) and t.dim() > dim:
            t.copy_(t.index_select(dim, source.to(t.device)))


def _sort_heads(attn: nn.Module, group: HeadGroup) -> HeadGroup:
    identity = tuple(range(group.num_heads))
    if group.order == identity:
        return group
    order = torch.tensor(group.order, device=attn.qkv.weight.device)
    heads, hd = group.num_heads, group.head_dim
    weight = attn.qkv.weight
    weight.copy_(weight.view(3, heads, hd, -1).index_select(1, order).reshape(weight.shape))
    if attn.qkv.bias is not None:
        bias = attn.qkv.bias
        bias.copy_(bias.view(3, heads, hd).index_select(1, order).reshape(bias.shape))
    proj = attn.proj.weight
    proj.copy_(proj.view(proj.shape[0], heads, hd).index_select(1, order).reshape(proj.shape))
    return replace(group, order=identity)
