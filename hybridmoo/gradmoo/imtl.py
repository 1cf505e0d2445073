"""IMTL-G (Liu et al. 2021, "Towards impartial multi-task learning").

Find ``d = J^T alpha`` with ``sum(alpha) = 1`` whose projections on every unit gradient
``u_i = g_i / ||g_i||`` are equal: ``u_i . d = (G alpha)_i / ||g_i|| = t``. The paper solves it
relative to task 1 (``alpha_{2:k} = g_1 U^T (D U^T)^{-1}``); the same linear system is solved
here in a symmetric form (minimum-norm least squares), which gives the paper's answer when the
gradients are independent and stays permutation-equivariant when they are not (identical
gradients get equal weights). Objectives with a zero gradient have no unit vector and get
weight 0.
"""

from __future__ import annotations

import numpy as np

from hybridmoo.gradmoo.linalg import nonzero_gradients


def imtl_g(gram: np.ndarray) -> np.ndarray:
    """IMTL-G weights (sum to 1 over the non-zero gradients). Invariant to loss scale: the
    direction of ``d`` does not change when one gradient is scaled (its length does)."""
    G = np.asarray(gram, dtype=np.float64)
    alpha = np.zeros(len(G))
    live = nonzero_gradients(G)
    m = int(live.sum())
    if m == 0:
        return alpha
    Gl = G[np.ix_(live, live)]
    norms = np.sqrt(np.diag(Gl))
    Gl = Gl / np.outer(norms, norms)  # cosines: rescaled unknowns beta_i = alpha_i ||g_i||
    K = np.zeros((m + 1, m + 1))
    K[:m, :m] = Gl
    K[:m, m] = -1.0
    K[m, :m] = 1.0 / norms
    rhs = np.zeros(m + 1)
    rhs[m] = 1.0
    beta = np.linalg.lstsq(K, rhs, rcond=1e-12)[0][:m]
    alpha[live] = beta / norms
    return alpha
