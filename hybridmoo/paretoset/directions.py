"""One training step of a Pareto set model: per-preference objective gradients combined by
a gradient multi-objective solver, averaged over the step's preferences into one optimizer
step. Two ways to get the task-loss gradient (``estimator``): through the supernet on a
Gumbel-softmax sample (:func:`supernet_step`, "straight-through" or "soft"), or from the
fitted task-loss model at the softmax probabilities (:func:`predictor_step`, "predictor":
the expected loss, no sampling noise). Costs are the relaxed cost model's in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hybridmoo.gradmoo import get_solver, solve
from hybridmoo.paretoset.costs import RelaxedCosts
from hybridmoo.paretoset.model import PreferenceModel
from hybridmoo.paretoset.relaxed import RelaxedSupernet
from hybridmoo.refine.combine import combined, gram

PREFERENCE_FLOOR = 1e-3  # a preference-blind solver sees gradient i at length 1 / max(p_i, this)
NEGLIGIBLE = 1e-6  # a gradient this much shorter than the longest counts as zero
Grads = list[tuple[torch.Tensor | None, ...]]


def gumbel_sample(logits: torch.Tensor, temperature: float, generator: torch.Generator,
                  hard: bool = True) -> torch.Tensor:
    """A Gumbel-softmax sample of ``logits``: one-hot with the soft sample's gradient
    (straight-through, ``hard``) or the soft sample itself."""
    u = torch.rand(logits.shape, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    soft = torch.softmax((logits - torch.log(-torch.log(u))) / temperature, dim=-1)
    if not hard:
        return soft
    one_hot_sample = F.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft)
    return one_hot_sample - soft.detach() + soft


def direction_weights(name: str, G: np.ndarray, losses: np.ndarray, preference: np.ndarray,
                      rng: np.random.Generator, options: Mapping[str, Any]) -> np.ndarray:
    """Weights of the raw gradients for one preference (see the module docstring). The
    solver sees unit-length gradients (the weights are scaled back by ``1 / ||g_i||``): the
    cost gradients are exact and much longer than the task gradient of one sampled config,
    and would otherwise set the direction for every preference. A gradient shorter than
    :data:`NEGLIGIBLE` of the longest (an objective at its extreme) counts as zero."""
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    live = norms > NEGLIGIBLE * max(float(norms.max()), 1e-300)
    weights = np.zeros(len(G))
    if not live.any():
        return weights
    unit = G[np.ix_(live, live)] / np.outer(norms[live], norms[live])
    p = np.maximum(preference[live], PREFERENCE_FLOOR)
    if "preference" in get_solver(name).needs:
        w = solve(name, unit, losses=losses[live], preference=preference[live], rng=rng,
                  **options)
    elif name == "upgrad":  # its own preference: the weights of the projected gradients
        w = solve(name, unit, **{**options, "pref_vector": p / p.sum()})
    else:  # mgda: the min-norm point of the gradients at length 1 / p_i
        w = solve(name, unit / np.outer(p, p), **options) / p
    weights[live] = w / norms[live]
    return weights


def sample_preferences(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points uniform on the simplex of ``m`` objectives (normalised exponentials)."""
    e = -torch.log(torch.rand(n, m, generator=generator).clamp_(1e-10, 1.0))
    return e / e.sum(dim=1, keepdim=True)


def supernet_step(model: PreferenceModel, optimizer: torch.optim.Optimizer,
                  relaxed: RelaxedSupernet, costs: RelaxedCosts, span: Mapping[str, list[float]],
                  names: list[str], settings: Any, x: torch.Tensor, y: torch.Tensor,
                  prefs: torch.Tensor, gen: torch.Generator) -> np.ndarray:
    """One step with the task loss of a Gumbel-softmax sample run through the supernet;
    returns the mean scaled (task loss, latency, size) of the samples."""
    params = list(model.parameters())
    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
    per_preference: list[Grads] = []
    seen = []
    for p in prefs:
        logits = model(p[None].to(x.device))
        weights = {name: gumbel_sample(lg[0], settings.temperature, gen,
                                       settings.estimator == "straight-through")
                   for name, lg in zip(names, logits, strict=True)}
        cost = costs(weights)
        objectives = scaled([F.cross_entropy(relaxed(x, weights), y), cost["latency_ms"],
                             cost["size_bytes"]], span)
        per_preference.append([torch.autograd.grad(o, params, retain_graph=True,
                                                   allow_unused=True) for o in objectives])
        seen.append([float(o.detach()) for o in objectives])
    apply_directions(optimizer, params, per_preference, np.array(seen), prefs, settings, rng)
    return np.mean(seen, axis=0)


def predictor_step(model: PreferenceModel, optimizer: torch.optim.Optimizer, task_model: Any,
                   costs: RelaxedCosts, span: Mapping[str, list[float]], names: list[str],
                   settings: Any, prefs: torch.Tensor, gen: torch.Generator) -> np.ndarray:
    """One step on the expected objectives at the softmax probabilities of the model's
    logits (task loss from ``task_model``, costs from ``costs``), all preferences in one
    batch; returns the mean scaled (task loss, latency, size)."""
    params = list(model.parameters())
    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
    logits = torch.cat(model(prefs), dim=1)  # (P, sum of sizes)
    leaf = logits.detach().requires_grad_(True)
    probs = {name: torch.softmax(lg / settings.temperature, dim=1) for name, lg in
             zip(names, torch.split(leaf, model.sizes, dim=1), strict=True)}
    cost = costs(probs)
    objectives = torch.stack(scaled([task_model(probs), cost["latency_ms"],
                                     cost["size_bytes"]], span), dim=1)  # (P, 3)
    # row i's objectives depend on logits row i only: one backward per objective gives
    # every row's logit gradient, then a small backward through the model per row
    by_logit = [torch.autograd.grad(objectives[:, j].sum(), leaf, retain_graph=True)[0]
                for j in range(objectives.shape[1])]
    per_preference = [[torch.autograd.grad(logits[i], params, grad_outputs=g[i],
                                           retain_graph=True, allow_unused=True)
                       for g in by_logit] for i in range(len(prefs))]
    values = objectives.detach().cpu().numpy().astype(np.float64)
    apply_directions(optimizer, params, per_preference, values, prefs, settings, rng)
    return values.mean(axis=0)


def scaled(raw: list[torch.Tensor], span: Mapping[str, list[float]]) -> list[torch.Tensor]:
    """Each objective on the span between the extremes (0 = best, 1 = other extreme)."""
    return [(o - float(z)) / float(n - z) for o, z, n in
            zip(raw, span["ideal"], span["nadir"], strict=True)]


def apply_directions(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                     per_preference: list[Grads], values: np.ndarray, prefs: torch.Tensor,
                     settings: Any, rng: np.random.Generator) -> None:
    """Combine each preference's objective gradients with the solver, average the
    directions and take one optimizer step."""
    total: list[torch.Tensor | None] = [None] * len(params)
    for grads, v, p in zip(per_preference, values, prefs, strict=True):
        w = direction_weights(settings.solver, gram(grads), v, p.double().cpu().numpy(), rng,
                              settings.solver_options)
        for i, g in enumerate(combined(grads, w)):
            if g is not None:
                g = g / len(prefs)
                total[i] = g if total[i] is None else total[i] + g
    if not all(g is None or bool(torch.isfinite(g).all()) for g in total):
        raise FloatingPointError("a Pareto set training step produced a non-finite gradient "
                                 "(the last checkpoint is intact)")
    optimizer.zero_grad(set_to_none=True)
    for param, g in zip(params, total, strict=True):
        param.grad = g
    optimizer.step()
