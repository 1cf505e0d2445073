"""Run a sub-network on slices of the shared weights: what makes a small sub-network cheap.

For a :class:`Plan`, every layer of a removed channel group gets the rows (output channels)
and columns (input channels) it keeps, gathered from the shared tensors; attention modules
get the ``qkv`` rows and ``proj`` columns of their kept heads and run with fewer heads; a
removed block is not run. The kept channels of each layer are its remaining channels in
their original order, exactly as extraction (torch-pruning) leaves them, so the sliced forward
computes what the extracted network computes, at the extracted network's cost.

Gradients: with grad mode on, each sliced conv / linear weight is a leaf of its own whose
gradient, once ``backward`` has accumulated it, is added into the kept entries of the shared
weight's ``.grad`` (created full-size when missing). Adding a slice costs what the slice
costs, not the full tensor, so the second and later sub-networks of a sandwich step stay
cheap. Vectors (biases, BatchNorm scales and shifts) are sliced with plain autograd: their
full-size gradient is tiny. ``torch.autograd.grad`` with respect to the supernet's weights
does not see through the weight slices: use ``backward()``.

BatchNorm in training mode normalises with the batch statistics of the kept channels (as the
extracted network does); the running statistics of the kept channels are updated and written
back, those of removed channels and of removed blocks stay as they were.

A channel group whose layers hold tensors slicing does not know (an extra per-channel
parameter, a child with parameters) is masked instead (see :mod:`.masking`);
:func:`execution_plan` says which layers slice and which mask, and why.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from hybridmoo.supernet.channels import BN, channel_count, channel_dim, is_depthwise, module_device
from hybridmoo.supernet.layout import Layout, Member, Plan

_KNOWN_TENSORS: tuple[tuple[type, frozenset[str]], ...] = (
    (nn.Conv2d, frozenset({"weight", "bias"})),
    (nn.Linear, frozenset({"weight", "bias"})),
    (BN, frozenset({"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})),
)
_SIZE_ATTRS = {nn.Conv2d: ("out_channels", "in_channels"), nn.Linear: ("out_features",
                                                                        "in_features")}


@dataclass(frozen=True)
class ExecutionPlan:
    """How the supernet runs one config: layers on weight slices, layers masked (with the
    reason), blocks not run. A layer whose output channels and input channels belong to
    different groups can be in both lists: one dimension sliced, the other masked."""

    sliced: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    reasons: Mapping[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: counts, and the first masked layer with its reason."""
        text = (f"{len(self.sliced)} layers sliced, {len(self.masked)} masked, "
                f"{len(self.skipped)} blocks skipped")
        if self.masked:
            first = self.masked[0]
            text += f" (e.g. {first}: {self.reasons.get(first, 'masking mode')})"
        return text


def unsliceable_reason(module: nn.Module) -> str | None:
    """Why slicing cannot serve ``module`` (None when it can)."""
    known = next((names for kind, names in _KNOWN_TENSORS if isinstance(module, kind)), None)
    if known is None:
        return f"{type(module).__name__} is not a Conv2d, Linear or BatchNorm layer"
    own = {n for n, _ in module.named_parameters(recurse=False)}
    own |= {n for n, _ in module.named_buffers(recurse=False)}
    extra = sorted(own - known)
    if extra:
        return f"{type(module).__name__} holds {extra}, which slicing does not know"
    inner = [n for n, _ in module.named_parameters() if "." in n]
    if inner:
        return f"{type(module).__name__} has a child with parameters ({inner[0]})"
    if isinstance(module, nn.Conv2d) and module.groups > 1 and not is_depthwise(module):
        return "grouped convolution that is not depthwise"
    return None


class Keep:
    """The kept positions of one channel dimension, ascending: the first ``prefix`` ones
    (then slices are views), or else those ``index`` lists."""

    def __init__(self, size: int, removed: set[int], device: torch.device) -> None:
        k = size - len(removed)
        self.prefix: int | None = None
        self.index: torch.Tensor | None = None
        if not removed or (min(removed) == k and max(removed) == size - 1):
            self.prefix = k
        else:
            kept = sorted(set(range(size)) - removed)
            self.index = torch.tensor(kept, dtype=torch.long, device=device)
        self.count = k

    def __len__(self) -> int:
        return self.count


@dataclass
class LayerSlice:
    """The kept output / input channels of one layer (None: the whole dimension)."""

    out: Keep | None = None
    inp: Keep | None = None


