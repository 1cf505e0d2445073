"""Find what is elastic in a model: stages and skippable blocks (by a probe forward), coupled
channel groups (torch-pruning's DependencyGraph) ordered by importance, attention heads, and
quantizable layers; name a search dimension for each, following the family's spec."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.space import Choice, Dim, IntRange
from hybridmoo.supernet.channels import is_depthwise
from hybridmoo.supernet.layout import (
    ChannelGroup,
    HeadGroup,
    Layout,
    Member,
    QuantUnit,
    Stage,
    keep_count,
)
from hybridmoo.supernet.spec import SupernetSpec

_ELASTIC_LAYERS = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
_QUANTIZABLE = (nn.Conv2d, nn.Linear)


def analyse(model: nn.Module, spec: SupernetSpec, example: torch.Tensor) -> Layout:
    """The :class:`Layout` of ``model`` under ``spec``, traced with the input ``example``."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    stages = _find_stages(model, spec)
    skippable = _probe_skippable(model, [b for _, blocks in stages for b in blocks], example)
    units = _Units(stages, order)
    dims: dict[str, tuple[float, Dim]] = {}

    stage_records = []
    for stage, blocks in stages:
        skip = tuple(b for b in blocks if b in skippable)
        dim = None
        if spec.depth is not None and len(skip) > spec.depth.min_keep:
            dim = f"{stage}.depth"
            dims[dim] = (units.key(stage, 3), IntRange(spec.depth.min_keep, len(skip)))
        stage_records.append(Stage(stage, tuple(blocks), skip, dim))

    attention = _attention_modules(model, spec)
    groups = _channel_groups(model, spec, example, units, attention) if spec.width else []
    groups = _width_dims(groups, spec, units, dims)
    heads = _head_groups(attention, spec, units, dims) if spec.heads else []
    quant = _quant_units(model, spec, units, dims) if spec.quant else []
    ordered = {name: dim for name, (_, dim) in sorted(dims.items(), key=lambda kv: kv[1][0])}
    if not ordered:
        raise ConfigError(f"spec {spec.source}: nothing in this model is elastic")
    return Layout(tuple(groups), tuple(heads), tuple(stage_records), tuple(quant), ordered,
                  divisor=spec.width.divisor if spec.width else 1)


class _Units:
    """Where a module lies: which block and stage, and an order key for dimension names."""

    def __init__(self, stages: list[tuple[str, list[str]]], order: dict[str, int]) -> None:
        self.order = order
        self.stage_of = {b: s for s, blocks in stages for b in blocks}
        self.stage_index = {s: i for i, (s, _) in enumerate(stages)}
        self.stage_end = {s: order[blocks[-1]] + 0.5 for s, blocks in stages}
        self.first = min(order[s] for s, _ in stages)

    def block_of(self, name: str) -> str | None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in self.stage_of:
                return prefix
        return None

    def key(self, unit: str, rank: int) -> float:
        """Order key: stem dims first, then each block's, each stage's after its blocks."""
        if unit == "stem":
            return -1.0 + rank * 1e-3
        if unit in self.stage_end:
            return self.stage_end[unit] + rank * 1e-3
        if unit in self.order:
            return self.order[unit] + rank * 1e-3
        return 1e12 + rank * 1e-3


def _find_stages(model: nn.Module, spec: SupernetSpec) -> list[tuple[str, list[str]]]:
    stages = []
    for name, module in model.named_modules():
        if name and re.fullmatch(spec.stages, name):
            children = [f"{name}.{child}" for child, _ in module.named_children()]
            if not isinstance(module, nn.Sequential) or not children:
                raise ConfigError(f"spec {spec.source}: stage {name!r} must be a non-empty "
                                  f"nn.Sequential of blocks, got {type(module).__name__}")
            stages.append((name, children))
    if not stages:
        raise ConfigError(f"spec {spec.source}: no module of {type(model).__name__} matches "
                          f"the stages pattern {spec.stages!r}")
    return stages


