"""Aligned-MTL (Senushkin et al. 2023, "Independent component alignment for multi-task
learning").

With ``G = V diag(lambda) V^T`` the aligned gradients ``J_hat = W J``,
``W = V diag(sqrt(lambda_target / lambda)) V^T`` (over the non-zero eigenvalues), are orthogonal
with equal squared norms ``lambda_target``: the condition number of the linear system becomes 1.
The direction is their sum, ``d = J_hat^T 1 = J^T W 1``, so the weights on the original
gradients are ``W 1``.
"""

from __future__ import annotations

import numpy as np

_TARGETS = {"min": np.min, "median": np.median, "rmse": np.mean}


def alignment_matrix(gram: np.ndarray, *, scale_mode: str = "min",
                     rank_rtol: float = 1e-10) -> np.ndarray:
    """``W`` (k x k, symmetric) with ``W G W = lambda_target P`` (``P`` the projector on the
    range of ``G``): the aligned gradients ``W J`` are orthogonal with equal norms.
    ``scale_mode`` picks ``lambda_target``: "min" (the paper's default, the smallest non-zero
    eigenvalue), "median" or "rmse" (mean eigenvalue); eigenvalues below ``rank_rtol`` times
    the largest count as zero (rank-deficient Jacobians)."""
    if scale_mode not in _TARGETS:
        raise ValueError(f"scale_mode must be one of {sorted(_TARGETS)}, got {scale_mode!r}")
    G = np.asarray(gram, dtype=np.float64)
    lam, V = np.linalg.eigh(G)
    top = float(lam.max(initial=0.0))
    if top <= 0:
        return np.zeros_like(G)
    keep = lam > rank_rtol * top
    lam, V = lam[keep], V[:, keep]
    target = float(_TARGETS[scale_mode](lam))
    return (V * np.sqrt(target / lam)) @ V.T


def aligned_mtl(gram: np.ndarray, *, scale_mode: str = "min",
                rank_rtol: float = 1e-10) -> np.ndarray:
    """Aligned-MTL weights ``W 1`` (see :func:`alignment_matrix` for the options). Not
    invariant to loss scale."""
    W = alignment_matrix(gram, scale_mode=scale_mode, rank_rtol=rank_rtol)
    return W @ np.ones(len(W))
