"""What a refined network is, as a config: its parent's config with the hardened widths.

Refinement keeps the quantization policy and the blocks, and narrows channel groups and
attention heads. Each width dimension of the supernet's space is rewritten as the width the
hardened network has (kept channels / the supernet's channels of the group, the widest group
when one dimension controls several), each head dimension as the heads kept; the values are
then generally not in the search space, which is right: the record describes the network it
is, and its lineage stays in ``parents``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from hybridmoo.quant import FakeQuant
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


def _layer(module: nn.Module | None) -> nn.Module | None:
    return module.layer if isinstance(module, FakeQuant) else module
