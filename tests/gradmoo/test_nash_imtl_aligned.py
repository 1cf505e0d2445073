"""Nash-MTL, IMTL-G and Aligned-MTL: the equations that define them."""

import numpy as np
import pytest

from hybridmoo.gradmoo import direction, gram, solve
from hybridmoo.gradmoo.aligned import alignment_matrix


@pytest.mark.parametrize("k", [2, 3, 5])
def test_nash_mtl_bargaining_equation(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        J = rng.normal(size=(k, 2 * k)) * np.exp(rng.normal(size=(k, 1)))
        alpha = solve("nash-mtl", gram(J))
        d = direction(J, alpha)
        assert np.all(alpha > 0)
        np.testing.assert_allclose(J @ d, 1.0 / alpha, rtol=1e-7)
        assert d @ d == pytest.approx(k, rel=1e-7)


def test_nash_mtl_two_objectives_closed_form():
    """For k = 2: alpha_2 = alpha_1 sqrt(G11 / G22), alpha_1 = (G11 + G12 sqrt(G11/G22))^-1/2."""
    G = gram(np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]))
    a1 = 1.0 / np.sqrt(G[0, 0] + G[0, 1] * np.sqrt(G[0, 0] / G[1, 1]))
    np.testing.assert_allclose(solve("nash-mtl", G), [a1, a1 * np.sqrt(G[0, 0] / G[1, 1])],
                               rtol=1e-8)


def test_nash_mtl_zero_gradient_gets_weight_zero():
    J = np.random.default_rng(0).normal(size=(3, 5))
    J[1] = 0.0
    alpha = solve("nash-mtl", gram(J))
    assert alpha[1] == 0.0
    live = [0, 2]
    np.testing.assert_allclose((J @ direction(J, alpha))[live], 1.0 / alpha[live], rtol=1e-7)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_imtl_g_equal_projections_on_unit_gradients(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        J = rng.normal(size=(k, 2 * k)) * np.exp(rng.normal(size=(k, 1)))
        alpha = solve("imtl-g", gram(J))
        proj = (J / np.linalg.norm(J, axis=1, keepdims=True)) @ direction(J, alpha)
        np.testing.assert_allclose(proj, proj[0], rtol=1e-8, atol=1e-12)
        assert alpha.sum() == pytest.approx(1.0)


def test_imtl_g_two_objectives_bisect_the_unit_gradients():
    J = np.array([[3.0, 0.0], [-1.0, 1.0]])
    d = direction(J, solve("imtl-g", gram(J)))
    u = J / np.linalg.norm(J, axis=1, keepdims=True)
    bisector = u.sum(axis=0)
    assert abs(d[0] * bisector[1] - d[1] * bisector[0]) < 1e-12 and d @ bisector > 0


@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_aligned_gradients_are_orthogonal_with_equal_norms(k, mode):
    rng = np.random.default_rng(k)
    J = rng.normal(size=(k, 2 * k)) * np.exp(rng.normal(size=(k, 1)))
    G = gram(J)
    W = alignment_matrix(G, scale_mode=mode)
    lam = np.linalg.eigvalsh(G)
    target = {"min": lam.min(), "median": np.median(lam), "rmse": lam.mean()}[mode]
    np.testing.assert_allclose(W @ G @ W, target * np.eye(k), atol=1e-9 * lam.max())
    np.testing.assert_allclose(solve("aligned-mtl", G, scale_mode=mode), W.sum(axis=1))


def test_aligned_rank_deficient_keeps_the_range():
    rng = np.random.default_rng(0)
    J = rng.normal(size=(2, 4))
    J = np.vstack([J, J[0] + J[1]])  # rank 2 with 3 objectives
    G = gram(J)
    W = alignment_matrix(G)
    P = np.linalg.pinv(G) @ G
    lam = np.linalg.eigvalsh(G)[1:]
    np.testing.assert_allclose(W @ G @ W, lam.min() * P, atol=1e-9 * lam.max())
