"""Refine one network: prune under a cost target, recover, harden, keep it only if it helps.

1. Gates on the coupled channel groups and heads, learned quantizer step sizes (LSQ).
2. Pruning phase (:mod:`hybridmoo.refine.prune`): weights and steps follow the task loss,
   the gates the solver's direction over [task, latency, size] under the preference, with a
   multiplier that holds the *hardened* cost at the preference's target.
3. The gates are fixed at the hardening decision; recovery phase
   (:mod:`hybridmoo.refine.recover`): the network hardening returns is fine-tuned, the best
   validation checkpoint kept.
4. Hardening (exact: every gate is 0 or 1), BatchNorm and activation-range recalibration on
   the training batches.
5. The verdict on val (:mod:`hybridmoo.refine.decide`): a network that does not improve on
   its parent for its preference is rolled back.

The objectives, each divided by its value at the start: ``task``, cross-entropy mixed with
KL distillation from the teacher (a network, or its logits on every training example); the
``latency`` the latency model predicts from the expected per-layer costs (MACs without a
fitted model); the expected ``size`` in bytes.

A non-finite loss or gradient ends the refinement, and so does a task loss above both
``max_loss_ratio`` times its start value and the cross-entropy of a uniform guess. The input
network is then returned untouched with the reason, as for a roll-back; nothing is written.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridmoo.data import ImageData
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency_model import LatencyModel
from hybridmoo.quant import FakeQuant
from hybridmoo.quant import calibrate as calibrate_quant
from hybridmoo.quant.calibration import module_device
from hybridmoo.refine.costs import macs_model, profile
from hybridmoo.refine.decide import judge
from hybridmoo.refine.gates import GatedNet, attach, find_groups, plain_copy
from hybridmoo.refine.harden import harden
from hybridmoo.refine.prune import OBJECTIVES, PruneLog, Stop, costs_of, decision, prune
from hybridmoo.refine.recover import recover
from hybridmoo.refine.settings import RefineSettings
from hybridmoo.refine.task import (
    calibration_batches,
    decision_set,
    distill_set,
    first_batches,
    mean_task_loss,
    task_loss,
    teacher_logits,
    training_batches,
    val_accuracy,
)
from hybridmoo.supernet.bn import recalibrate_bn

GATE_INIT = 3.0  # above log 11: every gate exactly 1 until the masks are fixed

__all__ = ["OBJECTIVES", "RefineOutcome", "calibration_batches", "check_preference",
           "refine_network", "task_loss", "teacher_logits", "training_batches"]


@dataclass
class RefineOutcome:
    """What refining one network gave. ``network`` is the hardened network, or the input
    network itself (unchanged) when ``ok`` is False (a failure, or ``rolled_back``).
    ``losses``: normalised ``[task, latency, size]`` per pruning step; ``gate_weights``: the
    solver's weights on the gates per step; ``hard_costs``: the hardened cost (fraction of the
    start, preference-weighted) per pruning step, aimed at ``target``; ``recovery_losses``:
    normalised task loss per recovery step; ``checkpoints``: ``(step, val accuracy)``.
    Costs are the cost model's ``macs``, ``bytes`` and ``latency``: ``initial_costs`` of the
    input network, ``soft_costs`` of the soft gates at the end of pruning, ``final_costs`` of
    the hardened network. ``channels`` maps each gate group to ``(kept, total)`` units;
    ``val_accuracy``: ``(parent, refined)`` on the decision examples; ``gains`` and ``score``
    are the verdict's (:mod:`hybridmoo.refine.decide`)."""

    network: nn.Module
    ok: bool
    reason: str | None = None
    rolled_back: bool = False
    losses: list[list[float]] = field(default_factory=list)
    gate_weights: list[list[float]] = field(default_factory=list)
    hard_costs: list[float] = field(default_factory=list)
    target: float = 1.0
    recovery_losses: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, float]] = field(default_factory=list)
    initial_costs: dict[str, float] = field(default_factory=dict)
    soft_costs: dict[str, float] = field(default_factory=dict)
    final_costs: dict[str, float] = field(default_factory=dict)
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)
    start_task_loss: float = math.nan
    guarded_steps: int = 0
    val_accuracy: tuple[float, float] = (math.nan, math.nan)
    gains: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    score: float = math.nan


