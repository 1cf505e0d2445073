"""Facts about one elastic layer's channel dimensions, shared by analysis, reordering,
masking and slicing."""

from __future__ import annotations

import torch
from torch import nn

BN = nn.modules.batchnorm._BatchNorm


def is_depthwise(module: nn.Module) -> bool:
    """True for a depthwise convolution (one group per channel)."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and (
        module.groups == module.in_channels == module.out_channels)


def channel_dim(module: nn.Module, out: bool) -> int:
    """The weight dimension a group member's channels lie on: 0 for output channels and for
    layers with one channel dimension (BatchNorm, depthwise convolution), else 1."""
    return 0 if out or isinstance(module, BN) or is_depthwise(module) else 1


def channel_count(module: nn.Module, dim: int) -> int:
    """How many channels ``module`` has on weight dimension ``dim``."""
    if isinstance(module, BN):
        return int(module.num_features)
    return int(module.weight.shape[dim])


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s own tensors are (CPU when it has none)."""
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return tensors[0].device if tensors else torch.device("cpu")
