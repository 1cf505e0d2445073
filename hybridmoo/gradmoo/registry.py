"""The solver registry (one record per name) and the uniform call :func:`solve`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from hybridmoo.errors import ConfigError
from hybridmoo.gradmoo.aligned import aligned_mtl
from hybridmoo.gradmoo.cagrad import cagrad
from hybridmoo.gradmoo.epo import epo
from hybridmoo.gradmoo.imtl import imtl_g
from hybridmoo.gradmoo.linalg import validate_gram
from hybridmoo.gradmoo.mgda import mgda
from hybridmoo.gradmoo.nash import nash_mtl
from hybridmoo.gradmoo.pareto_mtl import pareto_mtl
from hybridmoo.gradmoo.pcgrad import pcgrad
from hybridmoo.gradmoo.scalarization import chebyshev, linear
from hybridmoo.gradmoo.upgrad import upgrad

INPUTS = ("gram", "losses", "preference", "references", "rng")
"""What a solver may need. ``references`` is the ``preference`` argument of :func:`solve` read
as a matrix of all reference vectors (m x k, Pareto MTL) instead of one vector."""


@dataclass(frozen=True)
class SolverSpec:
    """One registered solver: the function, the inputs it takes (a subset of :data:`INPUTS`,
    passed as keyword arguments of those names), whether the update direction is invariant to
    the scale of one loss (scaling ``g_i``, and ``L_i`` where it reads losses, leaves the
    direction of ``d`` unchanged), and one line about it."""

    name: str
    function: Callable[..., np.ndarray]
    needs: tuple[str, ...]
    scale_invariant: bool
    summary: str

    def options(self) -> frozenset[str]:
        """The keyword-only options the function accepts."""
        return frozenset(p.name for p in self._keyword_only())

    def required_options(self) -> frozenset[str]:
        """The options without a default (Pareto MTL's ``index``)."""
        return frozenset(p.name for p in self._keyword_only() if p.default is p.empty)

    def _keyword_only(self) -> list[inspect.Parameter]:
        params = inspect.signature(self.function).parameters.values()
        return [p for p in params if p.kind == p.KEYWORD_ONLY]


SOLVERS: Mapping[str, SolverSpec] = MappingProxyType({s.name: s for s in (
    SolverSpec("linear", linear, ("preference",), False,
               "linear scalarization: weights = preference"),
    SolverSpec("chebyshev", chebyshev, ("losses", "preference"), False,
               "Chebyshev scalarization: weight on the worst r_i (L_i - z_i), optionally smoothed"),
    SolverSpec("mgda", mgda, ("gram",), False,
               "MGDA min-norm (exact for 2 objectives, Frank-Wolfe for more)"),
    SolverSpec("mgda-ub", mgda, ("gram",), False,
               "MGDA-UB: MGDA on the Gram of gradients w.r.t. a shared representation"),
    SolverSpec("pcgrad", pcgrad, ("gram", "rng"), False,
               "PCGrad: project away conflicting components in random order, sum"),
    SolverSpec("cagrad", cagrad, ("gram",), False,
               "CAGrad: best worst-case improvement within c ||g0|| of the mean gradient"),
    SolverSpec("nash-mtl", nash_mtl, ("gram",), True,
               "Nash-MTL bargaining solution: (G alpha)_i = 1 / alpha_i"),
    SolverSpec("imtl-g", imtl_g, ("gram",), True,
               "IMTL-G: equal projections of d on every unit gradient"),
    SolverSpec("aligned-mtl", aligned_mtl, ("gram",), False,
               "Aligned-MTL: align the gradient system to condition number 1, sum"),
    SolverSpec("upgrad", upgrad, ("gram",), False,
               "UPGrad: mean of the gradients projected onto the dual cone {x : J x >= 0}"),
    SolverSpec("epo", epo, ("gram", "losses", "preference"), False,
               "EPO: descent that reaches the preference ray r_i L_i = const exactly"),
    SolverSpec("pareto-mtl", pareto_mtl, ("gram", "losses", "references"), False,
               "Pareto MTL: MGDA restricted to the cone of reference vector `index`"),
)})


def get_solver(name: str) -> SolverSpec:
    """The record registered as ``name``; ``ConfigError`` for an unknown name."""
    spec = SOLVERS.get(name)
    if spec is None:
        raise ConfigError(f"unknown gradient solver {name!r}; choose one of: {', '.join(SOLVERS)}")
    return spec


def _vector(name: str, value: Any, k: int) -> np.ndarray:
    v = np.array(value, dtype=np.float64)
    if v.shape != (k,):
        raise ValueError(f"{name} must have shape ({k},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return v


def _preference(value: Any, k: int, matrix: bool) -> np.ndarray:
    p = np.array(value, dtype=np.float64)
    if matrix:
        if p.ndim != 2 or p.shape[1] != k or len(p) == 0:
            raise ValueError(f"reference vectors must have shape (m, {k}), got {p.shape}")
    else:
        p = _vector("preference", p, k)
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.reshape(-1, k).sum(axis=1) <= 0):
        raise ValueError("preference vectors must be finite, >= 0 and not all zero")
    return p


def solve(name: str, gram: np.ndarray, *, losses: np.ndarray | None = None,
          preference: np.ndarray | None = None, rng: np.random.Generator | None = None,
          **options: Any) -> np.ndarray:
    """Weights ``w`` (shape (k,)) of solver ``name`` for the Gram matrix ``gram`` (k x k); the
    update direction is ``d = J^T w``. ``preference`` is one vector (k,), or for Pareto MTL all
    reference vectors (m, k) with the option ``index``. Inputs a solver does not need are
    ignored; a missing or malformed input raises ``ValueError``, an unknown option
    ``ConfigError``."""
    spec = get_solver(name)
    unknown = sorted(set(options) - spec.options())
    if unknown:
        raise ConfigError(f"gradient solver {name!r} has no option(s) {unknown}; "
                          f"it takes {sorted(spec.options()) or 'none'}")
    missing = sorted(spec.required_options() - set(options))
    if missing:
        raise ValueError(f"gradient solver {name!r} needs option(s) {missing}")
    G = validate_gram(gram)
    k = len(G)
    given: dict[str, Any] = {"gram": G, "losses": losses, "preference": preference,
                             "references": preference, "rng": rng}
    kwargs: dict[str, Any] = {}
    for need in spec.needs:
        value = given[need]
        if value is None:
            label = "preference" if need == "references" else need
            raise ValueError(f"gradient solver {name!r} needs {label}")
        if need == "losses":
            value = _vector("losses", value, k)
        elif need in ("preference", "references"):
            value = _preference(value, k, matrix=need == "references")
        elif need == "rng" and not isinstance(value, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(value).__name__}")
        kwargs[need] = value
    weights = np.asarray(spec.function(**kwargs, **options), dtype=np.float64)
    if weights.shape != (k,) or not np.all(np.isfinite(weights)):
        raise RuntimeError(f"gradient solver {name!r} returned invalid weights {weights!r}")
    return weights
