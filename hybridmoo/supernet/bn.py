"""BatchNorm recalibration: re-estimate running statistics of a (sub-)network from data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.quant.calibration import forward_all

_BN = nn.modules.batchnorm._BatchNorm


@torch.no_grad()
def recalibrate_bn(module: nn.Module, batches: Iterable[Any]) -> int:
    """Reset the running mean and variance of every BatchNorm in ``module`` and set them to
    the exact average over ``batches`` (the rest of the module runs in eval mode). Meant for
    an extracted sub-network; on a supernet it overwrites the statistics all sub-networks
    share. Returns the number of batches used."""
    bns = [m for m in module.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return 0
    was_training = module.training
    momenta = [bn.momentum for bn in bns]
    module.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
        bn.train()
    try:
        n = forward_all(module, batches)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        module.train(was_training)
    if n == 0:
        raise ConfigError("BatchNorm recalibration got no batches")
    return n
