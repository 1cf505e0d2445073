"""The structure of a pruned timm network as plain JSON, and the network rebuilt from it.

``describe(net)`` compares ``net`` with a freshly created ``timm.create_model(architecture)``
and records only what differs: blocks replaced by ``nn.Identity``, the input/output channel
counts of layers that torch-pruning shrank, other tensors whose shapes changed, the head count
of attention modules, and the ``(w_bits, a_bits)`` of :class:`~hybridmoo.quant.FakeQuant`
layers. ``rebuild(description)`` creates the same timm model and replays those changes ("shape
replay": torch-pruning's per-layer functions remove trailing channels, so layer attributes such
as ``out_channels`` or ``num_features`` stay consistent); loading the saved state dict then
fills in the values. The description is untrusted input when read from disk: every name must
be a module of the created model and every number a plain int.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.quant import FakeQuant, wrap_layers
from hybridmoo.supernet.models import architecture_of

FORMAT = 1
HEAD_ATTRS = ("num_heads", "attn_dim", "head_dim")  # attention sizes extraction may change
KWARGS = ("num_classes", "in_chans", "img_size")  # timm.create_model arguments we record


def describe(net: nn.Module) -> dict[str, Any]:
    """What distinguishes ``net`` (a timm model, possibly pruned, with blocks removed and
    layers wrapped in FakeQuant) from a fresh model of its architecture, as JSON-able data."""
    arch = architecture_of(net)
    if arch is None:
        raise ConfigError(f"cannot describe a {type(net).__name__}: not a timm model (its "
                          "pretrained_cfg names no architecture)")
    modules, quant = _unwrapped(net)
    kwargs = _creation_kwargs(net, modules)
    ref = create(arch, kwargs)
    if _img_size(ref) is not None and _img_size(ref) != _img_size(net):
        kwargs["img_size"] = _img_size(net)
        ref = create(arch, kwargs)
    ref_modules = dict(ref.named_modules())
    removed, channels, tensors, heads = [], {}, {}, {}
    for name, m in modules.items():
        r = ref_modules.get(name)
        if r is None:
            raise ConfigError(f"cannot describe {arch}: module {name!r} is not in the timm model")
        if isinstance(m, nn.Identity) and not isinstance(r, nn.Identity):
            removed.append(name)
            continue
        if type(m) is not type(r) and not (_eval_noop(m) and _eval_noop(r)):
            raise ConfigError(f"cannot describe {arch}: {name!r} is a {type(m).__name__} where "
                              f"the timm model has a {type(r).__name__}")
        pruner = _pruner(r)
        if pruner is not None:
            size = {"out": pruner.get_out_channels(m), "in": pruner.get_in_channels(m)}
            if size != {"out": pruner.get_out_channels(r), "in": pruner.get_in_channels(r)}:
                channels[name] = {k: int(v) for k, v in size.items()}
        else:
            for key, t in _own_tensors(m).items():
                ref_t = _own_tensors(r).get(key)
                if ref_t is None or t.shape != ref_t.shape:
                    tensors[f"{name}.{key}" if name else key] = [int(s) for s in t.shape]
        attrs = {a: int(getattr(m, a)) for a in HEAD_ATTRS
                 if isinstance(getattr(m, a, None), int) and getattr(m, a) != getattr(r, a, None)}
        if attrs:
            heads[name] = attrs
    return {"format": FORMAT, "architecture": arch, "kwargs": kwargs, "removed": removed,
            "channels": channels, "tensors": tensors, "heads": heads, "quant": quant}


def rebuild(description: Mapping[str, Any]) -> nn.Module:
    """A fresh network with the structure ``description`` records (random weights: load the
    saved state dict into it), in eval mode."""
    d = _checked(description)
    net = create(d["architecture"], d["kwargs"])
    modules = dict(net.named_modules())
    for name in d["removed"]:
        parent, child = _parent(modules, name)
        setattr(parent, child, nn.Identity())
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name, size in d["channels"].items():
            _shrink(_module(modules, name), name, size["out"], size["in"])
        for key, shape in d["tensors"].items():
            owner, _, attr = key.rpartition(".")
            _resize(_module(modules, owner), attr, shape, key)
    for name, attrs in d["heads"].items():
        m = _module(modules, name)
        for attr, value in attrs.items():
            if not isinstance(getattr(m, attr, None), int):
                raise ConfigError(f"structure: module {name!r} has no int attribute {attr!r}")
            setattr(m, attr, value)
    if d["quant"]:
        wrap_layers(net, {k: (v["w_bits"], v["a_bits"]) for k, v in d["quant"].items()})
    return net.eval()


def load_state(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` into a rebuilt ``net`` strictly (every key, every shape)."""
    try:
        net.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), "")
        raise ConfigError(f"{source}: the weights do not fit the recorded structure: "
                          f"{first or exc}") from None
    return net


def create(architecture: str, kwargs: Mapping[str, int]) -> nn.Module:
    """``timm.create_model(architecture, pretrained=False, **kwargs)`` (never downloads)."""
    import timm

    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise ConfigError(f"structure: {architecture!r} is not a timm model name")
    try:
        return timm.create_model(architecture, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"structure: cannot create {architecture} with {dict(kwargs)}: "
                          f"{exc}") from None


def _unwrapped(net: nn.Module) -> tuple[dict[str, nn.Module], dict[str, dict[str, int]]]:
    """Modules by name with each FakeQuant seen as the layer it wraps, and the quant policy."""
    modules: dict[str, nn.Module] = {}
    quant: dict[str, dict[str, int]] = {}
    wrapped: set[str] = set()
    for name, m in net.named_modules():
        if name in wrapped:
            continue
        if isinstance(m, FakeQuant):
            quant[name] = {"w_bits": m.w_bits, "a_bits": m.a_bits}
            wrapped.add(f"{name}.layer" if name else "layer")
            m = m.layer
        modules[name] = m
    return modules, quant


