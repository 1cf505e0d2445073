"""Calibration: run data through a module to fix the activation ranges of its FakeQuant layers
(onnxruntime's MinMax calibration: the overall min and max over every batch)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.quant.layers import FakeQuant


def batch_inputs(batches: Iterable[Any], device: torch.device) -> Iterator[torch.Tensor]:
    """The input tensor of each batch (a tensor, or the first item of a tuple/list), on
    ``device``."""
    for batch in batches:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"a batch must be a tensor or (tensor, ...), got {type(x).__name__}")
        yield x.to(device)


def module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter or buffer (CPU if it has none)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def forward_all(module: nn.Module, batches: Iterable[Any]) -> int:
    """Run ``module`` on every batch (inputs moved to its device); returns the batch count."""
    n = 0
    for x in batch_inputs(batches, module_device(module)):
        module(x)
        n += 1
    return n


@torch.no_grad()
def calibrate(module: nn.Module, batches: Iterable[Any]) -> int:
    """Reset and re-estimate the input range of every :class:`FakeQuant` in ``module`` from
    ``batches``, with the whole module running in FP32 (as onnxruntime calibrates the FP32
    graph). Returns the number of batches used."""
    quants = [m for m in module.modules() if isinstance(m, FakeQuant)]
    if not quants:
        raise ConfigError("the module has no FakeQuant layers to calibrate")
    was_training = module.training
    module.eval()
    for q in quants:
        q.act_range.fill_(float("nan"))
        q.observing = True
    try:
        n = forward_all(module, batches)
    finally:
        for q in quants:
            q.observing = False
        module.train(was_training)
    if n == 0:
        raise ConfigError("calibration got no batches")
    return n
