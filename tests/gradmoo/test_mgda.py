"""MGDA: the KKT conditions of the min-norm problem, and a common descent direction."""

import numpy as np
import pytest
from scipy.optimize import minimize

from hybridmoo.gradmoo import SOLVERS, direction, gram, solve


def kkt_violation(G: np.ndarray, w: np.ndarray) -> float:
    """Largest violation, relative to ||d||^2 + max G_ii, of: w on the simplex,
    (G w)_i >= w^T G w for every i, with equality where w_i > 0."""
    Gw = G @ w
    value = w @ Gw
    scale = value + np.max(np.diag(G))
    return max(float(-w.min()), abs(w.sum() - 1.0), float((value - Gw).max()) / scale,
               float(np.max(np.abs(Gw - value)[w > 1e-8])) / scale)


@pytest.mark.parametrize("k", [2, 3, 4, 6])
@pytest.mark.parametrize("n", [2, 10])
def test_kkt_conditions_and_optimal_value(k, n):
    rng = np.random.default_rng(k * 100 + n)
    for _ in range(5):
        J = rng.normal(size=(k, n)) * np.exp(rng.normal(size=(k, 1)))
        G = gram(J)
        w = solve("mgda", G)
        assert kkt_violation(G, w) < 1e-9
        ref = minimize(lambda v, G=G: v @ G @ v, np.full(k, 1 / k), method="SLSQP",
                       bounds=[(0, 1)] * k,
                       constraints={"type": "eq", "fun": lambda v: v.sum() - 1},
                       options={"ftol": 1e-15, "maxiter": 500})
        assert w @ G @ w <= ref.fun + 1e-9 * np.max(np.diag(G))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_common_descent_direction_when_one_exists(k):
    rng = np.random.default_rng(k)
    base = rng.normal(size=8)
    for _ in range(5):
        J = base + 0.6 * rng.normal(size=(k, 8)) * np.linalg.norm(base) / np.sqrt(8)
        if np.linalg.norm(direction(J, solve("mgda", gram(J)))) < 1e-9:
            continue  # the origin is in the hull: no common descent direction
        d = direction(J, solve("mgda", gram(J)))
        assert np.all(J @ d >= d @ d * (1 - 1e-9)) and d @ d > 0


def test_pareto_stationary_gives_zero_direction():
    J = np.array([[1.0, 2.0, 0.0], [-2.0, -4.0, 0.0]])  # opposed: 0 is in the hull
    d = direction(J, solve("mgda", gram(J)))
    np.testing.assert_allclose(d, 0.0, atol=1e-12)


def test_mgda_ub_is_mgda_on_the_representation_gram():
    assert SOLVERS["mgda-ub"].function is SOLVERS["mgda"].function
    Z = np.random.default_rng(0).normal(size=(3, 12))  # gradients w.r.t. a representation
    np.testing.assert_array_equal(solve("mgda-ub", gram(Z)), solve("mgda", gram(Z)))