def refine_network(net: nn.Module, *, data: ImageData, settings: RefineSettings,
                   preference: np.ndarray | None = None,
                   teacher: nn.Module | torch.Tensor | None = None,
                   latency_model: LatencyModel | None = None, example: torch.Tensor | None = None,
                   references: np.ndarray | None = None, index: int = 0) -> RefineOutcome:
    """Refine a copy of ``net`` (an extracted sub-network) under ``preference`` over
    ``[task, latency, size]`` (default uniform): the steps on ``data.train``, every decision
    on ``data.val``. ``example`` is one input batch for tracing (default: the first training
    image); ``references`` and ``index`` are Pareto MTL's reference vectors and this
    network's row among them; ``teacher`` is a network or its logits on ``data.train``
    (:func:`teacher_logits`)."""
    if not isinstance(settings, RefineSettings):
        raise ConfigError(f"settings must be RefineSettings, got {type(settings).__name__}")
    pref = check_preference(preference, settings.solver)
    work = copy.deepcopy(net).eval()
    device = module_device(work)
    calib = calibration_batches(data, settings)
    example = (data.train[0][0].unsqueeze(0) if example is None else example).to(device)
    if any(isinstance(m, FakeQuant) and m.a_bits < 32 and torch.isnan(m.act_range).any()
           for m in work.modules()):
        calibrate_quant(work, calib)
    val = decision_set(data, settings)
    parent_acc = val_accuracy(work, val)
    plain = plain_copy(work)
    groups = find_groups(plain, example)
    quant = {n: (m.w_bits, m.a_bits) for n, m in work.named_modules()
             if isinstance(m, FakeQuant)}
    prof = profile(plain, example, quant)
    del plain
    for p in work.parameters():
        p.requires_grad_(True)
    gated = attach(work, groups, init=GATE_INIT, seed=settings.seed)
    model = latency_model if latency_model is not None else macs_model()
    outcome = RefineOutcome(net, ok=False, target=settings.cost_target(pref))
    try:
        _train(gated, prof, data, settings, pref, teacher, model, references, index, calib,
               val, outcome)
    except Stop as stop:
        outcome.reason = str(stop)
        return outcome
    outcome.channels = harden(gated, settings.divisor)
    recalibrate_bn(work, calib)
    if any(isinstance(m, FakeQuant) for m in work.modules()):
        calibrate_quant(work, calib)
    for p in work.parameters():
        p.grad = None
    work.requires_grad_(False).eval()
    refined_acc = val_accuracy(work, val)
    outcome.val_accuracy = (parent_acc, refined_acc)
    verdict = judge(pref, {"accuracy": parent_acc, **outcome.initial_costs},
                    {"accuracy": refined_acc, **outcome.final_costs})
    outcome.gains, outcome.score = verdict.gains, verdict.score
    if not verdict.improved:
        outcome.reason, outcome.rolled_back = verdict.reason, True
        return outcome
    outcome.network, outcome.ok = work, True
    return outcome


def _train(gated: GatedNet, prof: Any, data: ImageData, settings: RefineSettings,
           pref: np.ndarray, teacher: nn.Module | torch.Tensor | None, model: LatencyModel,
           references: np.ndarray | None, index: int, calib: list[Any], val: Any,
           outcome: RefineOutcome) -> None:
    """Both phases, filling ``outcome`` (raises :class:`Stop`)."""
    live_teacher = None if isinstance(teacher, torch.Tensor) else teacher
    train = distill_set(data, teacher)
    weights, steps, _ = gated.parameters_by_role()
    optimizer = torch.optim.Adam([{"params": weights, "lr": settings.lr},
                                  {"params": steps, "lr": settings.step_lr}])
    total = max(1, settings.steps + settings.recovery_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    task0 = mean_task_loss(gated.net, first_batches(train, settings), live_teacher, settings)
    outcome.start_task_loss = task0
    if not math.isfinite(task0):
        raise Stop(f"non-finite task loss before the first step: {task0}")
    full = costs_of(gated, prof, [torch.ones(g.size) for g in gated.groups], model)
    outcome.initial_costs = full.as_floats()
    batches = training_batches(train, settings)
    log, recovery = PruneLog(), settings
    if settings.steps > 0 and outcome.target < 1.0:
        log = prune(gated, prof, batches, optimizer, scheduler, settings, pref, task0,
                    live_teacher, model, calib, references, index)
    else:  # nothing to prune for this preference: every step goes to recovery
        recovery = replace(settings, recovery_steps=settings.steps + settings.recovery_steps)
    outcome.losses, outcome.gate_weights = log.losses, log.gate_weights
    outcome.hard_costs, outcome.guarded_steps = log.hard_costs, log.guarded_steps
    outcome.soft_costs = costs_of(gated, prof, gated.bank.keep_probs(), model).as_floats()
    gated.bank.fix(decision(gated, settings.divisor) if log.losses
                   else [list(range(g.size)) for g in gated.groups])
    outcome.final_costs = costs_of(gated, prof, gated.bank.keep_probs(), model).as_floats()
    rec = recover(gated, batches, optimizer, scheduler, recovery, task0, live_teacher, calib,
                  val)
    outcome.recovery_losses, outcome.checkpoints = rec.losses, rec.checkpoints


def check_preference(preference: Any, solver: str) -> np.ndarray:
    """The preference over [task, latency, size] normalised to sum 1 (uniform when None);
    EPO needs every entry > 0."""
    if preference is None:
        return np.full(len(OBJECTIVES), 1.0 / len(OBJECTIVES))
    p = np.asarray(preference, dtype=np.float64)
    if p.shape != (len(OBJECTIVES),) or not np.all(np.isfinite(p)) or np.any(p < 0) \
            or p.sum() <= 0:
        raise ConfigError(f"preference must be 3 finite numbers >= 0 (task, latency, size), "
                          f"not all zero; got {preference!r}")
    if solver == "epo" and np.any(p <= 0):
        raise ConfigError(f"solver 'epo' needs a preference > 0 everywhere, got {preference!r}")
    return p / p.sum()
