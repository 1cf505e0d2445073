"""Differentiable gates on an extracted sub-network.

:func:`find_groups` finds what can still shrink in a physically pruned network: the coupled
channel groups of torch-pruning's DependencyGraph (the members the supernet analysis accepts)
and the heads of timm Attention modules. Each group gets a hard-concrete gate per channel or
head (Louizos et al. 2018). One gate function serves training, cost and hardening: training
forwards draw ``z`` from the hard-concrete distribution, the cost counts a unit as kept with
probability ``P(z > 0.5) = sigmoid(log_alpha)``, and hardening keeps a unit exactly when its
test-time gate exceeds 0.5, i.e. when ``log_alpha > 0``. A unit with ``log_alpha`` above log 11
has a test-time gate of exactly 1, so a network gated at such an init computes what the plain
one does; :meth:`GateBank.fix` pins every gate to 0 or 1 (the hardening decision) for recovery.

A gate is applied where a group's channels are *consumed*: :class:`GatedLayer` multiplies the
input columns of every dense Conv/Linear consumer (and, for heads, of the attention
projection) by the gate, ``layer(g * x) == layer_with(W * g)(x)``. Everything between a
channel's producers and its consumers is channel-wise (BatchNorm, activations, residual adds,
squeeze-excite products), so a gate of 0 is exactly that channel pruned, and hardening folds
the surviving gates into those same weight columns.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn
from torch.func import functional_call

from hybridmoo.quant import FakeQuant, act_qparams, fake_quant_act, fake_quant_bias
from hybridmoo.refine.lsq import initial_steps, lsq_weight
from hybridmoo.supernet.analysis import group_members  # the analysis' rules for members
from hybridmoo.supernet.layout import Member

FP32 = 32
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # hard-concrete temperature and stretch


@dataclass(frozen=True)
class GateGroup:
    """Channels (or heads) that are kept or removed together. A channel group lists its
    members (as in the supernet layout); a head group names its attention module and
    ``head_dim``."""

    name: str
    size: int
    members: tuple[Member, ...] = ()
    head_dim: int = 0

    @property
    def is_heads(self) -> bool:
        return self.head_dim > 0


@dataclass(frozen=True)
class Segment:
    """Positions ``idxs`` of one layer dimension follow units ``units`` of gate ``group``."""

    group: int
    idxs: tuple[int, ...]
    units: tuple[int, ...]


@dataclass
class LayerDims:
    """The gate segments of one layer's output and input dimension."""

    out: list[Segment] = field(default_factory=list)
    inp: list[Segment] = field(default_factory=list)


