"""Pareto MTL (Lin et al. 2019): one subproblem per reference vector ``u_k``, restricted to the
cone of loss vectors closer (in angle) to ``u_k`` than to every other ``u_j``.

Constraints ``G_j(theta) = (u_j - u_k) . L / ||L|| <= 0`` (unit reference vectors). Main phase
(as the authors' code): MGDA's min-norm problem over the objective gradients plus the gradients
``sum_i (u_j - u_k)_i g_i`` of the violated constraints. Initial phase: min-norm over the
violated constraints' gradients only, which moves the losses back into the cone. All of these
are linear combinations of the objective gradients, so with ``A = [I; U_violated]`` (or
``U_violated`` alone) the problem's Gram is ``A G A^T`` and the weights on the original gradients
are ``A^T beta``. Inside the cone the main phase is plain MGDA.
"""

from __future__ import annotations

import numpy as np

from hybridmoo.gradmoo.mgda import min_norm_weights


def pareto_mtl(gram: np.ndarray, losses: np.ndarray, references: np.ndarray, *,
               index: int, restore: float | None = 0.0) -> np.ndarray:
    """Pareto MTL weights for subproblem ``index`` of the reference vectors ``references``
    (m x k, one row per subproblem, e.g. evenly spread unit vectors; losses >= 0).

    The paper runs the initial phase until the losses lie in the cone, then the main phase.
    This stateless form picks the phase from the point: the initial phase when a constraint is
    violated by more than ``restore`` (default 0: whenever the losses are outside the cone),
    else the main phase; ``restore=None`` always takes the main phase (which can stall on the
    front outside the cone, where MGDA's min-norm is zero). Not invariant to loss scale."""
    U = np.asarray(references, dtype=np.float64)
    L = np.asarray(losses, dtype=np.float64)
    G = np.asarray(gram, dtype=np.float64)
    k = len(G)
    if U.ndim != 2 or U.shape[1] != k:
        raise ValueError(f"references must be m x {k}, got shape {U.shape}")
    if not 0 <= index < len(U):
        raise ValueError(f"index {index} is out of range for {len(U)} reference vectors")
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a reference vector is zero")
    U = U / norms
    W = np.delete(U, index, axis=0) - U[index]
    l_norm = float(np.linalg.norm(L))
    violation = W @ (L / l_norm) if l_norm > 0 else np.full(len(W), -np.inf)
    active = violation > 0
    if restore is not None and np.any(violation > restore):
        A = W[active]
    else:
        A = np.vstack([np.eye(k), W[active]])
    beta = min_norm_weights(A @ G @ A.T)
    return A.T @ beta
