"""The recovery phase: fine-tune the network with its gates fixed at the hardening decision.

The removed units are exactly zero from the first recovery step on, so what is trained here
is the network that hardening returns. Weights and quantizer steps follow the task loss
(distillation included) with BatchNorm in training mode, as fine-tuning after pruning does;
``checks`` checkpoints (the first before any recovery step) are scored on validation
accuracy after an exact BatchNorm recalibration on the training batches, and the best one is
kept; after ``patience`` checkpoints in a row without a better one the phase stops there
(early stopping on val: a network near its ceiling spends few steps, one far below it all).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from hybridmoo.quant.calibration import module_device
from hybridmoo.refine.gates import GatedNet
from hybridmoo.refine.prune import check_finite, check_losses, optimizer_params
from hybridmoo.refine.settings import RefineSettings
from hybridmoo.refine.task import task_loss, train_forward, unpack, val_accuracy
from hybridmoo.supernet.bn import recalibrate_bn


@dataclass
class RecoverLog:
    """Task loss (normalised) per recovery step, ``(step, val accuracy)`` per checkpoint, and
    the step of the checkpoint kept."""

    losses: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, float]] = field(default_factory=list)
    best_step: int = 0


def recover(gated: GatedNet, batches: Iterator[Any], optimizer: Any, scheduler: Any,
            settings: RefineSettings, task0: float, teacher: nn.Module | None,
            calib: list[Any], val: Dataset) -> RecoverLog:
    """Run ``settings.recovery_steps`` recovery steps on ``gated`` (its bank fixed) and leave
    it at the best checkpoint, BatchNorm recalibrated."""
    net = gated.net
    device = module_device(net)
    params = optimizer_params(optimizer)
    log = RecoverLog()
    every = max(1, -(-settings.recovery_steps // settings.checks))
    best, best_acc, stale = None, -1.0, 0
    for step in range(settings.recovery_steps + 1):
        if step % every == 0 or step == settings.recovery_steps:
            recalibrate_bn(net, calib)
            acc = val_accuracy(net, val)
            log.checkpoints.append((step, acc))
            if acc > best_acc:
                best, best_acc, log.best_step, stale = (copy.deepcopy(net.state_dict()), acc,
                                                         step, 0)
            else:
                stale += 1
        if step == settings.recovery_steps or (settings.patience and stale >= settings.patience):
            break
        x, y, target = unpack(next(batches), device)
        logits = train_forward(net, x)
        task = task_loss(logits, y, teacher, x, settings, target)
        value = float(task.detach())
        check_losses(np.array([value]), value, task0, float(np.log(logits.shape[-1])),
                     settings, step)
        optimizer.zero_grad(set_to_none=True)
        task.backward()
        check_finite(params, step)
        optimizer.step()
        scheduler.step()
        log.losses.append(value / max(task0, 1e-6))
    assert best is not None
    net.load_state_dict(best)
    return log
