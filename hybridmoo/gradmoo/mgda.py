"""MGDA (Sener & Koltun 2018): the minimum-norm point of the convex hull of the gradients.

``min_w ||J^T w||^2 = w^T G w`` over the simplex. Two objectives have a closed form; more use
Frank-Wolfe as in the paper (start from the best pair, exact line search towards the vertex with
the smallest ``(G w)_t``), then a short active-set polish on the support Frank-Wolfe found so the
result meets the KKT conditions to round-off instead of to Frank-Wolfe's slow tolerance.

MGDA-UB is this same solver applied to the Gram of the gradients with respect to a shared
representation ``Z`` (``G = J_Z J_Z^T``, batch x features flattened); the caller computes that
Gram, and the weights it returns are then applied to the gradients of the shared parameters.
"""

from __future__ import annotations

import numpy as np

from hybridmoo.gradmoo.linalg import normalized


def _segment_min(aa: float, ab: float, bb: float) -> float:
    """``gamma`` in [0, 1] minimising ``||(1 - gamma) a + gamma b||^2`` given inner products."""
    denom = aa - 2.0 * ab + bb
    if denom <= 0.0:  # a == b: any gamma; keep a
        return 0.0
    return float(np.clip((aa - ab) / denom, 0.0, 1.0))


def _two(G: np.ndarray) -> np.ndarray:
    denom = G[0, 0] + G[1, 1] - 2.0 * G[0, 1]
    if denom <= 1e-15 * max(G[0, 0] + G[1, 1], 1e-300):  # identical gradients: split evenly
        return np.array([0.5, 0.5])
    w0 = float(np.clip((G[1, 1] - G[0, 1]) / denom, 0.0, 1.0))
    return np.array([w0, 1.0 - w0])


def _best_pair(G: np.ndarray) -> np.ndarray:
    k = len(G)
    best, w = np.inf, np.full(k, 1.0 / k)
    for i in range(k):
        for j in range(i + 1, k):
            pair = _two(G[np.ix_([i, j], [i, j])])
            value = pair @ G[np.ix_([i, j], [i, j])] @ pair
            if value < best - 1e-15:
                best, w = value, np.zeros(k)
                w[[i, j]] = pair
    return w


def _polish(G: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Solve the KKT system on the support of ``w`` exactly (dropping indices that come out
    negative); keep the result only if it is feasible and no worse than ``w``."""
    support = w > 1e-9
    for _ in range(len(G)):
        idx = np.flatnonzero(support)
        m = len(idx)
        K = np.zeros((m + 1, m + 1))
        K[:m, :m] = G[np.ix_(idx, idx)]
        K[:m, m] = K[m, :m] = 1.0
        rhs = np.zeros(m + 1)
        rhs[m] = 1.0
        sol = np.linalg.lstsq(K, rhs, rcond=None)[0][:m]
        if np.all(sol >= 0.0):
            candidate = np.zeros(len(G))
            candidate[idx] = sol / sol.sum()
            if candidate @ G @ candidate <= w @ G @ w + 1e-14:
                return candidate
            return w
        support[idx[np.argmin(sol)]] = False
    return w


def min_norm_weights(gram: np.ndarray, *, max_iter: int = 500, tol: float = 1e-12) -> np.ndarray:
    """Weights on the simplex of the minimum-norm element of the convex hull of the gradients
    whose Gram is ``gram`` (exact for k <= 2, Frank-Wolfe + polish for more)."""
    G, _ = normalized(np.asarray(gram, dtype=np.float64))
    k = len(G)
    if k == 1:
        return np.ones(1)
    if k == 2:
        return _two(G)
    w = _best_pair(G)
    for _ in range(max_iter):
        Gw = G @ w
        t = int(np.argmin(Gw))
        gamma = _segment_min(float(w @ Gw), float(Gw[t]), float(G[t, t]))
        new = (1.0 - gamma) * w
        new[t] += gamma
        if np.abs(new - w).sum() < tol:
            w = new
            break
        w = new
    return _polish(G, w)


def mgda(gram: np.ndarray, *, max_iter: int = 500, tol: float = 1e-12) -> np.ndarray:
    """MGDA min-norm weights (sum to 1). Not invariant to loss scale: the objective with the
    smaller gradient gets the larger weight. For MGDA-UB pass the Gram of the gradients with
    respect to the shared representation."""
    return min_norm_weights(gram, max_iter=max_iter, tol=tol)
