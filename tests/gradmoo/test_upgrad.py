"""UPGrad: torchjd's fixture and the properties that define it, against independent solutions
(exhaustive searches over the faces of the box QP on the Gram, and over the active rows of the
projection onto the dual cone in parameter space)."""

import itertools

import numpy as np
import pytest

from hybridmoo.gradmoo import direction, gram, solve
from hybridmoo.gradmoo.upgrad import project_weights, upgrad

J_FIXTURE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def jacobians(k: int, seed: int) -> list[np.ndarray]:
    """Random, rank-deficient (fewer parameters than objectives, a low-rank product, a repeated
    row, a zero row) and strongly conflicting (g and about -g) Jacobians with k objectives."""
    rng = np.random.default_rng([seed, k])
    out = [rng.normal(size=(k, 3 * k)) * np.exp(rng.normal(size=(k, 1))),
           rng.normal(size=(k, max(k - 1, 1))),
           rng.normal(size=(k, 1)) @ rng.normal(size=(1, 5))]
    repeated = rng.normal(size=(k, 4))
    repeated[-1] = repeated[0]
    zero_row = rng.normal(size=(k, 6))
    zero_row[-1] = 0.0
    opposed = rng.normal(size=(k, 5))
    opposed[1] = -opposed[0] + 0.05 * rng.normal(size=5)
    return [*out, repeated, zero_row, opposed]


