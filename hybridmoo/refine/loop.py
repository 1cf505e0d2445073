"""Refine one network: gates and learned quantizer steps, K multi-objective steps, harden.

The objectives, each divided by its value at the start (so every one begins at 1):

- ``task``: cross-entropy on the labels, mixed with KL distillation from the teacher (the
  supernet's largest network) when one is given and ``settings.distill`` is on; the teacher
  is a network, or its logits on every training example computed once (what the refiner
  passes when the training set is in memory: each step then runs the student only);
- ``latency``: the latency model's prediction from the expected per-layer costs (a fitted
  :class:`hybridmoo.evaluate.LatencyModel`, or latency proportional to MACs without one);
- ``size``: the expected size in bytes.

Each step takes one gradient per objective, solves the chosen :mod:`hybridmoo.gradmoo`
problem per parameter role (weights and steps; gates) under the preference, and applies the
combined gradient with Adam (its per-coordinate scaling means a solver's common descent
direction is followed in sign, not exactly).

The task loss has a budget: while its running mean exceeds ``task_budget`` times its value
at the start (the mean over the calibration batches), a step follows the task gradient
alone, on gates and weights (the feasible direction of the constraint; the gates' Adam
momentum is dropped on entry, or it would go on closing them for several steps). A solver that keeps
trading accuracy for cost, as a fixed preference does, then prunes only what the network can
lose without leaving the budget, instead of closing gates until it collapses.

A non-finite loss or gradient ends the refinement, and so does a task loss above both
``max_loss_ratio`` times its first value and the cross-entropy of a uniform guess (a trained
network's loss is tiny: ten times it is an ordinary trade-off, not an explosion). The working
copy, with the step that broke it, is then discarded and the input network is returned
untouched with the reason; nothing is written anywhere.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from hybridmoo.data import ImageData, batches_per_epoch, epoch_batches, eval_batches
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency_model import LatencyModel
from hybridmoo.quant import FakeQuant
from hybridmoo.quant import calibrate as calibrate_quant
from hybridmoo.quant.calibration import module_device
from hybridmoo.refine.combine import combined, gram, solver_weights
from hybridmoo.refine.costs import (
    NetProfile,
    expected_costs,
    latency,
    macs_model,
    profile,
    total_bytes,
    total_macs,
)
from hybridmoo.refine.gates import GatedNet, attach, find_groups, plain_copy
from hybridmoo.refine.harden import harden
from hybridmoo.refine.settings import RefineSettings
from hybridmoo.supernet.bn import recalibrate_bn

OBJECTIVES = ("task", "latency", "size")
BUDGET_SMOOTHING = 0.7  # weight of the past in the running task loss the budget watches


@dataclass
class RefineOutcome:
    """What refining one network gave. ``network`` is the hardened network, or the input
    network itself (unchanged) when ``ok`` is False; ``losses`` are the normalised
    ``[task, latency, size]`` of each step taken, ``gate_weights`` the solver's weights on the
    gate parameters per step; costs are the differentiable model's ``macs``, ``bytes`` and
    ``latency`` before the first and after the last step; ``channels`` maps each gate group
    to ``(kept, total)`` units; ``start_task_loss`` is the task loss the budget is measured
    against and ``guarded_steps`` counts the steps it forced back onto the task gradient."""

    network: nn.Module
    ok: bool
    reason: str | None = None
    losses: list[list[float]] = field(default_factory=list)
    gate_weights: list[list[float]] = field(default_factory=list)
    initial_costs: dict[str, float] = field(default_factory=dict)
    final_costs: dict[str, float] = field(default_factory=dict)
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)
    start_task_loss: float = math.nan
    guarded_steps: int = 0


class _Stop(Exception):
    """The refinement of this network ends without a result."""


def refine_network(net: nn.Module, *, data: ImageData, settings: RefineSettings,
                   preference: np.ndarray | None = None,
                   teacher: nn.Module | torch.Tensor | None = None,
                   latency_model: LatencyModel | None = None, example: torch.Tensor | None = None,
                   references: np.ndarray | None = None, index: int = 0) -> RefineOutcome:
    """Refine a copy of ``net`` (an extracted sub-network) on ``data.train`` for
    ``settings.steps`` steps under ``preference`` over ``[task, latency, size]`` (default
    uniform), harden it and recalibrate its BatchNorm and activation ranges. ``example`` is
    one input batch for tracing (default: the first training image); ``references`` and
    ``index`` are Pareto MTL's reference vectors and this network's row among them;
    ``teacher`` is a network or its logits on ``data.train`` (:func:`teacher_logits`)."""
    if not isinstance(settings, RefineSettings):
        raise ConfigError(f"settings must be RefineSettings, got {type(settings).__name__}")
    pref = check_preference(preference, settings.solver)
    work = copy.deepcopy(net).eval()
    device = module_device(work)
    calib = calibration_batches(data, settings)
    if example is None:
        example = data.train[0][0].unsqueeze(0)
    example = example.to(device)
    if any(isinstance(m, FakeQuant) and m.a_bits < 32 and torch.isnan(m.act_range).any()
           for m in work.modules()):
        calibrate_quant(work, calib)
    plain = plain_copy(work)
    groups = find_groups(plain, example)
    quant = {n: (m.w_bits, m.a_bits) for n, m in work.named_modules()
             if isinstance(m, FakeQuant)}
    prof = profile(plain, example, quant)
    del plain
    for p in work.parameters():
        p.requires_grad_(True)
    gated = attach(work, groups, init=settings.gate_init, seed=settings.seed)
    outcome = RefineOutcome(net, ok=False)
    model = latency_model if latency_model is not None else macs_model()
    try:
        _optimise(gated, prof, _distill_set(data, teacher), settings, pref,
                  None if isinstance(teacher, torch.Tensor) else teacher, model, references,
                  index, outcome)
    except _Stop as stop:
        outcome.reason = str(stop)
        return outcome
    outcome.channels = harden(gated, settings.divisor)
    recalibrate_bn(work, calib)
    if any(isinstance(m, FakeQuant) for m in work.modules()):
        calibrate_quant(work, calib)
    for p in work.parameters():
        p.grad = None
    outcome.network, outcome.ok = work.eval(), True
    return outcome


def _optimise(gated: GatedNet, prof: NetProfile, train: Dataset, settings: RefineSettings,
              pref: np.ndarray, teacher: nn.Module | None, latency_model: LatencyModel,
              references: np.ndarray | None, index: int, outcome: RefineOutcome) -> None:
    """``train`` yields (x, y) or, with the teacher's logits precomputed, (x, y, logits)."""
    net, bank = gated.net, gated.bank
    device = module_device(net)
    weights, gates = gated.parameters_by_role()
    optimizer = torch.optim.Adam([{"params": weights, "lr": settings.lr},
                                  {"params": gates, "lr": settings.gate_lr}])
    rng = np.random.default_rng(settings.seed)
    start = {k: v.detach() for k, v in _costs(gated, prof, latency_model).items()}
    outcome.initial_costs = {k: float(v) for k, v in start.items()}
    task0 = _start_task_loss(net, _first_batches(train, settings), teacher, settings)
    outcome.start_task_loss = task0
    if not math.isfinite(task0):
        raise _Stop(f"non-finite task loss before the first step: {task0}")
    chance, running, guarded = math.inf, task0, False
    for step, batch in zip(range(settings.steps), training_batches(train, settings),
                           strict=False):
        bank.stochastic = settings.sample_gates
        x, y, target = _unpack(batch, device)
        logits = net(x)
        task = task_loss(logits, y, teacher, x, settings, target)
        chance = math.log(logits.shape[-1])  # cross-entropy of a uniform guess
        now = _costs(gated, prof, latency_model)
        losses = [task / max(task0, 1e-6), now["latency"] / start["latency"],
                  now["bytes"] / start["bytes"]]
        values = np.array([float(v.detach()) for v in losses])
        if not np.all(np.isfinite(values)):
            named = ", ".join(f"{n}={v:.4g}" for n, v in zip(OBJECTIVES, values, strict=True))
            raise _Stop(f"non-finite loss at step {step}: {named}")
        if float(task.detach()) > max(settings.max_loss_ratio * task0, chance):
            raise _Stop(f"task loss exploded at step {step}: {float(task.detach()):.4g} > "
                        f"{settings.max_loss_ratio} x {task0:.4g} and > chance level "
                        f"{chance:.4g}")
        running = BUDGET_SMOOTHING * running + (1 - BUDGET_SMOOTHING) * float(task.detach())
        was_guarded, guarded = guarded, running > settings.task_budget * task0
        if guarded and not was_guarded:  # Adam's momentum would go on closing gates
            _forget_momentum(optimizer, gates)
        grads = [torch.autograd.grad(loss, [*weights, *gates], retain_graph=True,
                                     allow_unused=True) for loss in losses]
        n = len(weights)
        solve = (settings.solver, values, pref, rng, settings, references, index, step)
        weight_dir, _ = _direction([g[:n] for g in grads], *solve, guarded=guarded)
        gate_dir, gate_w = _direction([g[n:] for g in grads], *solve, guarded=guarded)
        optimizer.zero_grad(set_to_none=True)
        for p, d in zip([*weights, *gates], [*weight_dir, *gate_dir], strict=True):
            p.grad = d
        optimizer.step()
        outcome.losses.append(values.tolist())
        outcome.gate_weights.append(gate_w)
        outcome.guarded_steps += guarded
    bank.stochastic = False
    final = _costs(gated, prof, latency_model)
    outcome.final_costs = {k: float(v.detach()) for k, v in final.items()}


