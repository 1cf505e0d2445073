"""What a supernet found in its model, as plain data, and how a config becomes a :class:`Plan`.

A :class:`Layout` lists the elastic channel groups (with their channel order, most important
first), attention head groups, stages with their skippable blocks and the quantizable layers of
each quantization unit, each tied to the name of the search dimension that controls it. A
config of the layout's space maps to a :class:`Plan`: which channels, heads and blocks go and
how each layer is quantized. Masking (the supernet forward) and extraction both read plans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hybridmoo.space import Choice, Dim, IntRange, SearchSpace

FP32 = 32


def keep_count(channels: int, ratio: float, divisor: int = 1) -> int:
    """Channels kept at ``ratio``: ``ceil(ratio * channels)`` rounded up to a multiple of
    ``divisor``, at least ``min(divisor, channels)`` and at most ``channels``."""
    k = math.ceil(ratio * channels / divisor - 1e-9) * divisor
    return min(channels, max(k, min(divisor, channels)))


@dataclass(frozen=True)
class Member:
    """One layer of a channel group: its ``out`` (or input) channels ``idxs`` correspond
    position by position to the group root's channels ``root_idxs``."""

    name: str
    out: bool
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]

    def pruned(self, root_pruned: frozenset[int]) -> list[int]:
        """This layer's channel indices that go when the root's ``root_pruned`` go."""
        return sorted(i for i, r in zip(self.idxs, self.root_idxs, strict=True)
                      if r in root_pruned)


@dataclass(frozen=True)
class ChannelGroup:
    """Coupled channels (torch-pruning's dependency group) that shrink together."""

    root: str
    channels: int
    order: tuple[int, ...]  # root channel indices, most important first
    members: tuple[Member, ...]
    dim: str

    def pruned(self, keep: int) -> frozenset[int]:
        """Root channel indices removed when the ``keep`` most important stay."""
        return frozenset(self.order[keep:])


@dataclass(frozen=True)
class HeadGroup:
    """The heads of one attention module (``head_dim`` stays fixed)."""

    attn: str
    num_heads: int
    head_dim: int
    order: tuple[int, ...]  # head indices, most important first
    dim: str


@dataclass(frozen=True)
class Stage:
    """A container of blocks; ``skippable`` blocks (input shape = output shape, residual) are
    removed from the end when the stage's depth dimension is below its maximum."""

    name: str
    blocks: tuple[str, ...]
    skippable: tuple[str, ...]
    dim: str | None


@dataclass(frozen=True)
class QuantUnit:
    """Conv/Linear layers that share one weight-bits and one activation-bits dimension."""

    w_dim: str | None
    a_dim: str | None
    layers: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """A sub-network: pruned root channels per group, pruned heads per attention module,
    removed blocks, and ``(w_bits, a_bits)`` of each quantized layer."""

    channels: Mapping[str, frozenset[int]] = field(default_factory=dict)
    heads: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    skip: tuple[str, ...] = ()
    quant: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return bool(self.quant)

    @property
    def is_full(self) -> bool:
        """True for the unmodified FP32 network."""
        return not (self.channels or self.heads or self.skip or self.quant)


@dataclass
class Layout:
    """Everything elastic in one model, and the search space over it."""

    groups: tuple[ChannelGroup, ...]
    heads: tuple[HeadGroup, ...]
    stages: tuple[Stage, ...]
    quant: tuple[QuantUnit, ...]
    dims: dict[str, Dim]
    divisor: int = 1
    space: SearchSpace = field(init=False)

    def __post_init__(self) -> None:
        self.space = SearchSpace(self.dims)

    def plan(self, config: Mapping[str, Any]) -> Plan:
        """The sub-network a (validated) config describes. Groups, heads and layers that lie
        wholly inside a removed block are left out of it."""
        skip: list[str] = []
        for s in self.stages:
            if s.dim is not None:
                skip.extend(s.skippable[int(config[s.dim]):])
        gone = tuple(f"{b}." for b in skip)
        channels = {}
        for g in self.groups:
            keep = keep_count(g.channels, float(config[g.dim]), self.divisor)
            if keep < g.channels and not all(m.name.startswith(gone) for m in g.members):
                channels[g.root] = g.pruned(keep)
        heads = {}
        for h in self.heads:
            keep = int(config[h.dim])
            if keep < h.num_heads and not h.attn.startswith(gone):
                heads[h.attn] = tuple(sorted(h.order[keep:]))
        quant = {}
        for u in self.quant:
            w_bits = int(config[u.w_dim]) if u.w_dim else FP32
            a_bits = int(config[u.a_dim]) if u.a_dim else FP32
            if w_bits < FP32 or a_bits < FP32:
                quant.update({layer: (w_bits, a_bits) for layer in u.layers
                              if not layer.startswith(gone)})
        return Plan(channels, heads, tuple(skip), quant)

    def orders(self) -> dict[str, dict[str, list[int]]]:
        """The channel and head orders (plain JSON): what a trained supernet must keep."""
        return {"channels": {g.root: list(g.order) for g in self.groups},
                "heads": {h.attn: list(h.order) for h in self.heads}}

    def with_orders(self, orders: Mapping[str, Mapping[str, list[int]]]) -> Layout:
        """This layout with the orders saved by :meth:`orders` (from a checkpoint)."""
        channels, heads = dict(orders.get("channels", {})), dict(orders.get("heads", {}))
        if set(channels) != {g.root for g in self.groups} or \
                set(heads) != {h.attn for h in self.heads}:
            raise ValueError("the saved channel/head orders belong to another layout")
        for name, order in (*channels.items(), *heads.items()):
            size = next((g.channels for g in self.groups if g.root == name), None) or next(
                h.num_heads for h in self.heads if h.attn == name)
            if sorted(order) != list(range(size)):
                raise ValueError(f"the saved order of {name!r} is not a permutation of {size}")
        groups = tuple(replace(g, order=tuple(channels[g.root])) for g in self.groups)
        head_groups = tuple(replace(h, order=tuple(heads[h.attn])) for h in self.heads)
        return Layout(groups, head_groups, self.stages, self.quant, dict(self.dims),
                      self.divisor)

    def extreme(self, largest: bool) -> dict[str, Any]:
        """The config with every dimension at its largest (or smallest) value."""
        return {name: _extreme(dim, largest) for name, dim in self.dims.items()}


def _extreme(dim: Dim, largest: bool) -> Any:
    if isinstance(dim, IntRange):
        return dim.hi if largest else dim.lo
    assert isinstance(dim, Choice)
    return (max if largest else min)(dim.values)
