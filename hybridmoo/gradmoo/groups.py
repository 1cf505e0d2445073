"""Per-parameter-group aggregation: solve on each group's Jacobian, concatenate directions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hybridmoo.gradmoo.linalg import direction, gram, nonzero_gradients
from hybridmoo.gradmoo.registry import solve


def _subset(value: np.ndarray | None, live: np.ndarray) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64)[..., live]


def aggregate_groups(jacobians: Sequence[np.ndarray], name: str, *,
                     losses: np.ndarray | None = None, preference: np.ndarray | None = None,
                     rng: np.random.Generator | None = None, drop_constant: bool = True,
                     **options: Any) -> np.ndarray:
    """Direction for parameters split into groups (one Jacobian, k x n_g, per group): solver
    ``name`` runs on each group's Gram and the group directions ``J_g^T w_g`` are concatenated
    in order.

    An objective whose gradient is zero on a group (latency and size on most weights) is
    unaffected by that group, so with ``drop_constant`` (default) it is left out of the group's
    problem (with its entries of ``losses`` and ``preference``): otherwise MGDA-like solvers see
    zero in the convex hull and freeze the group. A group where every gradient is zero gets a
    zero direction."""
    if not jacobians:
        raise ValueError("aggregate_groups needs at least one parameter group")
    parts = [np.asarray(J, dtype=np.float64) for J in jacobians]
    k = parts[0].shape[0] if parts[0].ndim == 2 else -1
    if any(J.ndim != 2 or J.shape[0] != k for J in parts):
        raise ValueError("every group's Jacobian must be 2-D with the same number of objectives")
    out = []
    for J in parts:
        G = gram(J)
        live = nonzero_gradients(G) if drop_constant else np.ones(k, dtype=bool)
        if not live.any():
            out.append(np.zeros(J.shape[1]))
            continue
        w = solve(name, G[np.ix_(live, live)], losses=_subset(losses, live),
                  preference=_subset(preference, live), rng=rng, **options)
        out.append(direction(J[live], w))
    return np.concatenate(out)
