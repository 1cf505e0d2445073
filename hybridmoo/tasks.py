"""What a backend runs: a candidate's evaluation or a survivor's refinement, on one worker.

A :class:`SearchTask` is the function a backend is started with when refinement runs as
backend work: it holds the evaluation (:class:`~hybridmoo.objectives.EvaluationTask`) and the
per-survivor refinement, so on Ray both travel to each actor in one object (a refiner that
measures with the evaluator's ``measure_network`` then measures on the actor's device, with the
very evaluator that measures every candidate). Items are :class:`~hybridmoo.space.Candidate`\\ s
or :class:`RefineJob`\\ s; neither raises: a failure is a failed record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hybridmoo.objectives import EvalResult, EvaluationTask, Objective
from hybridmoo.space import REFINED, Candidate


@dataclass(frozen=True)
class RefineJob:
    """One survivor's refinement: the survivor, the preferences of its round's survivors
    (rows over the search objectives; row ``index`` is its own) and the round's number."""

    survivor: EvalResult
    preferences: tuple[tuple[float, ...], ...]
    index: int
    round: int

    @property
    def key(self) -> str:
        """The survivor's key (one job per survivor and round)."""
        return self.survivor.key

    def failed(self, reason: str, elapsed_s: float = 0.0) -> Refined:
        """The record of a refinement that did not produce a network."""
        candidate = Candidate(dict(self.survivor.config), REFINED, (self.survivor.key,))
        return Refined(EvalResult(candidate, ok=False, reason=reason, elapsed_s=elapsed_s,
                                  info={"reason": reason}))


@dataclass
class Refined:
    """A refinement's record and, when it succeeded, its hardened network (the weights the
    driver saves before the record is journaled)."""

    result: EvalResult
    network: Any = None


RefineFn = Callable[[RefineJob, tuple[Objective, ...]], Refined]
"""A per-survivor refinement: (job, the search's objectives) -> :class:`Refined`."""


@dataclass(frozen=True)
class SearchTask:
    """Evaluate candidates and refine survivors on the same worker (see the module doc)."""

    evaluation: EvaluationTask
    refine: RefineFn

    def __call__(self, item: Candidate | RefineJob) -> EvalResult | Refined:
        if not isinstance(item, RefineJob):
            return self.evaluation(item)
        start = time.perf_counter()
        try:
            out = self.refine(item, self.evaluation.objectives)
        except Exception as exc:  # one survivor's failure must not end the search
            return item.failed(f"refinement failed: {type(exc).__name__}: {exc}",
                               time.perf_counter() - start)
        out.result.info.setdefault("worker_s", time.perf_counter() - start)
        return out

    def failed(self, item: Candidate | RefineJob, reason: str) -> EvalResult | Refined:
        """The record of an item lost to its worker (it died or hung)."""
        if isinstance(item, RefineJob):
            return item.failed(reason)
        return self.evaluation.failed(item, reason)

    def parts(self) -> list[Any]:
        """What travels to a worker: the task, the evaluate function and the refinement."""
        return [self, *self.evaluation.parts(), self.refine]
