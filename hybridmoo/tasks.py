"""What a backend runs: a candidate's evaluation or a survivor's refinement, on one worker.

A :class:`SearchTask` is the function a backend is started with when refinement runs as
backend work: it holds the evaluation (:class:`~hybridmoo.objectives.EvaluationTask`) and the
per-survivor refinement, so on Ray both travel to each actor in one object (a refiner that
measures with the evaluator's ``measure_network`` then measures on the actor's device, with the
very evaluator that measures every candidate). Items are :class:`~hybridmoo.space.Candidate`\\ s,
:class:`RefineJob`\\ s or :class:`FrontJob`\\ s; none raises: a failure is a failed record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hybridmoo.objectives import EvalResult, EvaluationTask, Objective
from hybridmoo.space import FRONT_TUNED, REFINED, Candidate


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

    @property
    def survivors(self) -> tuple[EvalResult, ...]:
        """The survivors this job refines (one; a :class:`FrontJob` holds many)."""
        return (self.survivor,)

    def failed(self, reason: str, elapsed_s: float = 0.0, method: str = "") -> Refined:
        """The record of a refinement that did not produce a network."""
        candidate = Candidate(dict(self.survivor.config), REFINED, (self.survivor.key,), method)
        return Refined(EvalResult(candidate, ok=False, reason=reason, elapsed_s=elapsed_s,
                                  info={"reason": reason}))


@dataclass(frozen=True)
class FrontJob:
    """A front round's one job (:mod:`hybridmoo.refine.front`): the supernet's shared weights
    fine-tuned on every survivor's config at once, then each survivor's network taken from
    them and measured. ``budget_s``: the seconds it may take (None: no limit)."""

    survivors: tuple[EvalResult, ...]
    round: int
    budget_s: float | None = None

    @property
    def key(self) -> str:
        return f"front-round-{self.round}"

    def failed(self, reason: str, elapsed_s: float = 0.0) -> list[Refined]:
        """One failed record per survivor."""
        return [RefineJob(s, (), 0, self.round).failed(reason, elapsed_s, FRONT_TUNED)
                for s in self.survivors]


@dataclass
class Refined:
    """A refinement's record and, when it succeeded, its hardened network (the weights the
    driver saves before the record is journaled)."""

    result: EvalResult
    network: Any = None


RefineFn = Callable[[Any, tuple[Objective, ...]], Any]
"""Refinement as backend work: (job, the search's objectives) -> :class:`Refined` for a
:class:`RefineJob`, a list of them (one per survivor) for a :class:`FrontJob`."""


@dataclass(frozen=True)
class SearchTask:
    """Evaluate candidates and refine survivors on the same worker (see the module doc)."""

    evaluation: EvaluationTask
    refine: RefineFn

    def __call__(self, item: Candidate | RefineJob | FrontJob
                 ) -> EvalResult | Refined | list[Refined]:
        if not isinstance(item, RefineJob | FrontJob):
            return self.evaluation(item)
        start = time.perf_counter()
        try:
            out = self.refine(item, self.evaluation.objectives)
        except Exception as exc:  # one survivor's failure must not end the search
            return item.failed(f"refinement failed: {type(exc).__name__}: {exc}",
                               time.perf_counter() - start)
        records = out if isinstance(out, list) else [out]
        for refined in records:  # the whole job's time on the worker, shared by its records
            refined.result.info.setdefault("worker_s", time.perf_counter() - start)
            refined.result.info.setdefault("job_records", len(records))
        return out

    def failed(self, item: Candidate | RefineJob | FrontJob, reason: str
               ) -> EvalResult | Refined | list[Refined]:
        """The record of an item lost to its worker (it died or hung)."""
        if isinstance(item, RefineJob | FrontJob):
            return item.failed(reason)
        return self.evaluation.failed(item, reason)

    def parts(self) -> list[Any]:
        """What travels to a worker: the task, the evaluate function and the refinement."""
        return [self, *self.evaluation.parts(), self.refine]
