"""One multi-objective update direction from per-objective gradients, with a gradmoo solver.

Parameters are split by role (weights and step sizes; gates). Each role gets its own Gram
matrix and solve, as :func:`hybridmoo.gradmoo.aggregate_groups` does: the cost objectives do
not depend on the weights at all, and left in the weights' problem they would make MGDA-like
solvers freeze them (zero lies in the hull). Unlike there, an objective counts as absent only
when its gradient is exactly zero (a cost gradient can be 1e-13 of the task's squared norm and
still matter). The Gram is accumulated in torch, parameter by parameter, so no Jacobian of a
large network is ever materialised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hybridmoo.gradmoo import solve

Grads = Sequence[Sequence[torch.Tensor | None]]  # [objective][parameter]


def gram(grads: Grads) -> np.ndarray:
    """``G[i, j] = <g_i, g_j>`` (float64) over the parameters; a missing gradient is zero."""
    k = len(grads)
    G = torch.zeros(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(i, k):
            total = sum((a.double() * b.double()).sum().cpu()
                        for a, b in zip(grads[i], grads[j], strict=True)
                        if a is not None and b is not None)
            G[i, j] = G[j, i] = float(total)
    return G.numpy()


def solver_weights(name: str, G: np.ndarray, losses: np.ndarray, preference: np.ndarray,
                   rng: np.random.Generator, options: Mapping[str, Any],
                   references: np.ndarray | None = None, index: int = 0,
                   normalize: bool = True) -> np.ndarray:
    """Weights (k,) of the raw gradients: solver ``name`` runs on the objectives whose gradient
    is not exactly zero (the others get 0). With ``normalize`` it sees unit-norm gradients
    (``G_ij / sqrt(G_ii G_jj)``) and the weights are scaled back by ``1 / ||g_i||``: a cost
    gradient spread thinly over hundreds of gates is otherwise swamped by the task gradient,
    which no preference then outweighs. Pareto MTL reads ``references`` (all survivors'
    preferences) and ``index``."""
    k = len(G)
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    live = norms > 0
    weights = np.zeros(k)
    pref: np.ndarray = preference[live]
    if not live.any() or pref.sum() <= 0:
        return weights  # nothing moves these parameters that the preference cares for
    extra = dict(options)
    if name == "pareto-mtl":
        refs = references if references is not None else preference[None, :]
        pref, extra["index"] = refs[:, live], index
    sub = G[np.ix_(live, live)]
    if normalize:
        sub = sub / np.outer(norms[live], norms[live])
    w = solve(name, sub, losses=losses[live], preference=pref, rng=rng, **extra)
    weights[live] = w / norms[live] if normalize else w
    return weights


def combined(grads: Grads, weights: np.ndarray) -> list[torch.Tensor | None]:
    """Per parameter ``sum_i w_i g_i`` (None where no objective has a gradient)."""
    out: list[torch.Tensor | None] = []
    for per_param in zip(*grads, strict=True):
        total = None
        for w, g in zip(weights, per_param, strict=True):
            if g is not None and w != 0.0:
                total = g * float(w) if total is None else total + g * float(w)
        out.append(total)
    return out
