"""PCGrad: the projected gradients do not conflict, orders come from the passed rng."""

import numpy as np

from hybridmoo.gradmoo import direction, gram, solve
from hybridmoo.gradmoo.pcgrad import project_conflicting


def test_two_projected_gradients_no_longer_conflict():
    rng = np.random.default_rng(0)
    for _ in range(20):
        J = rng.normal(size=(2, 5))
        C = project_conflicting(gram(J), [[1], [0]])
        projected = C @ J
        assert projected[0] @ J[1] >= -1e-12 and projected[1] @ J[0] >= -1e-12


def test_weights_follow_the_orders_drawn_from_the_rng():
    rng = np.random.default_rng(1)
    J = rng.normal(size=(4, 6))
    G = gram(J)
    draw = np.random.default_rng(42)
    orders = [[j for j in draw.permutation(4) if j != i] for i in range(4)]
    expected = project_conflicting(G, orders).sum(axis=0)
    np.testing.assert_array_equal(solve("pcgrad", G, rng=np.random.default_rng(42)), expected)


def test_with_three_objectives_the_order_matters():
    g = np.array([[1.0, 0.0], [-0.8, 1.0], [-0.8, -1.0]])
    G = gram(g)
    forward = project_conflicting(G, [[1, 2], [0, 2], [0, 1]])
    backward = project_conflicting(G, [[2, 1], [2, 0], [1, 0]])
    assert not np.allclose(direction(g, forward[0]), direction(g, backward[0]))
    seen = {tuple(np.round(solve("pcgrad", G, rng=np.random.default_rng(s)), 9))
            for s in range(20)}
    assert len(seen) > 1


def test_no_conflict_means_plain_sum():
    J = np.array([[1.0, 0.2], [0.3, 1.0], [0.5, 0.5]])
    np.testing.assert_allclose(solve("pcgrad", gram(J), rng=np.random.default_rng(0)), 1.0)