@torch.no_grad()
def _probe_skippable(model: nn.Module, blocks: list[str], example: torch.Tensor) -> set[str]:
    """Blocks whose input and output shapes match and that carry a residual connection."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[Any, Any]] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                shapes[name] = (tuple(args[0].shape), tuple(out.shape))
        return hook

    handles = [modules[b].register_forward_hook(recorder(b)) for b in blocks]
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
    return {b for b in blocks if b in shapes and shapes[b][0] == shapes[b][1]
            and getattr(modules[b], "has_skip", True) is not False
            and getattr(modules[b], "downsample", None) is None}


def _attention_modules(model: nn.Module, spec: SupernetSpec) -> dict[str, nn.Module]:
    if spec.attention is None:
        return {}
    found = {n: m for n, m in model.named_modules() if n and re.fullmatch(spec.attention, n)}
    for name, m in found.items():
        ok = (isinstance(getattr(m, "qkv", None), nn.Linear)
              and isinstance(getattr(m, "proj", None), nn.Linear)
              and isinstance(getattr(m, "num_heads", None), int)
              and isinstance(getattr(m, "head_dim", None), int)
              and isinstance(getattr(m, "norm", nn.Identity()), nn.Identity)
              and getattr(m, "gate", None) is None
              and m.qkv.out_features == 3 * m.num_heads * m.head_dim
              and m.proj.in_features == m.num_heads * m.head_dim)
        if not ok:
            raise ConfigError(f"spec {spec.source}: {name!r} ({type(m).__name__}) is not a "
                              "timm-style Attention (fused qkv, proj, num_heads, head_dim, no "
                              "scale norm or gate)")
    return found


def _channel_groups(model: nn.Module, spec: SupernetSpec, example: torch.Tensor,
                    units: _Units, attention: dict[str, nn.Module]
                    ) -> list[tuple[ChannelGroup, str, str]]:
    """Elastic groups with (kind, unit): kind is inner / stream / stem / head."""
    names = {id(m): n for n, m in model.named_modules()}
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    ignored = [classifier] if isinstance(classifier, nn.Module) else []
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example, verbose=False)
    importance = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
    attn_prefixes = tuple(f"{a}." for a in attention)
    found = []
    for group in graph.get_all_groups(ignored_layers=ignored,
                                      root_module_types=(nn.Conv2d, nn.Linear)):
        members = group_members(group, graph, names, attn_prefixes)
        if members is None or len(group[0].idxs) < 2:
            continue
        scores = importance(group)
        channels = len(group[0].idxs)
        if scores is None:
            scores = torch.zeros(channels)
        order = tuple(int(i) for i in torch.argsort(-scores.float().cpu(), stable=True))
        root = names[id(group[0].dep.target.module)]
        kind, unit = _classify(members, root, units)
        found.append((ChannelGroup(root, channels, order, tuple(members), ""), kind, unit))
    return found


def group_members(group: Any, graph: Any, names: dict[int, str],
                  attn_prefixes: tuple[str, ...]) -> list[Member] | None:
    """The group's layers, or None when some member cannot be masked and sliced safely."""
    members = []
    for item in group.items:
        target = item.dep.target.module
        name = names.get(id(target))
        if name is None:
            if isinstance(target, nn.Parameter):
                return None
            continue  # an operation node of the traced graph (add, reshape, ...)
        if not isinstance(target, _ELASTIC_LAYERS) or name.startswith(attn_prefixes):
            return None
        if isinstance(target, nn.Conv2d) and target.groups > 1 and not is_depthwise(target):
            return None
        members.append(Member(name, graph.is_out_channel_pruning_fn(item.dep.handler),
                              tuple(int(i) for i in item.idxs),
                              tuple(int(i) for i in item.root_idxs)))
    return members if any(m.out for m in members) else None


def _classify(members: list[Member], root: str, units: _Units) -> tuple[str, str]:
    blocks = {units.block_of(m.name) for m in members}
    if len(blocks) == 1 and None not in blocks:
        return "inner", blocks.pop()
    stages = {units.stage_of[b] for m in members if m.out
              for b in [units.block_of(m.name)] if b is not None}
    if stages:
        return "stream", max(stages, key=units.stage_index.__getitem__)
    return ("stem" if units.order[root] < units.first else "head"), ""


