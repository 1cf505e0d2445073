"""EPO search (Mahapatra & Rajan 2020): exact-Pareto-optimal descent along a preference ray.

With preference ``r`` the target is ``r_1 L_1 = ... = r_k L_k`` (the ray ``L ∝ 1 / r``; losses
must be >= 0, e.g. shifted by an ideal point). The non-uniformity ``mu = KL(l_hat || 1/k)`` of
``l_hat = r L / sum(r L)`` decides the mode:

- balance (``mu > eps``): maximise ``alpha . G a`` (``a = r (log(k l_hat) - mu)``, so
  ``J^T a`` is the gradient of ``mu``) over the simplex, keeping the worst objectives
  (``argmax r L``) from increasing and the others from rising faster than the balance needs;
- descent (``mu <= eps``): maximise ``1^T G alpha`` subject to ``G alpha >= 0`` (no objective
  increases) and not moving off the ray (``alpha . G a >= min(max(G a), 0)``).

Each is a small linear programme solved with ``scipy.optimize.linprog`` (HiGHS); when one is
infeasible its side constraints are dropped step by step, down to the MGDA weights.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from hybridmoo.gradmoo.linalg import normalized
from hybridmoo.gradmoo.mgda import min_norm_weights


def non_uniformity(losses: np.ndarray, preference: np.ndarray) -> float:
    """``mu``: KL divergence of ``r L / sum(r L)`` from uniform (0 exactly on the ray)."""
    rl = np.asarray(preference, dtype=np.float64) * np.asarray(losses, dtype=np.float64)
    l_hat = rl / rl.sum()
    pos = l_hat > np.finfo(np.float64).eps
    return float(np.sum(l_hat[pos] * np.log(l_hat[pos] * len(rl))))


def _simplex_lp(objective: np.ndarray, A_ge: np.ndarray, b_ge: np.ndarray) -> np.ndarray | None:
    """argmax ``objective . alpha`` over the simplex with ``A_ge alpha >= b_ge``; None if
    infeasible."""
    k = len(objective)
    res = linprog(-objective, A_ub=-A_ge if len(A_ge) else None,
                  b_ub=-b_ge if len(A_ge) else None, A_eq=np.ones((1, k)), b_eq=[1.0],
                  bounds=[(0.0, None)] * k, method="highs")
    if res.status != 0:
        return None
    alpha = np.clip(res.x, 0.0, None)
    return alpha / alpha.sum()


def epo(gram: np.ndarray, losses: np.ndarray, preference: np.ndarray, *, eps: float = 1e-4,
        relax: bool = False) -> np.ndarray:
    """EPO weights on the simplex. ``eps``: non-uniformity below which the point counts as on
    the ray (the authors' default 1e-4; for two objectives it allows ``l_hat`` about 0.007
    off 1/2); ``relax`` drops the stay-on-the-ray constraint of the descent mode. Not invariant
    to loss scale (scaling a loss moves the ray)."""
    r = np.asarray(preference, dtype=np.float64)
    L = np.asarray(losses, dtype=np.float64)
    if np.any(L < 0):
        raise ValueError("EPO needs losses >= 0 (shift them by an ideal point)")
    if np.any(r <= 0):
        raise ValueError("EPO needs a strictly positive preference vector")
    C, _ = normalized(np.asarray(gram, dtype=np.float64))  # the LPs are scale-free
    k = len(C)
    rl = r * np.maximum(L, np.finfo(np.float64).tiny)
    l_hat = rl / rl.sum()
    mu = non_uniformity(rl, np.ones(k))
    a = r * (np.log(l_hat * k) - mu)
    Ca = C @ a
    attempts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    if mu > eps:
        worst = np.flatnonzero(rl >= rl.max() * (1 - 1e-12))
        if np.any(Ca > 0):
            rows = np.flatnonzero(Ca <= 0)
            rows = rows[~np.isin(rows, worst)]
            attempts = [(Ca, np.vstack([C[worst], C[rows]]),
                         np.concatenate([np.zeros(len(worst)), Ca[rows]])),
                        (Ca, C[worst], np.zeros(len(worst)))]
        else:
            attempts = [(Ca, C, np.zeros(k)), (Ca, C[worst], np.zeros(len(worst)))]
    else:
        obj = C @ np.ones(k)
        stay = (Ca[None, :], np.array([min(float(Ca.max()), 0.0)]))
        relaxed = (obj, C, np.zeros(k))
        attempts = [relaxed] if relax else [
            (obj, np.vstack([C, stay[0]]), np.concatenate([np.zeros(k), stay[1]])), relaxed]
    for objective, A_ge, b_ge in attempts:
        alpha = _simplex_lp(objective, A_ge, b_ge)
        if alpha is not None:
            return alpha
    return min_norm_weights(C)