class Slicer:
    """Turns plans of one model's :class:`Layout` into sliced executions."""

    def __init__(self, model: nn.Module, layout: Layout) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.groups = {g.root: g for g in layout.groups}
        self.heads = {h.attn: h for h in layout.heads}
        self._removals: dict[tuple[str, int], tuple[tuple[Member, list[int]], ...]] = {}
        self.masked_roots: dict[str, str] = {}
        for g in layout.groups:
            reason = next((r for m in g.members
                           if (r := unsliceable_reason(self.modules[m.name])) is not None), None)
            if reason is not None:
                self.masked_roots[g.root] = reason

    def split(self, plan: Plan) -> tuple[Plan, Plan]:
        """``plan`` as (what slices, what masks): channels of groups slicing cannot serve go
        to the masked part; heads, removed blocks and quantization stay in the sliced one."""
        masked = {r: p for r, p in plan.channels.items() if r in self.masked_roots}
        sliced = {r: p for r, p in plan.channels.items() if r not in self.masked_roots}
        return (Plan(sliced, plan.heads, plan.skip, plan.quant), Plan(masked, {}, (), plan.quant))

    def execution_plan(self, plan: Plan, mask_all: bool = False) -> ExecutionPlan:
        """Which layers of ``plan`` slice and which mask (``mask_all``: the masking mode)."""
        sliced_plan, masked_plan = (Plan(), plan) if mask_all else self.split(plan)
        sliced = set(self.layer_slices(sliced_plan))
        masked, reasons = set(), {}
        for root in masked_plan.channels:
            for m in self.groups[root].members:
                masked.add(m.name)
                reasons[m.name] = self.masked_roots.get(root, "masking mode")
        for attn in masked_plan.heads:
            masked.add(f"{attn}.proj")
            reasons[f"{attn}.proj"] = "masking mode"
        gone = tuple(f"{b}." for b in plan.skip)
        return ExecutionPlan(tuple(sorted(n for n in sliced if not n.startswith(gone))),
                             tuple(sorted(n for n in masked if not n.startswith(gone))),
                             tuple(plan.skip), reasons)

    def layer_slices(self, plan: Plan) -> dict[str, LayerSlice]:
        """Per layer name, the channels it keeps under ``plan`` (channels and heads only)."""
        removed: dict[tuple[str, bool], set[int]] = defaultdict(set)
        for root, root_pruned in plan.channels.items():
            for member, idxs in self._member_removals(root, root_pruned):
                module = self.modules[member.name]
                removed[(member.name, channel_dim(module, member.out) == 0)].update(idxs)
        for attn, heads in plan.heads.items():
            group = self.heads[attn]
            width = group.num_heads * group.head_dim
            channels = [h * group.head_dim + j for h in heads for j in range(group.head_dim)]
            removed[(f"{attn}.qkv", True)].update(p * width + c for p in range(3)
                                                  for c in channels)
            removed[(f"{attn}.proj", False)].update(channels)
        slices: dict[str, LayerSlice] = {}
        for (name, out), idxs in removed.items():
            if not idxs:
                continue
            module = self.modules[name]
            keep = Keep(channel_count(module, 0 if out else 1), idxs, module_device(module))
            entry = slices.setdefault(name, LayerSlice())
            if out:
                entry.out = keep
            else:
                entry.inp = keep
        return slices

    def _member_removals(self, root: str, root_pruned: frozenset[int]
                         ) -> tuple[tuple[Member, list[int]], ...]:
        key = (root, len(root_pruned))  # the pruned set is the order's tail: its size says it
        if key not in self._removals:
            self._removals[key] = tuple((m, m.pruned(root_pruned))
                                        for m in self.groups[root].members)
        return self._removals[key]