def _forget_momentum(optimizer: torch.optim.Adam, params: list[nn.Parameter]) -> None:
    """Zero Adam's first moment of ``params``: the next steps follow the new direction."""
    for p in params:
        state = optimizer.state.get(p)
        if state and "exp_avg" in state:
            state["exp_avg"].zero_()


def _start_task_loss(net: nn.Module, batches: list[Any], teacher: nn.Module | None,
                     settings: RefineSettings) -> float:
    """The task loss before any step: its mean over ``batches`` (one batch's loss of a
    trained network is too noisy to measure a budget against)."""
    device = module_device(net)
    values = []
    with torch.no_grad():
        for batch in batches:
            x, y, target = _unpack(batch, device)
            values.append(float(task_loss(net(x), y, teacher, x, settings, target)))
    return float(np.mean(values))


def _unpack(batch: Sequence[torch.Tensor], device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, y, teacher logits or None) on ``device``."""
    x, y = batch[0].to(device), batch[1].to(device)
    return x, y, batch[2].to(device) if len(batch) > 2 else None


def _distill_set(data: ImageData, teacher: nn.Module | torch.Tensor | None) -> Dataset:
    """The training set, with the teacher's logits as a third tensor when they are given."""
    if not isinstance(teacher, torch.Tensor):
        return data.train
    if not isinstance(data.train, TensorDataset) or len(teacher) != len(data.train):
        raise ConfigError(f"teacher logits need an in-memory training set of the same length "
                          f"({len(teacher)} logits for {len(data.train)} examples)")
    return TensorDataset(*data.train.tensors, teacher)


