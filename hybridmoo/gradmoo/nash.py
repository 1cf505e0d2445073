"""Nash-MTL (Navon et al. 2022): the bargaining solution ``alpha > 0`` with
``(G alpha)_i = 1 / alpha_i``, i.e. ``g_i . d = 1 / alpha_i`` for ``d = J^T alpha``.

With ``alpha = beta / ||g||`` this is ``C beta = 1 / beta`` for the cosine matrix ``C`` (which
is why the method is invariant to loss scale), the stationarity condition of the strictly
convex ``f(beta) = beta^T C beta / 2 - sum_i log beta_i``; it is minimised here by damped Newton
steps that keep ``beta`` positive (quadratic convergence, no cvxpy). Objectives with a zero
gradient cannot satisfy the equation and get weight 0. Near a Pareto-stationary point the exact
solution runs off to infinity; a small ridge on the diagonal of ``C`` keeps it finite. The
authors' code solves on ``G / ||G||_F``, which scales the direction by ``||G||_F^(1/2)``; the
exact solution returned here always has ``||d||^2 = k``.
"""

from __future__ import annotations

import numpy as np

from hybridmoo.gradmoo.linalg import nonzero_gradients


def _newton(G: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Damped Newton on ``f``; ``G`` has unit diagonal (cosines), so the start ``1/sqrt(k)`` is
    exact for identical gradients and of the right order otherwise."""
    beta = np.full(len(G), 1.0 / np.sqrt(len(G)))

    def f(b: np.ndarray) -> float:
        return float(0.5 * b @ G @ b - np.log(b).sum())

    value = f(beta)
    for _ in range(max_iter):
        grad = G @ beta - 1.0 / beta
        step = np.linalg.solve(G + np.diag(1.0 / beta**2), grad)
        decrement = float(grad @ step)  # f - f* is about decrement / 2
        if decrement < tol:
            if np.all(beta - step > 0.0):  # quadratic convergence: one full step is exact
                beta = beta - step
            break
        t = 1.0
        while np.any(beta - t * step <= 0.0):
            t *= 0.5
        while t > 1e-12 and f(beta - t * step) > value - 0.25 * t * decrement:
            t *= 0.5
        if t <= 1e-12:  # no more progress in floating point
            break
        beta = beta - t * step
        value = f(beta)
    return beta


def nash_mtl(gram: np.ndarray, *, ridge: float = 1e-10, max_iter: int = 100,
             tol: float = 1e-10) -> np.ndarray:
    """Nash-MTL weights ``alpha`` (not normalised). Invariant to loss scale: scaling ``g_i``
    by ``s_i`` divides ``alpha_i`` by ``s_i`` and leaves ``d`` unchanged."""
    G = np.asarray(gram, dtype=np.float64)
    alpha = np.zeros(len(G))
    live = nonzero_gradients(G)
    if not live.any():
        return alpha
    norms = np.sqrt(np.diag(G)[live])
    cosines = G[np.ix_(live, live)] / np.outer(norms, norms) + ridge * np.eye(len(norms))
    alpha[live] = _newton(cosines, max_iter, tol) / norms  # G alpha = 1/alpha <=> C b = 1/b
    return alpha
