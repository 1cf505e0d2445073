"""Preference-based solvers driven by gradient descent land on the known fronts, along their
preference rays (linear scalarization: at the front point whose normal is its weight vector)."""

import numpy as np
import pytest

from hybridmoo.gradmoo.problems import (
    PROBLEMS,
    descend,
    front_distance,
    preference_rays,
    ray_distance,
    ray_inputs,
)

RAYS = preference_rays(10)
STEPS = 400


def starts(problem):
    if problem.name == "cagrad-toy":  # the lower half: the upper one holds traps for everybody
        return [np.array([-4.0, -3.0]), np.array([5.0, -9.0])]
    rng = np.random.default_rng(0)
    return [problem.start(rng) for _ in range(2)]


def end_points(problem, solver):
    out = []
    for i, x0 in zip((2, 7), starts(problem), strict=True):
        x = descend(problem, solver, x0, steps=STEPS, **ray_inputs(solver, RAYS, i))
        out.append((i, problem.evaluate(x)[0]))
    return out


@pytest.fixture(params=list(PROBLEMS))
def problem(request):
    return PROBLEMS[request.param]()


@pytest.mark.parametrize(("solver", "ray_tol"), [("chebyshev", 1e-3), ("epo", 1e-2)])
def test_lands_on_the_front_on_its_ray(problem, solver, ray_tol):
    for i, F in end_points(problem, solver):
        assert abs(front_distance(problem, F)[0]) < 3e-3
        assert ray_distance(problem.normalize(F), RAYS[i]) < ray_tol


def test_pareto_mtl_lands_on_the_front_inside_its_cone(problem):
    unit = RAYS / np.linalg.norm(RAYS, axis=1, keepdims=True)
    for i, F in end_points(problem, "pareto-mtl"):
        assert abs(front_distance(problem, F)[0]) < 3e-3
        Fn = problem.normalize(F)
        cosines = unit @ (Fn / np.linalg.norm(Fn))
        assert cosines[i] >= cosines.max() - 1e-3  # its own reference vector is the closest


def test_linear_lands_on_the_front_where_the_normal_is_its_weight(problem):
    Z = problem.normalize(problem.front(20001))
    for i, F in end_points(problem, "linear"):
        assert abs(front_distance(problem, F)[0]) < 3e-3
        if problem.name == "fonseca-fleming":  # concave front: any end is a local optimum
            continue
        w = ray_inputs("linear", RAYS, i)["preference"]
        best = Z[np.argmin(Z @ w)]
        assert np.linalg.norm(problem.normalize(F) - best) < 1e-2