class SlicedRun:
    """One forward's sliced tensors (by parameter / buffer name), the attribute values the
    sliced layers run with, and the BatchNorm statistics to write back afterwards."""

    def __init__(self, modules: Mapping[str, nn.Module], slices: Mapping[str, LayerSlice],
                 heads: Mapping[str, int], skip: tuple[str, ...]) -> None:
        gone = tuple(f"{b}." for b in skip)
        self.modules = modules
        self.slices = {n: s for n, s in slices.items() if not n.startswith(gone)}
        self.heads = {a: k for a, k in heads.items() if not a.startswith(gone)}
        self.skip = skip
        self.tensors: dict[str, torch.Tensor] = {}
        self._stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        grad = torch.is_grad_enabled()
        for name, s in self.slices.items():
            module = modules[name]
            for key in ("weight", "bias") if s.out is not None else ("weight",):
                t = getattr(module, key, None)
                if isinstance(t, torch.Tensor):
                    vector = key == "bias" or t.dim() == 1
                    # a vector's full-size gradient is tiny: plain autograd serves it
                    leaf = grad and t.requires_grad and not vector
                    self.tensors[f"{name}.{key}"] = _gather(t, s, leaf, vector=vector)
            if isinstance(module, BN) and module.running_mean is not None:
                for key in ("running_mean", "running_var"):
                    full = getattr(module, key)
                    small = _gather(full, s, False, vector=True)
                    self.tensors[f"{name}.{key}"] = small
                    if module.training and s.out is not None and s.out.prefix is None:
                        self._stats.append((full, s.out.index.to(full.device), small))

    @contextlib.contextmanager
    def structure(self) -> Iterator[None]:
        """Sliced layers report their sliced sizes (as extraction leaves them), attention
        runs with its kept head count, removed blocks are replaced by ``nn.Identity``."""
        saved: list[tuple[object, str, object]] = []

        def put(obj: object, attr: str, value: object) -> None:
            saved.append((obj, attr, getattr(obj, attr)))
            _set(obj, attr, value)

        try:
            for name, s in self.slices.items():
                module = self.modules[name]
                if isinstance(module, BN):
                    put(module, "num_features", len(s.out) if s.out is not None
                        else module.num_features)
                    continue
                out_attr, in_attr = next(a for k, a in _SIZE_ATTRS.items()
                                         if isinstance(module, k))
                depthwise = is_depthwise(module)
                if s.out is not None:
                    put(module, out_attr, len(s.out))
                if depthwise:
                    put(module, "in_channels", len(s.out))
                    put(module, "groups", len(s.out))
                elif s.inp is not None:
                    put(module, in_attr, len(s.inp) * getattr(module, "groups", 1))
            for attn, kept in self.heads.items():
                module = self.modules[attn]
                put(module, "num_heads", kept)
                if hasattr(module, "attn_dim"):
                    put(module, "attn_dim", kept * module.head_dim)
            for block in self.skip:
                parent, _, child = block.rpartition(".")
                put(self.modules[parent], child, nn.Identity())
            yield
        finally:
            for obj, attr, value in reversed(saved):
                _set(obj, attr, value)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the updated running statistics of kept channels into the shared buffers."""
        for full, index, small in self._stats:
            full.index_copy_(0, index, small.to(full.dtype))


def _set(obj: object, attr: str, value: object) -> None:
    if attr in obj.__dict__ and not isinstance(value, nn.Module):
        obj.__dict__[attr] = value  # a plain attribute: skip nn.Module.__setattr__ (hot path)
    else:
        setattr(obj, attr, value)


def _gather(t: torch.Tensor, s: LayerSlice, leaf: bool, vector: bool) -> torch.Tensor:
    """The kept part of ``t`` (a view where the kept channels are prefixes); as a leaf whose
    gradient is added into ``t.grad`` when ``leaf``. ``vector``: a per-output-channel tensor
    (bias, BatchNorm tensors)."""
    out = s.out
    inp = None if vector or t.dim() < 2 else s.inp
    view = _narrow(t.detach() if leaf else t, out, inp)
    out_index = out.index.to(t.device) if out is not None and out.prefix is None else None
    in_index = inp.index.to(t.device) if inp is not None and inp.prefix is None else None
    pairs = None
    if out_index is not None and in_index is not None:  # one gather over (out, in) pairs
        pairs = (out_index[:, None] * t.shape[1] + in_index[None, :]).flatten()
        small = view.reshape(t.shape[0] * t.shape[1], -1).index_select(0, pairs).view(
            len(out_index), len(in_index), *t.shape[2:])
    elif out_index is not None:
        small = view.index_select(0, out_index)
    elif in_index is not None:
        small = view.index_select(1, in_index)
    else:
        small = view
    if leaf:
        small.requires_grad_(True)
        small.register_post_accumulate_grad_hook(
            functools.partial(_add_grad, t, out, inp, out_index, in_index, pairs))
    return small


def _narrow(t: torch.Tensor, out: Keep | None, inp: Keep | None) -> torch.Tensor:
    """``t`` narrowed to the prefixes among ``out`` (dim 0) and ``inp`` (dim 1): a view."""
    if out is not None and out.prefix is not None:
        t = t.narrow(0, 0, out.prefix)
    if inp is not None and inp.prefix is not None:
        t = t.narrow(1, 0, inp.prefix)
    return t


def _add_grad(param: torch.Tensor, out: Keep | None, inp: Keep | None,
              out_index: torch.Tensor | None, in_index: torch.Tensor | None,
              pairs: torch.Tensor | None, small: torch.Tensor) -> None:
    """Add the slice's gradient into the kept entries of ``param.grad`` (the inverse of
    :func:`_gather`)."""
    grad, small.grad = small.grad, None
    if grad is None:
        return
    with torch.no_grad():
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        target = _narrow(param.grad, out, inp)
        if pairs is not None:
            rows = target.view(param.shape[0] * param.shape[1], -1)
            rows.index_add_(0, pairs, grad.reshape(len(pairs), -1))
        elif out_index is not None:
            target.index_add_(0, out_index, grad)
        elif in_index is not None:
            target.index_add_(1, in_index, grad)
        else:
            target.add_(grad)
