"""CAGrad: c = 0 is the mean gradient; otherwise d solves the primal problem."""

import numpy as np
import pytest

from hybridmoo.gradmoo import direction, gram, solve


@pytest.mark.parametrize("k", [2, 3, 5])
def test_c_zero_is_the_mean_gradient(k):
    J = np.random.default_rng(k).normal(size=(k, 6))
    w = solve("cagrad", gram(J), c=0.0)
    np.testing.assert_allclose(direction(J, w), J.mean(axis=0), atol=1e-14)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("c", [0.4, 0.8])
def test_direction_maximises_the_worst_improvement_in_the_ball(k, c):
    """max_d min_i g_i . d subject to ||d - g0|| <= c ||g0||: d lies on the ball's boundary and
    no sampled point of the ball does better."""
    rng = np.random.default_rng(k)
    for _ in range(3):
        J = rng.normal(size=(k, 6))
        g0 = J.mean(axis=0)
        radius = c * np.linalg.norm(g0)
        d = direction(J, solve("cagrad", gram(J), c=c, rescale=0))
        assert np.linalg.norm(d - g0) == pytest.approx(radius, rel=1e-6)
        u = rng.normal(size=(4000, 6))
        u *= (rng.uniform(size=(4000, 1)) ** (1 / 6)) / np.linalg.norm(u, axis=1, keepdims=True)
        others = g0 + radius * u
        assert (J @ d).min() >= (others @ J.T).min(axis=1).max() - 1e-6 * radius**2


def test_rescale_modes():
    J = np.random.default_rng(0).normal(size=(3, 5))
    raw = solve("cagrad", gram(J), c=0.5, rescale=0)
    np.testing.assert_allclose(solve("cagrad", gram(J), c=0.5), raw / 1.25)
    np.testing.assert_allclose(solve("cagrad", gram(J), c=0.5, rescale=2), raw / 1.5)
    with pytest.raises(ValueError):
        solve("cagrad", gram(J), c=-1.0)