def teacher_logits(teacher: nn.Module, data: ImageData, batch_size: int = 256
                   ) -> torch.Tensor | None:
    """The teacher's logits on every training example, in order (None unless the training set
    is in memory, a TensorDataset): computed once, reused by every refinement."""
    if not isinstance(data.train, TensorDataset):
        return None
    device = module_device(teacher)
    with torch.no_grad():
        return torch.cat([teacher(x.to(device)).cpu()
                          for x, _ in eval_batches(data.train, batch_size)])


def _direction(grads: list[Sequence[torch.Tensor | None]], solver: str, values: np.ndarray,
               pref: np.ndarray, rng: np.random.Generator, settings: RefineSettings,
               references: np.ndarray | None, index: int, step: int, *, guarded: bool
               ) -> tuple[list[torch.Tensor | None], list[float]]:
    """The solver's combined gradient of one parameter role and its weights; the task
    gradient alone when ``guarded`` (the task loss is over its budget)."""
    G = gram(grads)
    if guarded:
        w = np.zeros(len(grads))
        w[0] = 1.0 / math.sqrt(G[0, 0]) if G[0, 0] > 0 else 0.0
    else:
        try:
            w = solver_weights(solver, G, values, pref, rng, settings.solver_options,
                               references, index, settings.normalize_gradients)
        except (ValueError, RuntimeError) as exc:
            raise _Stop(f"solver {solver!r} failed at step {step}: {exc}") from None
    direction = combined(grads, w)
    if any(d is not None and not torch.isfinite(d).all() for d in direction):
        raise _Stop(f"non-finite gradient at step {step}")
    return direction, w.tolist()


def _costs(gated: GatedNet, prof: NetProfile,
           latency_model: LatencyModel) -> dict[str, torch.Tensor]:
    costs = expected_costs(prof, gated.dims, gated.bank.keep_probs())
    return {"macs": total_macs(costs), "bytes": total_bytes(costs, prof),
            "latency": latency(costs, latency_model)}


def task_loss(logits: torch.Tensor, y: torch.Tensor, teacher: nn.Module | None,
              x: torch.Tensor, settings: RefineSettings,
              target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy, mixed with ``distill_weight`` x T^2 KL(teacher || student) at
    temperature T when distilling from ``teacher`` (or from its precomputed logits
    ``target`` on ``x``)."""
    loss = F.cross_entropy(logits, y)
    if (teacher is None and target is None) or not settings.distill \
            or settings.distill_weight == 0:
        return loss
    if target is None:
        with torch.no_grad():
            target = teacher(x)
    t = settings.distill_temperature
    kd = F.kl_div(F.log_softmax(logits / t, dim=-1), F.softmax(target / t, dim=-1),
                  reduction="batchmean") * t * t
    return (1 - settings.distill_weight) * loss + settings.distill_weight * kd


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


def calibration_batches(data: ImageData, settings: RefineSettings) -> list[Any]:
    """The training batches BatchNorm and activation ranges are recalibrated on."""
    batches = _first_batches(data.train, settings)
    if not batches:
        raise ConfigError(f"refine batch_size {settings.batch_size} exceeds the "
                          f"{len(data.train)} training examples")
    return batches


def _first_batches(train: Dataset, settings: RefineSettings) -> list[Any]:
    """The calibration batches' examples from ``train`` (with its every tensor)."""
    return list(itertools.islice(
        epoch_batches(train, settings.batch_size, settings.seed + 1, 0), settings.calib_batches))


def training_batches(train: Dataset, settings: RefineSettings
                     ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled batches of ``train``, epoch after epoch."""
    if batches_per_epoch(train, settings.batch_size) == 0:
        raise ConfigError(f"refine batch_size {settings.batch_size} exceeds the "
                          f"{len(train)} training examples")
    for epoch in itertools.count():
        yield from epoch_batches(train, settings.batch_size, settings.seed, epoch)
