"""Linear, Chebyshev, EPO and Pareto MTL: what each does with the losses and the preference."""

import numpy as np
import pytest

from hybridmoo.gradmoo import direction, gram, solve
from hybridmoo.gradmoo.epo import non_uniformity


def test_linear_weights_are_the_preference():
    G = gram(np.eye(3))
    np.testing.assert_array_equal(solve("linear", G, preference=[0.2, 0.3, 0.5]), [0.2, 0.3, 0.5])


def test_chebyshev_weights_the_worst_weighted_objective():
    G = gram(np.eye(3))
    r = np.array([1.0, 2.0, 0.5])
    w = solve("chebyshev", G, losses=[1.0, 0.8, 3.0], preference=r)  # r L = 1, 1.6, 1.5
    np.testing.assert_array_equal(w, [0.0, 2.0, 0.0])
    w = solve("chebyshev", G, losses=[4.0, 3.0, 3.0], preference=r, ideal=[0.0, 1.0, 0.0])
    np.testing.assert_array_equal(w, [0.5, 1.0, 0.0])  # a tie is split evenly


def test_smoothed_chebyshev_is_a_softmax_that_tends_to_the_max():
    G = gram(np.eye(2))
    r, L = np.array([1.0, 1.0]), np.array([0.3, 0.5])
    w = solve("chebyshev", G, losses=L, preference=r, smoothing=0.1)
    np.testing.assert_allclose(w, np.exp(L / 0.1) / np.exp(L / 0.1).sum())
    sharp = solve("chebyshev", G, losses=L, preference=r, smoothing=1e-3)
    np.testing.assert_allclose(sharp, [0.0, 1.0], atol=1e-12)


def test_epo_keeps_equal_gradients_and_losses_on_the_ray():
    g = np.array([1.0, -2.0, 0.5])
    J = np.tile(g, (3, 1))
    w = solve("epo", gram(J), losses=np.full(3, 0.7), preference=np.ones(3))
    np.testing.assert_allclose(direction(J, w), g)  # every loss falls equally: stays on the ray
    assert w.sum() == pytest.approx(1.0) and np.all(w >= 0)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_epo_on_the_ray_no_loss_increases(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        J = rng.normal(size=(k, 2 * k))
        r = rng.uniform(0.2, 1.0, k)
        w = solve("epo", gram(J), losses=0.5 / r, preference=r)
        assert np.all(J @ direction(J, w) >= -1e-9)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_epo_off_the_ray_moves_towards_it(k):
    """A small step along -d lowers the non-uniformity and never raises the worst r_i L_i."""
    rng = np.random.default_rng(10 + k)
    for _ in range(10):
        J = rng.normal(size=(k, 2 * k))
        r, L = rng.uniform(0.2, 1.0, k), rng.uniform(0.2, 1.0, k)
        d = direction(J, solve("epo", gram(J), losses=L, preference=r))
        worst = np.argmax(r * L)
        assert J[worst] @ d >= -1e-9
        step = 1e-4 / max(np.linalg.norm(J @ d), 1e-12)
        assert non_uniformity(L - step * (J @ d), r) < non_uniformity(L, r)


def test_epo_rejects_negative_losses_and_zero_preferences():
    G = gram(np.eye(2))
    with pytest.raises(ValueError):
        solve("epo", G, losses=[-0.1, 1.0], preference=[1.0, 1.0])
    with pytest.raises(ValueError):
        solve("epo", G, losses=[0.1, 1.0], preference=[0.0, 1.0])


def _cone_setup(rng, k=2):
    refs = np.abs(rng.normal(size=(5, k))) + 0.1
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    return refs


def test_pareto_mtl_inside_its_cone_is_mgda():
    rng = np.random.default_rng(0)
    refs = _cone_setup(rng)
    J = rng.normal(size=(2, 4))
    w = solve("pareto-mtl", gram(J), losses=2.0 * refs[3], preference=refs, index=3)
    np.testing.assert_allclose(w, solve("mgda", gram(J)))


@pytest.mark.parametrize("k", [2, 3])
def test_pareto_mtl_outside_its_cone_reduces_every_violated_constraint(k):
    rng = np.random.default_rng(k)
    refs = _cone_setup(rng, k)
    for _ in range(10):
        J = rng.normal(size=(k, 6))
        L = rng.uniform(0.1, 1.0, k)
        index = int(rng.integers(len(refs)))
        violated = (np.delete(refs, index, 0) - refs[index]) @ (L / np.linalg.norm(L)) > 0
        if not violated.any():
            continue
        constraint_grads = (np.delete(refs, index, 0) - refs[index])[violated] @ J
        for restore in (0.0, None):
            d = direction(J, solve("pareto-mtl", gram(J), losses=L, preference=refs,
                                   index=index, restore=restore))
            assert np.all(constraint_grads @ d >= d @ d * (1 - 1e-9) - 1e-12)
            if restore is None:  # the main phase also keeps every objective from rising
                assert np.all(J @ d >= d @ d * (1 - 1e-9) - 1e-12)


def test_pareto_mtl_rejects_bad_references():
    G = gram(np.eye(2))
    with pytest.raises(ValueError):
        solve("pareto-mtl", G, losses=[1.0, 1.0], preference=[1.0, 1.0], index=0)
    with pytest.raises(ValueError):
        solve("pareto-mtl", G, losses=[1.0, 1.0], preference=np.eye(2), index=2)
