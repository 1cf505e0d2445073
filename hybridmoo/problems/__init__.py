"""Built-in black-box problems: a registry of named spaces with their evaluate and objectives.

One record per name (:class:`ProblemSpec`); its factory is imported only when the problem is
made, so an unused problem's libraries are never imported::

    from hybridmoo.problems import make_problem
    problem = make_problem("nas-bench-graph", dataset="citeseer")
    result = search(problem.space, problem.evaluate, problem.objectives, max_evals=100)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hybridmoo.errors import ConfigError
from hybridmoo.loading import check_options, unknown_name
from hybridmoo.objectives import Objective
from hybridmoo.space import SearchSpace

__all__ = ["Problem", "ProblemSpec", "available_problems", "make_problem", "register_problem"]


@dataclass(frozen=True)
class Problem:
    """A search space, the function that measures a config, and the objectives it returns."""

    space: SearchSpace
    evaluate: Callable[[dict[str, Any]], Mapping[str, Any]]
    objectives: tuple[Objective, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.space, SearchSpace):
            raise ConfigError(
                f"Problem.space must be a SearchSpace, got {type(self.space).__name__}")
        if not callable(self.evaluate):
            raise ConfigError(f"Problem.evaluate must be callable, got {self.evaluate!r}")
        objectives = tuple(self.objectives)
        if not objectives or not all(isinstance(o, Objective) for o in objectives):
            raise ConfigError(f"Problem.objectives must be Objectives, got {self.objectives!r}")
        object.__setattr__(self, "objectives", objectives)


@dataclass(frozen=True)
class ProblemSpec:
    """One registered problem: its name, its factory ``"module:function"`` (imported lazily;
    the function takes keyword options and returns a :class:`Problem`) and a one-line summary."""

    name: str
    target: str
    summary: str

    def load(self) -> Callable[..., Problem]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def options(self) -> dict[str, Any]:
        """The factory's options and their defaults (``inspect.Parameter.empty`` when required)."""
        params = inspect.signature(self.load()).parameters.values()
        return {p.name: p.default for p in params
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


_PROBLEMS: dict[str, ProblemSpec] = {}


def register_problem(spec: ProblemSpec) -> ProblemSpec:
    """Add a problem to the registry (names are unique)."""
    if not isinstance(spec, ProblemSpec):
        raise TypeError(f"register_problem needs a ProblemSpec, got {spec!r}")
    if spec.name in _PROBLEMS:
        raise ValueError(f"problem {spec.name!r} is already registered")
    _PROBLEMS[spec.name] = spec
    return spec


def available_problems() -> list[ProblemSpec]:
    """Every registered problem, in registration order."""
    return list(_PROBLEMS.values())


def make_problem(name: str, **options: Any) -> Problem:
    """Build the problem registered as ``name`` with its keyword ``options``."""
    spec = _PROBLEMS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise unknown_name("problem", name, _PROBLEMS)
    factory = spec.load()
    params = inspect.signature(factory).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        check_options(f"problem {name!r}", options, spec.options())
    problem = factory(**options)
    if not isinstance(problem, Problem):
        raise TypeError(f"{spec.target} returned {type(problem).__name__}, expected a Problem")
    return problem


_P = "hybridmoo.problems."
for _spec in [
    ProblemSpec("nas-bench-graph", _P + "nas_bench_graph:nas_bench_graph",
                "NAS-Bench-Graph: 26,206 GNN architectures, tabular test error / latency / "
                "params (needs hybridmoo[bench])"),
    ProblemSpec("digits-mlp", _P + "digits_mlp:digits_mlp",
                "scikit-learn MLP on the bundled digits data: test error vs number of weights"),
    ProblemSpec("zdt1-grid", _P + "synthetic:zdt1_grid",
                "ZDT1 on an integer grid: a cheap problem with a known front"),
]:
    register_problem(_spec)
