"""CAGrad (Liu et al. 2021): conflict-averse gradient descent.

Primal: ``max_d min_i g_i . d`` subject to ``||d - g0|| <= c ||g0||`` with ``g0`` the mean
gradient. Its dual over the simplex, ``min_w g_w . g0 + c ||g0|| ||g_w||`` (``g_w = J^T w``), is
solved with SLSQP on the Gram matrix; the direction is ``d = g0 + (c ||g0|| / ||g_w||) g_w``,
which is again a linear combination of the gradients.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from hybridmoo.gradmoo.linalg import normalized


def cagrad(gram: np.ndarray, *, c: float = 0.4, rescale: int = 1) -> np.ndarray:
    """CAGrad weights. ``c = 0`` gives the mean gradient. ``rescale`` divides the direction as
    the authors' code does: 0 none, 1 by ``1 + c^2`` (default), 2 by ``1 + c``. Not invariant
    to loss scale."""
    if c < 0:
        raise ValueError(f"c must be >= 0, got {c}")
    if rescale not in (0, 1, 2):
        raise ValueError(f"rescale must be 0, 1 or 2, got {rescale}")
    G, _ = normalized(np.asarray(gram, dtype=np.float64))  # the dual's minimiser is scale-free
    k = len(G)
    b = np.full(k, 1.0 / k)
    weights = b.copy()
    g0_norm = float(np.sqrt(max(b @ G @ b, 0.0)))
    if c > 0 and g0_norm > 1e-12:
        radius = c * g0_norm
        Gb = G @ b
        eps = 1e-16

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            Gw = G @ w
            norm = np.sqrt(max(w @ Gw, 0.0) + eps)
            return float(w @ Gb + radius * norm), Gb + radius * Gw / norm

        res = minimize(objective, b, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * k,
                       constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0,
                                     "jac": lambda w: np.ones_like(w)},),
                       options={"ftol": 1e-14, "maxiter": 200})
        w = np.clip(res.x, 0.0, None)
        w /= w.sum()
        gw_norm = float(np.sqrt(max(w @ G @ w, 0.0)))
        if gw_norm > 1e-12:
            weights = b + (radius / gw_norm) * w
    return weights / {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]