def _creation_kwargs(net: nn.Module, modules: Mapping[str, nn.Module]) -> dict[str, int]:
    kwargs: dict[str, int] = {}
    num_classes = getattr(net, "num_classes", None)
    if isinstance(num_classes, int):
        kwargs["num_classes"] = num_classes
    first = next((m for m in modules.values() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        kwargs["in_chans"] = int(first.in_channels)
    return kwargs


def _img_size(net: nn.Module) -> int | None:
    size = getattr(getattr(net, "patch_embed", None), "img_size", None)
    if isinstance(size, tuple | list) and size:
        return int(size[-1])
    return None


def _eval_noop(module: nn.Module) -> bool:
    """Dropout-like modules (timm's DropPath, DropBlock): identities in eval mode, so a model
    trained with ``drop_path_rate`` is rebuilt without them."""
    return (isinstance(module, nn.Identity | nn.modules.dropout._DropoutNd)
            or type(module).__name__ in ("DropPath", "DropBlock2d")) \
        and not _own_tensors(module)


def _pruner(module: nn.Module) -> Any:
    return tp.pruner.function.PrunerBox.get(tp.ops.module2type(module))


def _own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    own = {k: v for k, v in module.named_parameters(recurse=False)}
    own.update({k: v for k, v in module.named_buffers(recurse=False) if v is not None})
    return own


def _checked(d: Mapping[str, Any]) -> dict[str, Any]:
    """The description with every field type-checked (it may come from an edited file)."""
    if not isinstance(d, Mapping) or d.get("format") != FORMAT:
        fmt = d.get("format") if isinstance(d, Mapping) else type(d).__name__
        raise ConfigError(f"structure: unknown format {fmt!r} (expected {FORMAT})")
    kwargs = _mapping(d, "kwargs")
    for k, v in kwargs.items():
        if k not in KWARGS:
            raise ConfigError(f"structure: unknown creation argument {k!r}")
        _count(v, f"kwargs.{k}")
    removed = d.get("removed")
    if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
        raise ConfigError("structure: 'removed' must be a list of module names")
    channels = _mapping(d, "channels")
    for name, size in channels.items():
        if not isinstance(size, Mapping) or set(size) != {"out", "in"}:
            raise ConfigError(f"structure: channels of {name!r} must be {{out, in}}")
        for k, v in size.items():
            _count(v, f"channels.{name}.{k}")
    tensors = _mapping(d, "tensors")
    for key, shape in tensors.items():
        if not isinstance(shape, list):
            raise ConfigError(f"structure: the shape of {key!r} must be a list of ints")
        for s in shape:
            _count(s, f"tensors.{key}", zero=True)
    heads = _mapping(d, "heads")
    for name, attrs in heads.items():
        if not isinstance(attrs, Mapping) or not set(attrs) <= set(HEAD_ATTRS):
            raise ConfigError(f"structure: heads of {name!r} may only set {list(HEAD_ATTRS)}")
        for k, v in attrs.items():
            _count(v, f"heads.{name}.{k}")
    quant = _mapping(d, "quant")
    for name, bits in quant.items():
        if not isinstance(bits, Mapping) or set(bits) != {"w_bits", "a_bits"}:
            raise ConfigError(f"structure: quant of {name!r} must be {{w_bits, a_bits}}")
        for k, v in bits.items():
            _count(v, f"quant.{name}.{k}")
    return {"architecture": d.get("architecture"), "kwargs": dict(kwargs), "removed": removed,
            "channels": channels, "tensors": tensors, "heads": heads, "quant": quant}


def _mapping(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = d.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"structure: {key!r} must be a mapping, got {type(value).__name__}")
    return value


def _count(value: Any, what: str, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise ConfigError(f"structure: {what} must be a positive int, got {value!r}")
    return value


def _module(modules: Mapping[str, nn.Module], name: str) -> nn.Module:
    if name not in modules:
        raise ConfigError(f"structure: {name!r} is not a module of the rebuilt model")
    return modules[name]


def _parent(modules: Mapping[str, nn.Module], name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    parent = _module(modules, parent_name)
    if not name or child not in parent._modules:
        raise ConfigError(f"structure: {name!r} is not a module of the rebuilt model")
    return parent, child


def _shrink(module: nn.Module, name: str, out: int, in_: int) -> None:
    pruner = _pruner(module)
    if pruner is None:
        raise ConfigError(f"structure: {name!r} ({type(module).__name__}) has no channels to "
                          "prune")
    for to_output, target in ((True, out), (False, in_)):
        current = (pruner.get_out_channels if to_output else pruner.get_in_channels)(module)
        if target > current:
            raise ConfigError(f"structure: {name!r} cannot grow from {current} to {target} "
                              f"{'output' if to_output else 'input'} channels")
        if target < current:
            pruner(module, list(range(target, current)), to_output=to_output)


def _resize(module: nn.Module, attr: str, shape: list[int], key: str) -> None:
    """Give a tensor torch-pruning has no function for (a class token, a layer scale) the
    recorded shape; its values come from the state dict."""
    if attr in module._parameters and module._parameters[attr] is not None:
        old = module._parameters[attr]
        module._parameters[attr] = nn.Parameter(old.new_empty(shape),
                                                requires_grad=old.requires_grad)
    elif attr in module._buffers and module._buffers[attr] is not None:
        module._buffers[attr] = module._buffers[attr].new_empty(shape)
    else:
        raise ConfigError(f"structure: {key!r} is not a tensor of the rebuilt model")
