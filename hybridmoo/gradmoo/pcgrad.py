"""PCGrad (Yu et al. 2020): project each gradient off the gradients it conflicts with.

Every projection ``g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j`` keeps ``g_i`` a linear combination
of the original gradients, so the projected gradients are tracked as coefficient rows and only
the Gram matrix is needed. As in the paper, ``g_i`` is projected against the *original*
``g_j`` (j != i) in a random order drawn per task; objectives with a zero gradient are skipped.
For two objectives the order does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridmoo.gradmoo.linalg import nonzero_gradients


def project_conflicting(gram: np.ndarray, orders: Sequence[Sequence[int]]) -> np.ndarray:
    """Coefficient rows ``C`` (k x k) of the projected gradients ``g_i^PC = sum_j C_ij g_j``,
    projecting ``g_i`` against the tasks in ``orders[i]`` one after another."""
    G = np.asarray(gram, dtype=np.float64)
    k = len(G)
    live = nonzero_gradients(G)
    C = np.eye(k)
    for i, order in enumerate(orders):
        c = C[i]
        for j in order:
            if j == i or not live[j]:
                continue
            dot = float(c @ G[:, j])
            if dot < 0.0:
                c[j] -= dot / G[j, j]
    return C


def pcgrad(gram: np.ndarray, rng: np.random.Generator, *, reduction: str = "sum") -> np.ndarray:
    """PCGrad weights on the original gradients; ``reduction`` "sum" (the paper's) or "mean".
    Random (deterministic given ``rng``). Not invariant to loss scale."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    k = len(gram)
    orders = [[j for j in rng.permutation(k) if j != i] for i in range(k)]
    w = project_conflicting(gram, orders).sum(axis=0)
    return w / k if reduction == "mean" else w