def box_qp_by_faces(A: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``argmin_{v >= u} v^T A v`` (A positive definite) by trying every face of the box."""
    k = len(A)
    best, best_value = None, np.inf
    for mask in itertools.product([False, True], repeat=k):
        free = np.array(mask)
        z = u.astype(float).copy()
        if free.any():
            z[free] = np.linalg.solve(A[np.ix_(free, free)], -A[np.ix_(free, ~free)] @ u[~free])
        if np.all(z >= u - 1e-12) and z @ A @ z < best_value:
            best, best_value = z, z @ A @ z
    assert best is not None
    return best


def dual_cone_projection(J: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``argmin ||x - g||^2`` subject to ``J x >= 0``, in parameter space: the projection is
    the orthogonal projection of ``g`` onto the null space of its active rows ``J_S``, so the
    nearest feasible one of those projections over all row subsets ``S``."""
    best, best_distance = None, np.inf
    tol = 1e-10 * np.linalg.norm(J) * np.linalg.norm(g)
    for mask in itertools.product([False, True], repeat=len(J)):
        rows = J[np.array(mask)]
        x = g - np.linalg.pinv(rows) @ (rows @ g) if len(rows) else g.copy()
        if np.all(J @ x >= -tol) and np.linalg.norm(x - g) < best_distance:
            best, best_distance = x, np.linalg.norm(x - g)
    assert best is not None
    return best


def regularized(G: np.ndarray, reg_eps: float) -> np.ndarray:
    trace = np.trace(G)
    return (G / trace if trace > 0 else 0 * G) + reg_eps * np.eye(len(G))


def test_torchjd_fixture():
    """torchjd's documentation (the usage example of ``torchjd.aggregation``, the UPGrad
    docstring and tests/doc/test_aggregation.py): UPGrad()(J) = [0.2929, 1.9004, 1.9004],
    UPGradWeighting()(J J^T) = [1.1109, 0.7894]."""
    w = solve("upgrad", gram(J_FIXTURE))
    np.testing.assert_allclose(direction(J_FIXTURE, w), [0.2929, 1.9004, 1.9004], atol=1e-4)
    np.testing.assert_allclose(w, [1.1109, 0.7894], atol=1e-4)


def test_exact_fixture_is_half_the_pcgrad_sum():
    """With two conflicting gradients each projection removes the component along the other:
    w = ([1, 22/38] + [22/18, 1]) / 2 = [10/9, 15/19]; torchjd's numbers differ by its
    regulariser (0.2929 vs 0.2924)."""
    w = upgrad(gram(J_FIXTURE), reg_eps=0.0)
    np.testing.assert_allclose(w, [10 / 9, 15 / 19], rtol=1e-12)
    np.testing.assert_allclose(direction(J_FIXTURE, w), np.array([0.5848, 3.8012, 3.8012]) / 2,
                               atol=1e-4)


@pytest.mark.parametrize("k", range(2, 7))
@pytest.mark.parametrize("reg_eps", [1e-4, 1e-9])
def test_each_projection_is_the_box_qp_minimum(k, reg_eps):
    """(With the tiny regulariser A is nearly singular on rank-deficient Jacobians: v itself is
    then ill-determined, the projected vector J^T v and the objective are not.)"""
    for J in jacobians(k, seed=1):
        A = regularized(gram(J), reg_eps)
        J_unit = J / np.sqrt(np.trace(gram(J)))
        for i in range(k):
            u = np.eye(k)[i]
            v, best = project_weights(A, u), box_qp_by_faces(A, u)
            assert np.all(v >= u)
            assert v @ A @ v == pytest.approx(best @ A @ best, rel=1e-10)
            np.testing.assert_allclose(J_unit.T @ v, J_unit.T @ best, atol=1e-7)
            if reg_eps == 1e-4:
                np.testing.assert_allclose(v, best, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", range(2, 7))
def test_direction_is_in_the_dual_cone(k):
    for J in jacobians(k, seed=2):
        G = gram(J)
        scale = np.trace(G)
        exact = upgrad(G, reg_eps=0.0)
        assert np.all(J @ direction(J, exact) >= -1e-9 * scale * np.abs(exact).max())
        # the regulariser relaxes the cone by exactly its own size (KKT of the regularised QP)
        w = upgrad(G)
        assert np.all(J @ direction(J, w) >= -1e-4 * scale * w - 1e-9 * scale * w.max())


@pytest.mark.parametrize("k", range(2, 7))
def test_exact_direction_is_the_mean_of_the_projected_gradients(k):
    for J in jacobians(k, seed=3):
        mean = np.mean([dual_cone_projection(J, g) for g in J], axis=0)
        d = direction(J, upgrad(gram(J), reg_eps=0.0))
        np.testing.assert_allclose(d, mean, atol=1e-6 * np.linalg.norm(J))


def test_strong_conflict_is_actually_projected():
    """(So the test above can fail: on opposed gradients the mean is not in the cone.)"""
    J = jacobians(3, seed=3)[-1]
    assert np.any(J @ J.mean(axis=0) < -1e-3)
    assert not np.allclose(direction(J, upgrad(gram(J))), J.mean(axis=0), atol=1e-3)


@pytest.mark.parametrize("k", range(2, 7))
@pytest.mark.parametrize("reg_eps", [1e-4, 0.0])
def test_non_conflicting_gradients_give_the_preference_weighted_sum(k, reg_eps):
    rng = np.random.default_rng(k)
    J = np.abs(rng.normal(size=(k, 2 * k)))  # all pairwise inner products >= 0
    J[0, :] = 0.0
    J[0, 0] = 1.0
    J[1, 0] = 0.0  # an orthogonal pair: no conflict either
    assert np.all(gram(J) >= 0)
    np.testing.assert_allclose(upgrad(gram(J), reg_eps=reg_eps), np.full(k, 1 / k), rtol=1e-12)
    p = rng.uniform(0.0, 2.0, k)
    np.testing.assert_allclose(upgrad(gram(J), pref_vector=p, reg_eps=reg_eps), p, rtol=1e-12)


@pytest.mark.parametrize("k", range(2, 7))
def test_weights_are_at_least_the_preference(k):
    """w = sum_i p_i v_i with v_i >= e_i (so v_i >= 0): every g_i keeps at least p_i."""
    rng = np.random.default_rng(10 + k)
    for J in jacobians(k, seed=4):
        p = rng.uniform(0.0, 1.0, k)
        p[0] = 0.0
        w = upgrad(gram(J), pref_vector=p)
        assert np.all(w >= p - 1e-12)


@pytest.mark.parametrize("k", range(2, 7))
def test_permuting_objectives_permutes_weights(k):
    rng = np.random.default_rng(20 + k)
    for J in jacobians(k, seed=5):
        perm = rng.permutation(k)
        p = rng.uniform(0.1, 1.0, k)
        w = upgrad(gram(J), pref_vector=p)
        np.testing.assert_allclose(upgrad(gram(J[perm]), pref_vector=p[perm]), w[perm],
                                   rtol=1e-7, atol=1e-9 * np.abs(w).max())


def test_scaling_one_objective_scales_its_projection():
    """Not invariant to loss scale: the dual cone does not change when g_i is scaled by s_i, so
    the direction becomes sum_i p_i s_i pi(g_i), UPGrad with preference p * s."""
    rng = np.random.default_rng(6)
    J = rng.normal(size=(3, 7))
    s = np.array([0.5, 1.0, 4.0])
    d_scaled = direction(s[:, None] * J, upgrad(gram(s[:, None] * J), reg_eps=0.0))
    d_pref = direction(J, upgrad(gram(J), pref_vector=s / 3, reg_eps=0.0))
    np.testing.assert_allclose(d_scaled, d_pref, rtol=1e-8)
    d = direction(J, upgrad(gram(J), reg_eps=0.0))
    assert d @ d_scaled / (np.linalg.norm(d) * np.linalg.norm(d_scaled)) < 1 - 1e-3


def test_scaling_every_objective_together_keeps_the_weights():
    J = np.random.default_rng(7).normal(size=(4, 6))
    w = upgrad(gram(J))
    for c in (1e-8, 1e-3, 1e4):
        np.testing.assert_allclose(upgrad(gram(c * J)), w, rtol=1e-9)


def test_zero_gram_gives_the_preference():
    for reg_eps in (1e-4, 0.0):
        np.testing.assert_array_equal(upgrad(np.zeros((3, 3)), reg_eps=reg_eps), [1 / 3] * 3)


def test_options_through_solve_and_their_validation():
    G = gram(J_FIXTURE)
    np.testing.assert_allclose(solve("upgrad", G, pref_vector=[0.2, 0.8], reg_eps=0.0),
                               upgrad(G, pref_vector=np.array([0.2, 0.8]), reg_eps=0.0))
    with pytest.raises(ValueError, match="pref_vector"):
        upgrad(G, pref_vector=[1.0, -1.0])
    with pytest.raises(ValueError, match="pref_vector"):
        upgrad(G, pref_vector=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="reg_eps"):
        upgrad(G, reg_eps=-1e-4)
