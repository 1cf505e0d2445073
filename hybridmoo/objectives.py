"""Objectives, constraints, evaluation results, and the guarded call of a user's evaluate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridmoo.errors import ConfigError
from hybridmoo.space import Candidate

DIRECTIONS = ("min", "max")


TEST_PREFIX = "test_"
"""An objective measured again on the test split (for reporting; the search selects on the
validation split) is reported as ``test_<name>``."""

@dataclass(frozen=True)
class Objective:
    """A measured value to minimise or maximise, with its unit (for reports)."""

    name: str
    direction: str = "min"
    unit: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"objective name must be a non-empty string, got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ConfigError(
                f"objective {self.name!r}: direction must be 'min' or 'max', got {self.direction!r}"
            )

    @property
    def sign(self) -> float:
        """+1 for min, -1 for max: ``sign * value`` is always minimised."""
        return 1.0 if self.direction == "min" else -1.0


@dataclass(frozen=True)
class Constraint:
    """A constraint on a value returned by evaluate (an objective or any extra metric).

    Its value follows Optuna's semantics, ``<= 0`` is feasible: ``v - max`` when ``max`` is set,
    ``min - v`` when ``min`` is set (the larger violation when both are), else ``v`` itself.
    """

    name: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"constraint name must be a non-empty string, got {self.name!r}")
        for bound in (self.max, self.min):
            if bound is not None and not _is_real(bound):
                raise ConfigError(f"constraint {self.name!r}: bounds must be numbers: {bound!r}")

    def value(self, metric: float) -> float:
        parts = []
        if self.max is not None:
            parts.append(metric - self.max)
        if self.min is not None:
            parts.append(self.min - metric)
        return max(parts) if parts else metric


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass
class EvalResult:
    """The outcome of evaluating one candidate. A failure is ``ok=False`` with a ``reason``."""

    candidate: Candidate
    values: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    ok: bool = True
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def config(self) -> dict[str, Any]:
        return self.candidate.config

    @property
    def key(self) -> str:
        return self.candidate.key

    @property
    def violation(self) -> float:
        """Sum of positive constraint values; ``inf`` for a failed evaluation."""
        if not self.ok:
            return math.inf
        return float(sum(max(0.0, g) for g in self.constraints.values()))

    @property
    def feasible(self) -> bool:
        return self.ok and self.violation == 0.0

    def for_candidate(self, candidate: Candidate) -> EvalResult:
        """The same measurement, answered for an identical config proposed again."""
        return EvalResult(candidate, dict(self.values), dict(self.constraints), self.ok,
                          self.reason, dict(self.info), self.elapsed_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.to_json(), "values": self.values,
            "constraints": self.constraints, "ok": self.ok, "reason": self.reason,
            "info": self.info, "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvalResult:
        return cls(
            Candidate.from_json(data["candidate"]), dict(data["values"]),
            dict(data.get("constraints", {})), bool(data["ok"]), data.get("reason"),
            dict(data.get("info", {})), float(data.get("elapsed_s", 0.0)),
        )


def minimization_matrix(results: Sequence[EvalResult], objectives: Sequence[Objective],
                        failed_value: float = np.nan) -> np.ndarray:
    """``(n, m)`` objective values in minimisation form; failures get ``failed_value``."""
    F = np.full((len(results), len(objectives)), failed_value, dtype=float)
    for i, r in enumerate(results):
        if r.ok:
            F[i] = [o.sign * r.values[o.name] for o in objectives]
    return F


def ranked(results: Sequence[EvalResult], objectives: Sequence[Objective]) -> list[EvalResult]:
    """Successful ``results`` best first on the first objective (then the next, ...; ties
    keep their order): the one order front points are numbered in (the CLI table's ``#``,
    the export's ``NN_key`` folders)."""
    return sorted((r for r in results if r.ok),
                  key=lambda r: [o.sign * r.values[o.name] for o in objectives])


def run_evaluation(evaluate: Callable[[dict[str, Any]], Mapping[str, Any]], candidate: Candidate,
                   objectives: Sequence[Objective], constraints: Sequence[Constraint] = ()
                   ) -> EvalResult:
    """Call ``evaluate`` on one candidate; never raises for a failing evaluation."""
    start = time.perf_counter()
    try:
        returned = evaluate(dict(candidate.config))
    except Exception as exc:  # a failing user function is a result, not a crash
        return EvalResult(candidate, ok=False, reason=f"{type(exc).__name__}: {exc}",
                          elapsed_s=time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    values, constraint_values, info, reason = _check_returned(returned, objectives, constraints)
    return EvalResult(candidate, values, constraint_values, reason is None, reason, info, elapsed)


def _check_returned(returned: Any, objectives: Sequence[Objective],
                    constraints: Sequence[Constraint]
                    ) -> tuple[dict[str, float], dict[str, float], dict[str, Any], str | None]:
    if not isinstance(returned, Mapping):
        return {}, {}, {}, f"evaluate returned {type(returned).__name__}, expected a dict"
    info = {str(k): _jsonable(v) for k, v in returned.items()
            if k not in {o.name for o in objectives}}
    values: dict[str, float] = {}
    for o in objectives:
        if o.name not in returned:
            return {}, {}, info, missing_objective_reason(o.name, returned)
        v = returned[o.name]
        if not _is_real(v) or not math.isfinite(float(v)):
            return {}, {}, info, f"objective {o.name!r} is not a finite number: {v!r}"
        values[o.name] = float(v)
    constraint_values: dict[str, float] = {}
    for c in constraints:
        metric = returned.get(c.name)
        if not _is_real(metric) or not math.isfinite(float(metric)):
            return {}, {}, info, f"constraint {c.name!r} has no finite value returned: {metric!r}"
        constraint_values[c.name] = float(c.value(float(metric)))
    return values, constraint_values, info, None


MISSING_OBJECTIVE = "evaluate did not return objective"


def missing_objective_reason(name: str, returned: Mapping[str, Any]) -> str:
    return f"{MISSING_OBJECTIVE} {name!r} (it returned {sorted(map(str, returned))})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    scalars = str | int | float | bool
    if isinstance(value, list | tuple) and all(isinstance(v, scalars) for v in value):
        return list(value)
    return repr(value)


@dataclass(frozen=True)
class EvaluationTask:
    """``evaluate`` bound to the objectives and constraints: what a backend runs per candidate."""

    evaluate: Callable[[dict[str, Any]], Mapping[str, Any]]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()

    def __call__(self, candidate: Candidate) -> EvalResult:
        return run_evaluation(self.evaluate, candidate, self.objectives, self.constraints)

    def failed(self, candidate: Candidate, reason: str) -> EvalResult:
        """The record of a candidate lost to its worker (it died or hung)."""
        return EvalResult(candidate, ok=False, reason=reason)

    def parts(self) -> list[Any]:
        """What travels to a worker: the task and the evaluate function."""
        return [self, self.evaluate]
