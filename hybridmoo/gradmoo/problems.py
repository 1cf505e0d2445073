"""Problems with known Pareto fronts and analytic gradients, and a tiny gradient-descent loop
that drives any solver on them (tests and ``scripts/bench_gradmoo.py``).

Conventions: objectives are normalised as ``(F - ideal) / (nadir - ideal)`` of the analytic
front before a solver sees them (losses >= 0, the Jacobian rows scaled alike). A preference
*ray* is a positive unit vector ``v`` in that normalised space; :func:`ray_inputs` turns it into
each solver's preference: ``r = 1 / v`` (summing to 1) for Chebyshev and EPO, whose targets
satisfy ``r_i L_i`` equal, i.e. ``L ∝ v``; the same weights for linear scalarization, which has
no ray target (it ends where the front's normal is ``r``); and the whole set of rays as Pareto
MTL's reference vectors (it ends in the cone around ``v``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from hybridmoo.gradmoo.linalg import gram
from hybridmoo.gradmoo.registry import get_solver, solve


class Problem(ABC):
    """A two-objective minimisation problem on a box with an analytic front."""

    name: str
    n_var: int
    lower: np.ndarray
    upper: np.ndarray
    ideal: np.ndarray
    nadir: np.ndarray
    lr: float  # default step size of :func:`descend` (normalised objectives)
    max_step: float  # default longest step of :func:`descend`
    steps: int  # default number of steps

    @abstractmethod
    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Objective values ``F`` (2,) and Jacobian ``J`` (2 x n_var) at ``x``."""

    @abstractmethod
    def front_point(self, t: np.ndarray) -> np.ndarray:
        """Points of the Pareto front (len(t) x 2) for ``t`` in [0, 1], from the f1-minimum
        (t = 0) to the f2-minimum (t = 1)."""

    @abstractmethod
    def start(self, rng: np.random.Generator) -> np.ndarray:
        """A random starting point."""

    def project(self, x: np.ndarray) -> np.ndarray:
        """Projection onto the box."""
        return np.clip(x, self.lower, self.upper)

    def normalize(self, F: np.ndarray) -> np.ndarray:
        """Objective values in the normalised space (ideal 0, nadir 1)."""
        return (np.asarray(F) - self.ideal) / (self.nadir - self.ideal)

    def front(self, num: int = 2001) -> np.ndarray:
        """``num`` points of the analytic front (objective space, not normalised)."""
        return self.front_point(np.linspace(0.0, 1.0, num))

    def ray_target(self, ray: np.ndarray) -> np.ndarray:
        """The front point on the ray ``ray`` (normalised space), in objective space."""
        v = np.asarray(ray, dtype=float) / np.linalg.norm(ray)

        def cross(t: float) -> float:
            p = self.normalize(self.front_point(np.array([t]))[0])
            return float(v[0] * p[1] - v[1] * p[0])

        return self.front_point(np.array([brentq(cross, 0.0, 1.0, xtol=1e-14)]))[0]


class FonsecaFleming(Problem):
    """Fonseca-Fleming: ``f_{1,2} = 1 - exp(-sum (x_i -+ 1/sqrt(n))^2)`` on [-4, 4]^n; the
    Pareto set is ``x_i = s / sqrt(n)`` for ``s`` in [-1, 1]; the front is concave."""

    name = "fonseca-fleming"
    lr, max_step, steps = 1.0, 0.1, 600

    def __init__(self, n_var: int = 20) -> None:
        self.n_var = n_var
        self.lower, self.upper = np.full(n_var, -4.0), np.full(n_var, 4.0)
        self.ideal = np.zeros(2)
        self.nadir = np.full(2, 1.0 - np.exp(-4.0))
        self._a = 1.0 / np.sqrt(n_var)

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e1 = np.exp(-np.sum((x - self._a) ** 2))
        e2 = np.exp(-np.sum((x + self._a) ** 2))
        F = np.array([1.0 - e1, 1.0 - e2])
        J = np.vstack([2.0 * (x - self._a) * e1, 2.0 * (x + self._a) * e2])
        return F, J

    def front_point(self, t: np.ndarray) -> np.ndarray:
        s = 1.0 - 2.0 * np.asarray(t)  # t = 0: x at the f1 minimum
        return np.column_stack([1.0 - np.exp(-((s - 1.0) ** 2)), 1.0 - np.exp(-((s + 1.0) ** 2))])

    def start(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-0.3, 0.3, self.n_var)


