"""Linear and Chebyshev scalarization: fixed formulas of the losses, so their gradients are
weighted sums of the objective gradients with weights read off the preference."""

from __future__ import annotations

import numpy as np


def linear(preference: np.ndarray) -> np.ndarray:
    """Linear scalarization ``sum_i r_i L_i``: the weights are the preference ``r`` itself.
    Not invariant to loss scale. Reaches only the convex part of a front: its end point is where
    the front's normal is parallel to ``r``, not a point on a preference ray."""
    return np.array(preference, dtype=np.float64)


def chebyshev(losses: np.ndarray, preference: np.ndarray, *, ideal: np.ndarray | None = None,
              smoothing: float = 0.0) -> np.ndarray:
    """(Weighted) Chebyshev scalarization ``max_i r_i (L_i - z_i)`` with ideal point ``z``
    (default 0: pass losses already shifted by the ideal point).

    ``smoothing == 0``: the (sub)gradient, weight ``r_i`` on the currently worst weighted
    objective (split evenly between exact ties). ``smoothing = mu > 0``: the gradient of the
    log-sum-exp smoothing ``mu log sum_i exp(r_i (L_i - z_i) / mu)``, i.e. weights
    ``r_i softmax(r (L - z) / mu)_i``. Its minimisers satisfy ``r_i (L_i - z_i)`` equal for all
    i, so it lands on the ray ``L - z ∝ 1 / r`` (also on non-convex fronts). Not invariant to
    loss scale."""
    r = np.asarray(preference, dtype=np.float64)
    z = np.zeros_like(r) if ideal is None else np.asarray(ideal, dtype=np.float64)
    if z.shape != r.shape:
        raise ValueError(f"ideal point of shape {z.shape} does not fit {r.shape[0]} objectives")
    v = r * (np.asarray(losses, dtype=np.float64) - z)
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    if smoothing == 0:
        top = float(v.max())
        worst = v >= top - 1e-12 * max(abs(top), 1e-300)
        return r * worst / worst.sum()
    p = np.exp((v - v.max()) / smoothing)
    return r * p / p.sum()
