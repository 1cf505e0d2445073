"""The pruning phase: importance-based iterative pruning to a target for the hardened cost.

The gates are 0/1 masks from the start (the hardening decision itself: what the cost model
counts, what the network computes and what hardening removes are one thing). The pruning
phase has ``prune_rounds`` rounds of ``steps / prune_rounds`` fine-tuning steps each: the
weights and quantizer steps follow the task loss (Adam; one objective), while the gradient of
the task loss with respect to each mask is averaged over the round (first-order Taylor
importance, Molchanov et al. 2019). At the end of a round the solver combines the rows of the
masks' Jacobian [task, latency, size] (the task row averaged over the round, the cost rows
exact from the cost model) under the survivor's preference into one descent direction on the
masks, and whole units are removed along it, the largest component first (``divisor``
channels of a group, or one head, at a time), until the hardened cost reaches the round's
target: ``1 - k / rounds`` of the way from the start cost to the preference's target. The
cost constraint is on the hardened network exactly; the solver only chooses which units go.
BatchNorm runs in training mode during the steps and is recalibrated after each round.

An earlier design trained hard-concrete gates (sampled in the forward pass) with a multiplier
on the hardened cost: in 40 steps the gates did not polarise (the soft cost was 10-40 % below
the hardened one), holding the target overshot it (a cost-heavy run fell to 12 % of the
size), and the network that hardening gives lost 20-50 points of validation accuracy against
its soft counterpart (``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridmoo.evaluate.latency_model import LatencyModel
from hybridmoo.quant.calibration import module_device
from hybridmoo.refine.combine import combined, gram, solver_weights
from hybridmoo.refine.costs import NetProfile, expected_costs, latency, total_bytes, total_macs
from hybridmoo.refine.gates import GatedNet
from hybridmoo.refine.harden import kept_units
from hybridmoo.refine.settings import RefineSettings
from hybridmoo.refine.task import task_loss, train_forward, unpack
from hybridmoo.supernet.bn import recalibrate_bn

OBJECTIVES = ("task", "latency", "size")


class Stop(Exception):
    """The refinement of this network ends without a result."""


@dataclass
class PruneLog:
    """What the pruning phase did: normalised ``[task, latency, size]`` per step, the solver's
    weights on the masks per round, the hardened cost (fraction of the start,
    preference-weighted) per step, and the units removed per round."""

    losses: list[list[float]] = field(default_factory=list)
    gate_weights: list[list[float]] = field(default_factory=list)
    hard_costs: list[float] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    guarded_steps: int = 0


@dataclass
class Costs:
    """Latency, bytes and MACs of one keep vector set (0-d tensors)."""

    latency: torch.Tensor
    bytes: torch.Tensor
    macs: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {"macs": float(self.macs.detach()), "bytes": float(self.bytes.detach()),
                "latency": float(self.latency.detach())}


def costs_of(gated: GatedNet, prof: NetProfile, keep: list[torch.Tensor],
             model: LatencyModel) -> Costs:
    """The cost model on keep probabilities (or 0/1 decisions) ``keep``."""
    c = expected_costs(prof, gated.dims, keep)
    return Costs(latency(c, model), total_bytes(c, prof), total_macs(c))


def decision(gated: GatedNet, divisor: int) -> list[list[int]]:
    """The units hardening would keep now."""
    return kept_units(gated.bank.test_gates(), gated.groups, divisor)


def combined_cost(c: Costs, full: Costs, pref: np.ndarray) -> float:
    """Latency and size as fractions of the full network's, weighted by their preference."""
    share = pref[1] + pref[2]
    if share <= 0:
        return 1.0
    return float((pref[1] * c.latency / full.latency + pref[2] * c.bytes / full.bytes) / share)


def prune(gated: GatedNet, prof: NetProfile, batches: Iterator[Any], optimizer: Any,
          scheduler: Any, settings: RefineSettings, pref: np.ndarray, task0: float,
          teacher: nn.Module | None, model: LatencyModel, calib: list[Any],
          references: np.ndarray | None, index: int) -> PruneLog:
    """Run the pruning phase (see the module docstring) for ``settings.steps`` steps, leaving
    the bank fixed at the final masks; ``optimizer`` holds the weights and steps, ``task0``
    is the start task loss."""
    net, bank = gated.net, gated.bank
    device = module_device(net)
    bank.fix([list(range(g.size)) for g in gated.groups])
    masks = bank.fixed
    assert masks is not None
    for m in masks:
        m.requires_grad_(True)
    full = costs_of(gated, prof, [torch.ones(g.size) for g in gated.groups], model)
    target = settings.cost_target(pref)
    rng = np.random.default_rng(settings.seed)
    params = optimizer_params(optimizer)
    rounds = min(settings.prune_rounds, settings.steps)
    ends = {round(settings.steps * (k + 1) / rounds) - 1: k + 1 for k in range(rounds)}
    importance = [torch.zeros(g.size) for g in gated.groups]
    log, seen = PruneLog(), 0
    for step in range(settings.steps):
        x, y, target_logits = unpack(next(batches), device)
        bank.refresh()
        logits = train_forward(net, x)
        task = task_loss(logits, y, teacher, x, settings, target_logits)
        value = float(task.detach())
        now = costs_of(gated, prof, [m.detach() for m in masks], model)
        values = np.array([value / max(task0, 1e-6), float(now.latency / full.latency),
                           float(now.bytes / full.bytes)])
        check_losses(values, value, task0, math.log(logits.shape[-1]), settings, step)
        grads = torch.autograd.grad(task, [*params, *masks], allow_unused=True)
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, grads[:len(params)], strict=True):
            p.grad = g
        check_finite(params, step)
        optimizer.step()
        scheduler.step()
        for acc, g in zip(importance, grads[len(params):], strict=True):
            if g is not None:
                acc += g.detach().cpu() / max(task0, 1e-6)
        seen += 1
        if step in ends:
            goal = 1.0 - (1.0 - target) * ends[step] / rounds
            task_rows = [acc / seen for acc in importance]
            removed, w = _remove(gated, prof, model, full, pref, goal, task_rows, values, rng,
                                 settings, references, index)
            log.removed.append(removed)
            log.gate_weights.append(w.tolist())
            importance, seen = [torch.zeros(g.size) for g in gated.groups], 0
            recalibrate_bn(net, calib)
        hard = combined_cost(costs_of(gated, prof, [m.detach() for m in masks], model), full,
                             pref)
        log.losses.append(values.tolist())
        log.hard_costs.append(hard)
    for m in masks:
        m.requires_grad_(False)
    return log


