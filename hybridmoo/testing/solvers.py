"""The contract every gradient solver keeps (subclass :class:`SolverConformance` in a test).

A subclass provides the fixture ``solver`` (a name registered in ``hybridmoo.gradmoo.SOLVERS``).
The suite builds whatever inputs the solver's record says it needs (losses, a preference, the
reference vectors of Pareto MTL with an ``index``, an ``np.random.Generator``). Example::

    class TestMySolver(SolverConformance):
        @pytest.fixture
        def solver(self):
            return "my-solver"
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hybridmoo.errors import ConfigError
from hybridmoo.gradmoo import aggregate_groups, direction, get_solver, gram, solve


def solver_inputs(name: str, k: int, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of :func:`solve` for solver ``name`` with ``k`` objectives, the same for
    the same ``seed``: positive losses and preferences, four reference vectors and ``index=1``
    where Pareto MTL needs them, and a fresh ``np.random.default_rng(seed)``."""
    needs = get_solver(name).needs
    rng = np.random.default_rng([seed, k])
    kwargs: dict[str, Any] = {}
    if "losses" in needs:
        kwargs["losses"] = rng.uniform(0.2, 1.0, k)
    if "preference" in needs:
        kwargs["preference"] = rng.uniform(0.2, 1.0, k)
    if "references" in needs:
        kwargs["preference"] = rng.uniform(0.2, 1.0, (4, k))
        kwargs["index"] = 1
    if "rng" in needs:
        kwargs["rng"] = np.random.default_rng(seed)
    return kwargs


def _permuted(kwargs: dict[str, Any], perm: np.ndarray) -> dict[str, Any]:
    out = dict(kwargs)
    for key in ("losses", "preference"):
        if key in out:
            out[key] = np.asarray(out[key])[..., perm]
    return out


def _scaled(kwargs: dict[str, Any], scale: np.ndarray) -> dict[str, Any]:
    out = dict(kwargs)
    if "losses" in out:
        out["losses"] = out["losses"] * scale
    return out


