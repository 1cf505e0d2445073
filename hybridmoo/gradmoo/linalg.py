"""Small linear-algebra helpers every solver shares: the Gram matrix, the update direction,
input validation and the tolerance below which an objective's gradient counts as zero."""

from __future__ import annotations

import numpy as np

ZERO_GRAD_RTOL = 1e-12
"""An objective whose squared gradient norm is below this fraction of the largest one has a
zero gradient (it is given weight 0 by solvers that would otherwise divide by its norm)."""


def gram(jacobian: np.ndarray) -> np.ndarray:
    """``G = J J^T`` (k x k) of a Jacobian ``J`` (k objectives x n parameters), float64."""
    J = np.asarray(jacobian, dtype=np.float64)
    if J.ndim != 2:
        raise ValueError(f"a Jacobian must be 2-D (objectives x parameters), got shape {J.shape}")
    return J @ J.T


def direction(jacobian: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The update direction ``d = J^T w``; a descent step moves parameters by ``-lr * d``."""
    J = np.asarray(jacobian, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if J.ndim != 2 or w.shape != (J.shape[0],):
        raise ValueError(f"weights of shape {w.shape} do not fit a Jacobian of shape {J.shape}")
    return J.T @ w


def validate_gram(matrix: np.ndarray, rtol: float = 1e-8) -> np.ndarray:
    """Return ``matrix`` as a symmetric float64 Gram matrix, or raise ``ValueError`` when it is
    not square, not finite, not symmetric or clearly not positive semi-definite (relative
    tolerance ``rtol`` of its largest entry)."""
    G = np.array(matrix, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1] or G.shape[0] == 0:
        raise ValueError(f"a Gram matrix must be square k x k with k >= 1, got shape {G.shape}")
    if not np.all(np.isfinite(G)):
        raise ValueError("the Gram matrix holds NaN or infinite values")
    scale = float(np.max(np.abs(G), initial=0.0))
    tol = rtol * max(scale, np.finfo(np.float64).tiny)
    if np.max(np.abs(G - G.T)) > tol:
        raise ValueError("the Gram matrix is not symmetric")
    G = (G + G.T) / 2
    if np.any(np.diag(G) < -tol) or np.linalg.eigvalsh(G)[0] < -tol * len(G):
        raise ValueError("the Gram matrix is not positive semi-definite (is it J J^T?)")
    return G


def nonzero_gradients(G: np.ndarray) -> np.ndarray:
    """Mask of the objectives whose gradient is not (numerically) zero."""
    diag = np.clip(np.diag(G), 0.0, None)
    top = float(diag.max(initial=0.0))
    return diag > ZERO_GRAD_RTOL * top if top > 0 else np.zeros(len(G), dtype=bool)


def normalized(G: np.ndarray) -> tuple[np.ndarray, float]:
    """``G / s`` with ``s`` its mean diagonal (1 when G is zero), and ``s``: solvers whose result
    does not depend on the overall scale work on the normalised matrix for stable tolerances."""
    s = float(np.trace(G)) / len(G)
    s = s if s > 0 else 1.0
    return G / s, s