def _width_dims(found: list[tuple[ChannelGroup, str, str]], spec: SupernetSpec,
                units: _Units, dims: dict[str, tuple[float, Dim]]) -> list[ChannelGroup]:
    """Name each group's dimension, drop ratio choices that keep the same channels as a
    larger ratio, and drop groups whose dimension would have one choice."""
    width = spec.width
    assert width is not None
    by_dim: dict[str, list[ChannelGroup]] = defaultdict(list)
    keys: dict[str, float] = {}
    for group, kind, unit in found:
        if kind == "inner":
            if width.granularity == "stage":
                unit = units.stage_of[unit]
            name, key = f"{unit}.{width.name}", units.key(unit, 0)
        elif kind == "stream" and width.stream:
            name, key = f"{unit}.out_width", units.key(unit, 1)
        elif kind in ("stem", "head") and getattr(width, kind):
            name, key = f"{kind}.width", units.key(kind, 0)
        else:
            continue
        by_dim[name].append(group)
        keys[name] = key
    groups = []
    for name, members in by_dim.items():
        kept: dict[tuple[int, ...], float] = {}
        for ratio in width.ratios:  # ascending: a larger ratio replaces a smaller twin
            kept[tuple(keep_count(g.channels, ratio, width.divisor) for g in members)] = ratio
        if len(kept) < 2:
            continue
        dims[name] = (keys[name], Choice(sorted(kept.values())))
        groups.extend(ChannelGroup(g.root, g.channels, g.order, g.members, name)
                      for g in members)
    return groups


def _head_groups(attention: dict[str, nn.Module], spec: SupernetSpec, units: _Units,
                 dims: dict[str, tuple[float, Dim]]) -> list[HeadGroup]:
    heads_spec = spec.heads
    assert heads_spec is not None
    groups = []
    for name, m in attention.items():
        lo = max(1, math.ceil(heads_spec.min_ratio * m.num_heads - 1e-9))
        if lo >= m.num_heads:
            continue
        if heads_spec.granularity == "global":
            dim, key = "heads", units.key("heads", 0)
        else:
            block = units.block_of(name) or name
            dim, key = f"{block}.heads", units.key(block, 1)
        previous = dims.get(dim)
        if previous is not None and previous[1] != IntRange(lo, m.num_heads):
            raise ConfigError(f"spec {spec.source}: global heads need the same head count in "
                              "every attention module")
        dims[dim] = (key, IntRange(lo, m.num_heads))
        groups.append(HeadGroup(name, m.num_heads, m.head_dim, _head_order(m), dim))
    return groups


@torch.no_grad()
def _head_order(attn: nn.Module) -> tuple[int, ...]:
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv = attn.qkv.weight.detach().float().view(3, heads, head_dim, -1)
    proj = attn.proj.weight.detach().float().view(-1, heads, head_dim)
    score = qkv.pow(2).sum(dim=(0, 2, 3)) + proj.pow(2).sum(dim=(0, 2))
    return tuple(int(i) for i in torch.argsort(-score.cpu(), stable=True))


def _quant_units(model: nn.Module, spec: SupernetSpec, units: _Units,
                 dims: dict[str, tuple[float, Dim]]) -> list[QuantUnit]:
    quant = spec.quant
    assert quant is not None
    layers: dict[str, list[str]] = defaultdict(list)
    for name, m in model.named_modules():
        block = units.block_of(name)
        if block is not None and isinstance(m, _QUANTIZABLE):
            unit = units.stage_of[block] if quant.granularity == "stage" else block
            layers[unit].append(name)
    found = []
    for unit, names in layers.items():
        w_dim = a_dim = None
        if len(quant.w_bits) > 1:
            w_dim = f"{unit}.w_bits"
            dims[w_dim] = (units.key(unit, 2), Choice(list(quant.w_bits)))
        if len(quant.a_bits) > 1:
            a_dim = f"{unit}.a_bits"
            dims[a_dim] = (units.key(unit, 2.5), Choice(list(quant.a_bits)))
        found.append(QuantUnit(w_dim, a_dim, tuple(names)))
    return found