class SolverConformance:
    """Tests every registered gradient solver must pass."""

    @pytest.fixture
    def solver(self) -> str:
        raise NotImplementedError("subclasses provide the `solver` fixture")

    def weights(self, solver: str, J: np.ndarray, kwargs: dict[str, Any]) -> np.ndarray:
        """Weights for Jacobian ``J``, with numpy raising on any division by zero or NaN."""
        with np.errstate(divide="raise", invalid="raise", over="raise"):
            w = solve(solver, gram(J), **kwargs)
        assert isinstance(w, np.ndarray) and w.dtype == np.float64
        assert w.shape == (J.shape[0],) and np.all(np.isfinite(w)), w
        return w

    @pytest.mark.parametrize("k", [1, 2, 3, 5])
    def test_weights_have_shape_k_and_are_finite(self, solver: str, k: int) -> None:
        """(k = 1 occurs in per-group aggregation, where one objective alone moves a group.)"""
        rng = np.random.default_rng(k)
        for n in sorted({k - 1 or 1, k, 3 * k}):  # fewer, as many and more parameters than k
            J = rng.normal(size=(k, n))
            self.weights(solver, J, solver_inputs(solver, k, n))

    @pytest.mark.parametrize("k", [2, 3, 5])
    def test_a_zero_gradient_is_handled(self, solver: str, k: int) -> None:
        rng = np.random.default_rng(10 + k)
        J = rng.normal(size=(k, 2 * k))
        J[k - 1] = 0.0  # e.g. the size objective on a weight that does not change the size
        self.weights(solver, J, solver_inputs(solver, k))
        J[:] = 0.0
        self.weights(solver, J, solver_inputs(solver, k))

    @pytest.mark.parametrize("k", [2, 3, 5])
    def test_identical_gradients_give_a_direction_along_them(self, solver: str, k: int) -> None:
        """(Along, not necessarily down: a restoring step such as Pareto MTL's outside its cone
        may raise every loss.)"""
        rng = np.random.default_rng(20 + k)
        g = rng.normal(size=7)
        J = np.tile(g, (k, 1))
        d = direction(J, self.weights(solver, J, solver_inputs(solver, k)))
        t = float(d @ g / (g @ g))
        np.testing.assert_allclose(d, t * g, atol=1e-9 * (1 + abs(t)) * np.linalg.norm(g))

    def test_same_inputs_and_seed_give_the_same_weights(self, solver: str) -> None:
        rng = np.random.default_rng(3)
        J = rng.normal(size=(4, 9))
        first = self.weights(solver, J, solver_inputs(solver, 4, seed=7))
        again = self.weights(solver, J, solver_inputs(solver, 4, seed=7))
        np.testing.assert_array_equal(first, again)

    def test_permuting_objectives_permutes_weights(self, solver: str) -> None:
        if "rng" in get_solver(solver).needs:
            pytest.skip("randomised solver: the permutation changes the random order")
        rng = np.random.default_rng(4)
        for k in (2, 3, 5):
            J = rng.normal(size=(k, 2 * k + 1))
            kwargs = solver_inputs(solver, k, seed=k)
            perm = rng.permutation(k)
            w = self.weights(solver, J, kwargs)
            w_perm = self.weights(solver, J[perm], _permuted(kwargs, perm))
            np.testing.assert_allclose(w_perm, w[perm], rtol=1e-6, atol=1e-7 * np.abs(w).max())

    def test_scale_invariant_flag_is_true_exactly_when_it_holds(self, solver: str) -> None:
        """Scaling one objective (its gradient, and its loss where the solver reads losses)
        keeps the direction of ``d`` on every random problem iff the record says so."""
        rng = np.random.default_rng(5)
        holds = True
        for _ in range(10):
            k = 3
            seed = int(rng.integers(1 << 30))
            J = rng.normal(size=(k, 7))
            scale = np.exp(rng.normal(size=k))
            d = direction(J, self.weights(solver, J, solver_inputs(solver, k, seed)))
            scaled = _scaled(solver_inputs(solver, k, seed), scale)
            d_scaled = direction(scale[:, None] * J,
                                 self.weights(solver, scale[:, None] * J, scaled))
            cos = d @ d_scaled / (np.linalg.norm(d) * np.linalg.norm(d_scaled))
            holds &= bool(cos > 1 - 1e-8)
        assert holds == get_solver(solver).scale_invariant

    def test_groups_with_zero_rows_give_a_finite_concatenated_direction(self, solver: str
                                                                         ) -> None:
        rng = np.random.default_rng(6)
        k = 3
        dense = rng.normal(size=(k, 5))
        weights_only = np.vstack([rng.normal(size=(1, 4)), np.zeros((2, 4))])  # task loss only
        silent = np.zeros((k, 2))
        kwargs = solver_inputs(solver, k)
        with np.errstate(divide="raise", invalid="raise", over="raise"):
            d = aggregate_groups([dense, weights_only, silent], solver, **kwargs)
        assert d.shape == (11,) and np.all(np.isfinite(d))
        np.testing.assert_array_equal(d[9:], 0.0)

    def test_bad_inputs_raise_clear_errors(self, solver: str) -> None:
        rng = np.random.default_rng(8)
        kwargs = solver_inputs(solver, 2)
        good = gram(rng.normal(size=(2, 3)))
        for bad in (np.ones((2, 3)), np.array([[1.0, np.nan], [np.nan, 1.0]]),
                    np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, -1.0]])):
            with pytest.raises(ValueError):
                solve(solver, bad, **kwargs)
        for need in ("losses", "preference", "rng"):
            if need in kwargs:
                with pytest.raises(ValueError):
                    solve(solver, good, **{**kwargs, need: None})
        with pytest.raises(ConfigError):
            solve(solver, good, **kwargs, no_such_option=1)