def _remove(gated: GatedNet, prof: NetProfile, model: LatencyModel, full: Costs,
            pref: np.ndarray, goal: float, task_rows: list[torch.Tensor], values: np.ndarray,
            rng: np.random.Generator, settings: RefineSettings, references: np.ndarray | None,
            index: int) -> tuple[int, np.ndarray]:
    """Remove units along the solver's direction on the masks until the hardened cost is at
    most ``goal``; returns the number removed and the solver's weights."""
    masks = gated.bank.fixed
    assert masks is not None
    keep = [m.detach().clone().requires_grad_(True) for m in masks]
    c = costs_of(gated, prof, keep, model)
    cost_rows = [torch.autograd.grad(v, keep, retain_graph=True, allow_unused=True)
                 for v in (c.latency / full.latency, c.bytes / full.bytes)]
    rows = [list(task_rows), *([g if g is not None else torch.zeros_like(k)
                                for g, k in zip(r, keep, strict=True)] for r in cost_rows)]
    try:
        w = solver_weights(settings.solver, gram(rows), values, pref, rng,
                           settings.solver_options, references, index,
                           settings.normalize_gradients)
    except (ValueError, RuntimeError) as exc:
        raise Stop(f"solver {settings.solver!r} failed: {exc}") from None
    direction = [d if d is not None else torch.zeros(g.size)
                 for d, g in zip(combined(rows, w), gated.groups, strict=True)]
    removed = 0
    while _hard_cost(gated, prof, model, full, pref) > goal + 1e-9:
        chunk = _best_chunk(gated, direction, settings.divisor)
        if chunk is None:
            break  # every group is at its minimum
        g, units = chunk
        with torch.no_grad():
            masks[g][units] = 0.0
        removed += len(units)
    return removed, w


def _best_chunk(gated: GatedNet, direction: list[torch.Tensor], divisor: int
                ) -> tuple[int, list[int]] | None:
    """The next removable chunk with the largest summed direction: in each group the kept
    units with the largest components, down to the next multiple of ``divisor`` channels (one
    head at a time), never below ``divisor`` channels or one head."""
    masks = gated.bank.fixed
    assert masks is not None
    best, best_score = None, -math.inf
    for g, (group, mask, d) in enumerate(zip(gated.groups, masks, direction, strict=True)):
        kept = [int(i) for i in torch.nonzero(mask.detach() > 0.5).flatten()]
        step = 1 if group.is_heads else divisor
        lower = (len(kept) - 1) // step * step
        if lower < step:
            continue
        order = sorted(kept, key=lambda i: -float(d[i]))[:len(kept) - lower]
        score = float(sum(float(d[i]) for i in order)) / len(order)
        if score > best_score:
            best, best_score = (g, order), score
    return best


def _hard_cost(gated: GatedNet, prof: NetProfile, model: LatencyModel, full: Costs,
               pref: np.ndarray) -> float:
    masks = gated.bank.fixed
    assert masks is not None
    return combined_cost(costs_of(gated, prof, [m.detach() for m in masks], model), full, pref)


def optimizer_params(optimizer: Any) -> list[nn.Parameter]:
    """Every parameter of ``optimizer``, group by group."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def check_losses(values: np.ndarray, task: float, task0: float, chance: float,
                 settings: RefineSettings, step: int) -> None:
    """Stop on a non-finite loss or a task loss above ``max_loss_ratio`` x its start value and
    above chance level."""
    if not np.all(np.isfinite(values)):
        named = ", ".join(f"{n}={v:.4g}" for n, v in zip(OBJECTIVES, values, strict=False))
        raise Stop(f"non-finite loss at step {step}: {named}")
    if task > max(settings.max_loss_ratio * task0, chance):
        raise Stop(f"task loss exploded at step {step}: {task:.4g} > {settings.max_loss_ratio} x "
                   f"{task0:.4g} and > chance level {chance:.4g}")


def check_finite(params: list[nn.Parameter], step: int) -> None:
    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
        raise Stop(f"non-finite gradient at step {step}")