def plain_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` with every FakeQuant replaced by its wrapped layer (same names
    as the supernet's), which torch-pruning can trace."""
    copied = copy.deepcopy(net)
    for name, module in list(copied.named_modules()):
        if isinstance(module, FakeQuant):
            set_module(copied, name, module.layer)
    return copied


def find_groups(plain: nn.Module, example: torch.Tensor) -> list[GateGroup]:
    """The prunable channel groups (two channels or more, not touching attention) and head
    groups (two heads or more) of a FakeQuant-free network, traced with ``example``."""
    attention = attention_modules(plain)
    names = {id(m): n for n, m in plain.named_modules()}
    classifier = plain.get_classifier() if hasattr(plain, "get_classifier") else None
    ignored = [classifier] if isinstance(classifier, nn.Module) else []
    was_training = plain.training
    plain.eval()
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(plain, example, verbose=False)
    finally:
        plain.train(was_training)
    prefixes = tuple(f"{a}." for a in attention)
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored,
                                      root_module_types=(nn.Conv2d, nn.Linear)):
        members = group_members(group, graph, names, prefixes)
        if members is not None and len(group[0].idxs) >= 2:
            root = names[id(group[0].dep.target.module)]
            groups.append(GateGroup(root, len(group[0].idxs), tuple(members)))
    groups += [GateGroup(name, int(m.num_heads), head_dim=int(m.head_dim))
               for name, m in attention.items() if m.num_heads >= 2]
    return groups


def attention_modules(net: nn.Module) -> dict[str, nn.Module]:
    """timm-style Attention modules (fused ``qkv``, ``proj``, ``num_heads``, ``head_dim``, no
    scale norm or gate) by name."""
    found = {}
    for name, m in net.named_modules():
        qkv, proj = _unwrap(getattr(m, "qkv", None)), _unwrap(getattr(m, "proj", None))
        heads, head_dim = getattr(m, "num_heads", None), getattr(m, "head_dim", None)
        if (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)
                and isinstance(heads, int) and isinstance(head_dim, int)
                and isinstance(getattr(m, "norm", nn.Identity()), nn.Identity)
                and getattr(m, "gate", None) is None
                and qkv.out_features == 3 * heads * head_dim
                and proj.in_features == heads * head_dim):
            found[name] = m
    return found


def layer_dims(groups: list[GateGroup]) -> dict[str, LayerDims]:
    """For each layer a gate reaches, which gates its output and input positions follow (an
    attention module's "output" is its heads)."""
    dims: dict[str, LayerDims] = {}
    for g, group in enumerate(groups):
        if group.is_heads:
            width = group.size * group.head_dim
            qkv = dims.setdefault(f"{group.name}.qkv", LayerDims())
            qkv.out.append(Segment(g, tuple(range(3 * width)),
                                   tuple((o % width) // group.head_dim for o in range(3 * width))))
            proj = dims.setdefault(f"{group.name}.proj", LayerDims())
            proj.inp.append(Segment(g, tuple(range(width)),
                                    tuple(c // group.head_dim for c in range(width))))
            heads = tuple(range(group.size))
            dims.setdefault(group.name, LayerDims()).out.append(Segment(g, heads, heads))
            continue
        for m in group.members:
            entry = dims.setdefault(m.name, LayerDims())
            (entry.out if m.out else entry.inp).append(Segment(g, m.idxs, m.root_idxs))
    return dims


class GateBank(nn.Module):
    """One hard-concrete gate vector per group. :meth:`refresh` draws the gates once per
    network forward (every consumer of a group sees the same sample); with ``stochastic``
    off they are the deterministic test-time gates, and once :meth:`fix` ran they are the
    fixed 0/1 decisions."""

    def __init__(self, groups: list[GateGroup], init: float, seed: int) -> None:
        super().__init__()
        self.log_alpha = nn.ParameterList(
            [nn.Parameter(torch.full((g.size,), float(init))) for g in groups])
        self.stochastic = False
        self.generator = torch.Generator().manual_seed(seed)
        self.values: list[torch.Tensor] = []
        self.fixed: list[torch.Tensor] | None = None

    def refresh(self) -> None:
        if self.fixed is not None:
            self.values = list(self.fixed)
            return
        self.values = [self._gate(la) for la in self.log_alpha]

    def _gate(self, log_alpha: torch.Tensor) -> torch.Tensor:
        if self.stochastic:
            u = torch.rand(log_alpha.shape, generator=self.generator).clamp(1e-6, 1 - 1e-6)
            u = u.to(log_alpha.device)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
            return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
        return self._gate_det(log_alpha)

    @torch.no_grad()
    def test_gates(self) -> list[torch.Tensor]:
        """The deterministic gates in [0, 1] (what hardening thresholds at 0.5), or the fixed
        decisions."""
        if self.fixed is not None:
            return [f.clone() for f in self.fixed]
        return [self._gate_det(la) for la in self.log_alpha]

    @staticmethod
    def _gate_det(log_alpha: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def keep_probs(self) -> list[torch.Tensor]:
        """P(z > 0.5) = sigmoid(log_alpha) per unit, differentiable: the probability that a
        sampled gate is above the hardening threshold (below 0.5 exactly for the units
        hardening removes); the fixed decisions once :meth:`fix` ran."""
        if self.fixed is not None:
            return list(self.fixed)
        return [torch.sigmoid(la) for la in self.log_alpha]

    @torch.no_grad()
    def fix(self, kept: list[list[int]]) -> None:
        """Pin the gates to the hardening decision: 1 for the ``kept`` units of each group,
        0 for the others (the gates stop learning)."""
        self.fixed = []
        for la, keep in zip(self.log_alpha, kept, strict=True):
            mask = torch.zeros_like(la)
            mask[list(keep)] = 1.0
            self.fixed.append(mask)
            la.requires_grad_(False)
        self.refresh()


def gate_vector(size: int, segments: list[Segment], per_group: list[torch.Tensor],
                device: torch.device) -> torch.Tensor:
    """Length-``size`` vector: 1 where no gate applies, the group's unit value elsewhere."""
    vec = torch.ones(size, device=device)
    for seg in segments:
        idxs = torch.tensor(seg.idxs, device=device)
        units = torch.tensor(seg.units, device=per_group[seg.group].device)
        vec = vec.index_put((idxs,), per_group[seg.group][units].to(device))
    return vec


class GatedLayer(nn.Module):
    """A Conv2d/Linear (plain or inside a FakeQuant) run with gated input columns and, when
    its weights are quantized, a learnable per-channel step size (LSQ, as ``log_step``).
    Activations are fake-quantized with the FakeQuant's calibrated range, as FakeQuant does."""

    def __init__(self, original: nn.Module, bank: GateBank, inputs: list[Segment]) -> None:
        super().__init__()
        self.original = original
        quant = isinstance(original, FakeQuant)
        self.w_bits = original.w_bits if quant else FP32
        self.a_bits = original.a_bits if quant else FP32
        self.inputs = inputs
        # the bank is shared by many layers: a plain reference, not a submodule
        object.__setattr__(self, "bank", bank)
        self.log_step = (nn.Parameter(initial_steps(self.layer.weight, self.w_bits).log())
                         if self.w_bits < FP32 else None)

    @property
    def layer(self) -> nn.Module:
        """The wrapped Conv2d / Linear."""
        return self.original.layer if isinstance(self.original, FakeQuant) else self.original

    def gated_weight(self) -> torch.Tensor:
        """The weight with the current gates folded into its input columns."""
        weight = self.layer.weight
        if not self.inputs:
            return weight
        gate = gate_vector(weight.shape[1], self.inputs, self.bank.values, weight.device)
        return weight * gate.view(1, -1, *([1] * (weight.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.gated_weight()
        bias = self.layer.bias
        scale = zero_point = None
        if self.a_bits < FP32:
            scale, zero_point = act_qparams(self.original.act_range[0],
                                            self.original.act_range[1])
            x = fake_quant_act(x, scale, zero_point)
        if self.w_bits < FP32:
            assert self.log_step is not None
            weight, steps = lsq_weight(weight, self.log_step.exp(), self.w_bits)
            if scale is not None and bias is not None:
                bias = fake_quant_bias(bias, scale, steps)
        params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        return functional_call(self.layer, params, (x,))


@dataclass
class GatedNet:
    """A network with gates attached (in place): the bank, the wrapped layers by name and the
    forward pre-hook that draws the gates."""

    net: nn.Module
    groups: list[GateGroup]
    dims: dict[str, LayerDims]
    bank: GateBank
    layers: dict[str, GatedLayer]
    handle: torch.utils.hooks.RemovableHandle

    def parameters_by_role(self) -> tuple[list[nn.Parameter], list[nn.Parameter],
                                          list[nn.Parameter]]:
        """(weights, quantizer log-step sizes, gate parameters)."""
        steps = [lay.log_step for lay in self.layers.values() if lay.log_step is not None]
        other = {id(p) for p in [*self.bank.parameters(), *steps]}
        weights = [p for p in self.net.parameters() if id(p) not in other]
        return weights, steps, list(self.bank.parameters())


def attach(net: nn.Module, groups: list[GateGroup], *, init: float, seed: int) -> GatedNet:
    """Wrap (in place) every layer of ``net`` that consumes a gated group or quantizes its
    weights in a :class:`GatedLayer`; gates start at ``log_alpha = init``."""
    bank = GateBank(groups, init, seed)
    dims = layer_dims(groups)
    layers = {}
    for name, module in _outer_modules(net):
        layer = _unwrap(module)
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        inputs = [] if _depthwise(layer) else dims.get(name, LayerDims()).inp
        quantized = isinstance(module, FakeQuant) and module.w_bits < FP32
        if inputs or quantized or (isinstance(module, FakeQuant) and module.a_bits < FP32):
            layers[name] = GatedLayer(module, bank, inputs)
    for name, wrapped in layers.items():
        set_module(net, name, wrapped)
    handle = net.register_forward_pre_hook(lambda _m, _args: bank.refresh())
    bank.refresh()
    return GatedNet(net, groups, dims, bank, layers, handle)


def _outer_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named modules, leaving out the layers inside FakeQuant / GatedLayer wrappers."""
    modules = list(net.named_modules())
    inner = {id(m.layer) for _, m in modules if isinstance(m, FakeQuant | GatedLayer)}
    inner |= {id(m.original) for _, m in modules if isinstance(m, GatedLayer)}  # a FakeQuant
    return [(n, m) for n, m in modules if id(m) not in inner]


def _unwrap(module: nn.Module | None) -> nn.Module | None:
    if isinstance(module, FakeQuant | GatedLayer):
        return module.layer
    return module


def _depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1


def set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
