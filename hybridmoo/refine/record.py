"""What a refined network is, as a config: its parent's config with the hardened widths, and
the config of the search space nearest to it.

Refinement keeps the quantization policy and the blocks, and narrows channel groups and
attention heads. :func:`hardened_config` rewrites each width dimension of the supernet's space
as the width the hardened network has (kept channels / the supernet's channels of the group,
the widest group when one dimension controls several), each head dimension as the heads kept;
those values generally fall between the space's choices. :func:`space_config` maps them onto
the space, per dimension, to the nearest choice (a tie goes to the wider one, so the space's
network then holds the refined one): that is the refined record's ``config``, which the
proposers breed from. The exact widths stay in the record's ``info["hardened_config"]`` and
the network keeps the weights exported for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.quant import FakeQuant
from hybridmoo.space import Choice, IntRange, SearchSpace
from hybridmoo.supernet.supernet import Supernet

DECIMALS = 4


def hardened_config(supernet: Supernet, parent: Mapping[str, Any],
                    network: nn.Module) -> dict[str, Any]:
    """``parent`` with every width and head dimension set to what ``network`` has."""
    modules = dict(network.named_modules())
    config = dict(parent)
    widths: dict[str, float] = {}
    for g in supernet.layout.groups:
        layer = _layer(modules.get(g.root))
        channels = getattr(layer, "out_channels", getattr(layer, "out_features", None))
        if channels is not None and g.dim in config:
            widths[g.dim] = max(widths.get(g.dim, 0.0), int(channels) / g.channels)
    for dim, ratio in widths.items():
        config[dim] = round(ratio, DECIMALS)
    for h in supernet.layout.heads:
        heads = getattr(modules.get(h.attn), "num_heads", None)
        if heads is not None and h.dim in config:
            config[h.dim] = int(heads)
    return config


def space_config(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every value that is not in ``space`` replaced by its dimension's nearest
    value (numbers only; a tie goes to the larger value)."""
    out: dict[str, Any] = {}
    for name, dim in space.dims.items():
        value = config[name]
        out[name] = value if dim.contains(value) else _nearest(name, dim, value)
    return out


def _nearest(name: str, dim: Any, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}={value!r} is not in the space and not a number")
    if isinstance(dim, IntRange):
        return min(max(round(value), int(dim.lo)), int(dim.hi))
    assert isinstance(dim, Choice)
    numbers = [v for v in dim.values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        raise ConfigError(f"{name}={value!r}: the dimension has no numeric choice")
    return min(numbers, key=lambda v: (abs(v - value), -v))


def _layer(module: nn.Module | None) -> nn.Module | None:
    return module.layer if isinstance(module, FakeQuant) else module


def changes(parent: Mapping[str, Any], hardened: Mapping[str, Any], steps: int
            ) -> dict[str, Any]:
    """What refinement changed against the parent's config: ``structure`` (each dimension
    whose value changed, as ``[parent's, refined]``) and ``weights`` (it took training steps).
    The quantization policy is part of the config, so a changed bit-width shows there too."""
    structure = {name: [parent[name], value] for name, value in hardened.items()
                 if name in parent and value != parent[name]}
    return {"structure": structure, "weights": steps > 0}
