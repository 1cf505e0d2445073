"""The test problems: analytic gradients, analytic fronts, and the helpers around them."""

import numpy as np
import pytest

from hybridmoo.gradmoo.problems import (
    PROBLEMS,
    CAGradToy,
    front_distance,
    preference_rays,
    ray_distance,
    ray_inputs,
)


@pytest.fixture(params=list(PROBLEMS))
def problem(request):
    return PROBLEMS[request.param]()


def test_analytic_gradients_match_finite_differences(problem):
    rng = np.random.default_rng(0)
    points = [problem.start(rng) for _ in range(4)]
    if isinstance(problem, CAGradToy):
        points += [np.array([-8.5, 7.5]), np.array([9.0, -1.0])]  # both halves of the toy
    for x in points:
        _, J = problem.evaluate(x)
        h = 1e-6
        fd = np.array([(problem.evaluate(x + h * e)[0] - problem.evaluate(x - h * e)[0]) / (2 * h)
                       for e in np.eye(problem.n_var)]).T
        np.testing.assert_allclose(J, fd, rtol=1e-5, atol=1e-6)


def near_pareto_set(problem, rng, num):
    """Random points, most of them close to the Pareto set, where a wrong front would show."""
    if problem.name == "fonseca-fleming":
        s = rng.uniform(-1.2, 1.2, (num, 1))
        return s / np.sqrt(problem.n_var) + rng.normal(0, 0.02, (num, problem.n_var))
    if problem.name == "zdt1":
        X = rng.uniform(0, 0.01, (num, problem.n_var))
        X[:, 0] = rng.uniform(0, 1, num)
        return X
    band = np.column_stack([rng.uniform(-8, 8, num), rng.uniform(-9, -7.5, num)])
    return np.vstack([band, rng.uniform(-10, 10, (num, 2))])


def test_no_sampled_point_dominates_the_front(problem):
    X = near_pareto_set(problem, np.random.default_rng(1), 5000)
    F = np.array([problem.evaluate(x)[0] for x in X])
    Z = problem.normalize(problem.front(401))
    margin = max(float(np.max(np.min(z - problem.normalize(F), axis=1))) for z in Z)
    assert margin < 1e-9
    assert front_distance(problem, F[:20]).min() > -1e-9


def test_front_ends_are_the_ideal_and_nadir(problem):
    ends = problem.front_point(np.array([0.0, 1.0]))
    np.testing.assert_allclose(ends.min(axis=0), problem.ideal, atol=1e-12)
    np.testing.assert_allclose(ends.max(axis=0), problem.nadir, atol=1e-12)
    assert np.abs(front_distance(problem, problem.front(7))).max() < 1e-7


def test_ray_targets_lie_on_their_rays(problem):
    for ray in preference_rays(10):
        assert ray_distance(problem.normalize(problem.ray_target(ray)), ray) < 1e-9


def test_toy_pareto_set_is_near_the_papers_line():
    """The papers draw the front along x2 = -8.3552; the exact Pareto set bends around it."""
    x2 = CAGradToy.pareto_x2(np.linspace(0, 1, 11))
    assert x2[5] == pytest.approx(-8.3552, abs=1e-3)
    assert np.all(np.abs(x2 + 8.3552) < 0.1)


def test_rays_and_their_solver_inputs():
    rays = preference_rays(10)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1.0)
    assert np.all(rays > 0)
    angles = np.arctan2(rays[:, 1], rays[:, 0])
    np.testing.assert_allclose(np.diff(angles), np.pi / 20)
    r = ray_inputs("epo", rays, 3)["preference"]
    assert r.sum() == pytest.approx(1.0) and r[0] * rays[3, 0] == pytest.approx(r[1] * rays[3, 1])
    pmtl = ray_inputs("pareto-mtl", rays, 3)
    assert pmtl["index"] == 3 and np.array_equal(pmtl["preference"], rays)
    assert ray_inputs("mgda", rays, 3) == {}


def test_distances():
    assert ray_distance([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.0)
    assert ray_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert ray_distance([-1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    zdt1 = PROBLEMS["zdt1"]()
    d = front_distance(zdt1, np.array([[0.25, 0.5], [0.25, 0.6], [0.25, 0.4]]))
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[1] > 0.05 and d[2] < -0.05
