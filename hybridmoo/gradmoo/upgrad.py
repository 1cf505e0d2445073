"""UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"), the
default aggregator of torchjd.

Each gradient ``g_i`` is projected onto the dual cone of the gradients, ``{x : J x >= 0}``, and
the projections are combined with a preference ``p`` (default the mean, ``p_i = 1/k``), so the
direction ``d`` never increases any loss to first order and equals ``sum_i p_i g_i`` when no two
gradients conflict. On the Gram matrix (Proposition 1 of the paper) the projection of
``J^T u`` is ``J^T v`` with ``v = argmin_{v >= u} v^T G v``, hence ``w = sum_i v(p_i e_i)``.

Like torchjd, the QP is solved on ``A = G / trace(G) + reg_eps I`` with ``reg_eps = 1e-4``: the
regulariser makes ``A`` positive definite (singular and round-off-indefinite Grams, rank-
deficient Jacobians), hence ``v`` unique, and reproduces torchjd's numbers (its documented
``[0.2929, 1.9004, 1.9004]`` on ``J = [[-4, 1, 1], [6, 1, 1]]``; the exact projection gives
``[0.2924, 1.9006, 1.9006]``). The price is a slight relaxation of the cone,
``J d >= -reg_eps trace(G) w``; ``reg_eps = 0`` gives the exact projection (``J d >= 0`` to
round-off). Unlike torchjd (which switches to the plain mean when ``trace(G) < 1e-4``, an
absolute threshold that would average all small gradients) only a zero Gram skips the
normalisation. The QP is small (k x k) and solved exactly by a primal active-set method
(Lawson-Hanson on the box ``v >= u``) rather than ``scipy.optimize.nnls``, whose results changed
between SciPy releases.
"""

from __future__ import annotations

import numpy as np


def _face_minimum(A: np.ndarray, u: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Minimiser of ``v^T A v`` with ``v_j = u_j`` off ``free`` and ``v`` unconstrained on it."""
    z = u.copy()
    idx = np.flatnonzero(free)
    if len(idx):
        rhs = -A[np.ix_(idx, ~free)] @ u[~free]
        z[idx] = np.linalg.lstsq(A[np.ix_(idx, idx)], rhs, rcond=None)[0]
    return z


def project_weights(A: np.ndarray, u: np.ndarray, *, max_iter: int | None = None
                    ) -> np.ndarray:
    """``argmin_{v >= u} v^T A v`` for a positive semi-definite ``A``: the weights of the
    projection of ``J^T u`` onto the dual cone of the rows of ``J`` when ``A = J J^T``."""
    k = len(A)
    v = u.astype(np.float64).copy()
    free = np.zeros(k, dtype=bool)
    max_iter = 10 * k + 10 if max_iter is None else max_iter
    steps = 0
    while steps < max_iter:
        g = A @ v  # half the gradient; KKT: g = 0 on the free set, g >= 0 on the bound one
        tol = 1e-12 * float(np.abs(A).max(initial=0.0)) * float(np.abs(v).max(initial=1.0))
        candidates = np.where(~free & (g < -tol), g, 0.0)
        if not candidates.any():
            break
        entering = int(np.argmin(candidates))
        free[entering] = True
        while steps < max_iter:
            steps += 1
            z = _face_minimum(A, u, free)
            blocked = free & (z <= u)
            if not blocked.any():
                v = z
                break
            # step from v towards z until the first free coordinate reaches its bound
            idx = np.flatnonzero(blocked)
            gap, fall = v[idx] - u[idx], v[idx] - z[idx]
            ratios = np.zeros(len(idx))  # fall <= 0 only where v = z = u: no step possible
            np.divide(gap, fall, out=ratios, where=fall > 0)
            t = float(ratios.min())
            v = v + t * (z - v)
            drop = free & (v - u <= 1e-14 * np.maximum(np.abs(v), 1.0))
            drop[idx[np.argmin(ratios)]] = True
            v[drop] = u[drop]
            free &= ~drop
            if drop[entering] and t == 0.0:  # round-off: the entering index cannot move
                return v
    return v


def upgrad(gram: np.ndarray, *, pref_vector: np.ndarray | None = None,
           reg_eps: float = 1e-4) -> np.ndarray:
    """UPGrad weights ``w = sum_i p_i v_i`` with ``v_i = argmin_{v >= e_i} v^T A v``,
    ``A = G / trace(G) + reg_eps I`` and ``p = pref_vector`` (default ``1/k`` each; not
    normalised, as in torchjd). Not invariant to loss scale: scaling ``g_i`` scales its
    projection, so its share of ``d`` grows. ``reg_eps = 0`` is the exact projection."""
    G = np.asarray(gram, dtype=np.float64)
    k = len(G)
    if pref_vector is None:
        p = np.full(k, 1.0 / k)
    else:
        p = np.array(pref_vector, dtype=np.float64)
        if p.shape != (k,) or not np.all(np.isfinite(p)) or np.any(p < 0):
            raise ValueError(f"pref_vector must be {k} finite values >= 0, got {pref_vector!r}")
    if not (np.isfinite(reg_eps) and reg_eps >= 0):
        raise ValueError(f"reg_eps must be a finite number >= 0, got {reg_eps!r}")
    trace = float(np.trace(G))
    A = G / trace if trace > 0 else np.zeros_like(G)
    lam, Q = np.linalg.eigh(A)
    if lam[0] < 0:  # round-off in J J^T: an indefinite A would make the QP unbounded
        A = (Q * np.clip(lam, 0.0, None)) @ Q.T
    A = A + reg_eps * np.eye(k)
    w = np.zeros(k)
    for i in np.flatnonzero(p > 0):
        u = np.zeros(k)
        u[i] = p[i]  # v(p_i e_i) = p_i v(e_i); solving it scaled keeps torchjd's tolerances
        w += project_weights(A, u)
    return w