class ZDT1(Problem):
    """ZDT1 on [0, 1]^n: ``f1 = x1``, ``f2 = g (1 - sqrt(x1 / g))``,
    ``g = 1 + 9 mean(x_2..n)``; the front is ``f2 = 1 - sqrt(f1)`` (convex, g = 1)."""

    name = "zdt1"
    lr, max_step, steps = 1.0, 0.1, 600

    def __init__(self, n_var: int = 30) -> None:
        self.n_var = n_var
        self.lower, self.upper = np.zeros(n_var), np.ones(n_var)
        self.ideal, self.nadir = np.zeros(2), np.ones(2)

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x1 = max(float(x[0]), 1e-12)  # d f2 / d x1 is infinite at x1 = 0
        g = 1.0 + 9.0 * np.mean(x[1:])
        root = np.sqrt(x1 * g)
        F = np.array([float(x[0]), g - root])
        J = np.zeros((2, self.n_var))
        J[0, 0] = 1.0
        J[1, 0] = -0.5 * np.sqrt(g / x1)
        J[1, 1:] = 9.0 / (self.n_var - 1) * (1.0 - 0.5 * np.sqrt(x1 / g))
        return F, J

    def front_point(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t)
        return np.column_stack([t**2, 1.0 - t])

    def start(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(0.0, 1.0, self.n_var)


_LOWER = 5e-6  # the authors' clamp inside the logarithms


class CAGradToy(Problem):
    """The two-parameter toy of CAGrad (Liu et al. 2021), reused by Nash-MTL (Navon et al.
    2022) with its first loss unscaled (their ``scale=1``). For ``x2 > 0`` the losses are
    ``tanh(x2 / 2) (log max(|u_i|, 5e-6) + 6)``, for ``x2 < 0`` they are
    ``tanh(-x2 / 2) ((x1 -+ 7)^2 / 10 + (x2 + 8)^2 / 100 - 20)``.

    The papers draw the front along ``x2 = -8.3552``; exactly, the Pareto set is
    ``x1 = 7 (1 - 2 t)``, t in [0, 1], with ``x2`` minimising
    ``tanh(-x2/2) (19.6 t (1 - t) - 20 + (x2 + 8)^2 / 100)`` (the sum weighted ``1 - t`` on f1
    and ``t`` on f2), found here by bisection on its derivative.
    The front is convex and spans f ∈ [-20, -0.4] on each axis."""

    name = "cagrad-toy"
    n_var = 2
    lr, max_step, steps = 20.0, 0.2, 600

    def __init__(self) -> None:
        self.lower, self.upper = np.full(2, -np.inf), np.full(2, np.inf)
        ends = self.front_point(np.array([0.0, 1.0]))
        self.ideal, self.nadir = ends.min(axis=0), ends.max(axis=0)

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x1, x2 = float(x[0]), float(x[1])
        th, sech2 = np.tanh(x2), 1.0 / np.cosh(x2) ** 2
        half_sech2 = 0.5 / np.cosh(0.5 * x2) ** 2
        u = np.array([-0.5 * x1 - 3.5 + th, -0.5 * x1 + 3.5 - th])
        big = np.abs(u) > _LOWER
        log_f = np.log(np.maximum(np.abs(u), _LOWER)) + 6.0
        log_j = np.where(big, 1.0 / np.where(big, u, 1.0), 0.0)[:, None] * np.array(
            [[-0.5, sech2], [-0.5, -sech2]])
        sq_f = np.array([(x1 - 7.0) ** 2, (x1 + 7.0) ** 2]) / 10.0 + (x2 + 8.0) ** 2 / 100.0 - 20
        sq_j = np.array([[(x1 - 7.0) / 5.0, (x2 + 8.0) / 50.0],
                         [(x1 + 7.0) / 5.0, (x2 + 8.0) / 50.0]])
        # the clamps pass gradient at x2 = 0 (as torch.clamp does), so (0, 0) is not stuck
        c1, dc1 = (np.tanh(0.5 * x2), half_sech2) if x2 >= 0 else (0.0, 0.0)
        c2, dc2 = (np.tanh(-0.5 * x2), -half_sech2) if x2 <= 0 else (0.0, 0.0)
        F = c1 * log_f + c2 * sq_f
        J = c1 * log_j + c2 * sq_j
        J[:, 1] += dc1 * log_f + dc2 * sq_f
        return F, J

    @staticmethod
    def pareto_x2(t: np.ndarray) -> np.ndarray:
        """``x2`` of the Pareto-optimal point with weight ``t`` on f2 (vectorised bisection of
        the derivative of the weighted sum on [-10, -7], where it changes sign once)."""
        q = 19.6 * np.asarray(t, dtype=float) * (1.0 - np.asarray(t, dtype=float)) - 20.0
        lo, hi = np.full(q.shape, -10.0), np.full(q.shape, -7.0)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            slope = (-0.5 / np.cosh(0.5 * mid) ** 2 * (q + (mid + 8.0) ** 2 / 100.0)
                     + np.tanh(-0.5 * mid) * (mid + 8.0) / 50.0)
            lo, hi = np.where(slope < 0, mid, lo), np.where(slope < 0, hi, mid)
        return 0.5 * (lo + hi)

    def front_point(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        x1, x2 = 7.0 * (1.0 - 2.0 * t), self.pareto_x2(t)
        c = np.tanh(-0.5 * x2)
        s = (x2 + 8.0) ** 2 / 100.0 - 20.0
        return np.column_stack([c * ((x1 - 7.0) ** 2 / 10.0 + s), c * ((x1 + 7.0) ** 2 / 10.0 + s)])

    def start(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-10.0, 10.0, 2)


PROBLEMS: Mapping[str, type[Problem]] = MappingProxyType(
    {p.name: p for p in (FonsecaFleming, CAGradToy, ZDT1)})
"""The problems by name (classes; instantiate with their defaults)."""


def preference_rays(num: int = 10) -> np.ndarray:
    """``num`` evenly spaced unit rays in the positive quadrant, angles ``(j + 1/2) pi / 2num``
    (no ray on an axis, where preferences would be zero)."""
    angles = (np.arange(num) + 0.5) * np.pi / (2 * num)
    return np.column_stack([np.cos(angles), np.sin(angles)])


def ray_inputs(name: str, rays: np.ndarray, index: int) -> dict[str, Any]:
    """The preference arguments of solver ``name`` for ray ``rays[index]`` (see the module
    docstring); empty for solvers that take no preference."""
    needs = get_solver(name).needs
    if "references" in needs:
        return {"preference": np.asarray(rays, dtype=float), "index": index}
    if "preference" in needs:
        r = 1.0 / np.asarray(rays[index], dtype=float)
        return {"preference": r / r.sum()}
    return {}


def ray_distance(point: np.ndarray, ray: np.ndarray) -> float:
    """Euclidean distance of a (normalised) point from the ray ``{t v, t >= 0}``."""
    v = np.asarray(ray, dtype=float) / np.linalg.norm(ray)
    p = np.asarray(point, dtype=float)
    along = max(float(p @ v), 0.0)
    return float(np.linalg.norm(p - along * v))


def front_distance(problem: Problem, points: np.ndarray, num: int = 4001) -> np.ndarray:
    """Distance (normalised space) of each point from the analytic front: nearest of ``num``
    front samples, refined by a bounded scalar search on the front's parameter. Negative when
    the point dominates a front point (it lies beyond the front, which would mean the front
    is wrong)."""
    t = np.linspace(0.0, 1.0, num)
    Z = problem.normalize(problem.front_point(t))
    P = np.atleast_2d(problem.normalize(points))
    out = np.empty(len(P))
    for n, p in enumerate(P):
        i = int(np.argmin(((Z - p) ** 2).sum(axis=1)))
        res = minimize_scalar(
            lambda s, p=p: float(((problem.normalize(problem.front_point(np.array([s])))[0]
                                   - p) ** 2).sum()),
            bounds=(t[max(i - 1, 0)], t[min(i + 1, num - 1)]), method="bounded",
            options={"xatol": 1e-12})
        dist = float(np.sqrt(min(res.fun, ((Z[i] - p) ** 2).sum())))
        beyond = np.any(np.all(p <= Z, axis=1) & np.any(p < Z - 1e-9, axis=1))
        out[n] = -dist if beyond else dist
    return out


def descend(problem: Problem, name: str, x0: np.ndarray, *, steps: int | None = None,
            lr: float | None = None, max_step: float | None = None,
            rng: np.random.Generator | None = None, preference: np.ndarray | None = None,
            **options: Any) -> np.ndarray:
    """Projected gradient descent with solver ``name`` from ``x0``; returns the end point.

    Each step moves by ``-d`` scaled to the length ``min(lr ||d||, max_step) (1 - t / steps)``:
    far from the front this is normalised descent (solvers whose ``d`` is tiny there, like
    MGDA, still make progress), near it plain descent with step ``lr``, and the linear decay
    to 0 lets solvers whose ``d`` does not vanish at the front (Nash-MTL: ``||d||^2 = k``, or
    the hard Chebyshev max) settle."""
    steps = problem.steps if steps is None else steps
    lr = problem.lr if lr is None else lr
    max_step = problem.max_step if max_step is None else max_step
    span = problem.nadir - problem.ideal
    x = problem.project(np.array(x0, dtype=float))
    for t in range(steps):
        F, J = problem.evaluate(x)
        Jn = J / span[:, None]
        w = solve(name, gram(Jn), losses=np.maximum(problem.normalize(F), 0.0),
                  preference=preference, rng=rng, **options)
        d = Jn.T @ w
        norm = float(np.linalg.norm(d))
        if norm > 0:
            length = min(lr * norm, max_step) * (1.0 - t / steps)
            x = problem.project(x - d * (length / norm))
    return x


def run_rays(problem: Problem, name: str, rays: np.ndarray, starts: Sequence[np.ndarray], *,
             seed: int = 0, **kwargs: Any) -> np.ndarray:
    """End points (objective space, one row per ray) of :func:`descend` along each ray,
    run ``i`` starting at ``starts[i]`` with its own ``np.random.Generator(seed + i)``."""
    ends = []
    for i, x0 in enumerate(starts):
        x = descend(problem, name, x0, rng=np.random.default_rng(seed + i),
                    **ray_inputs(name, rays, i), **kwargs)
        ends.append(problem.evaluate(x)[0])
    return np.array(ends)
