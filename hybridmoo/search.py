"""``search()``: the one loop that asks a proposer, evaluates on a backend, and keeps the archive.

Resume replays the journal: the proposer is rebuilt from its seed and re-asked; every config the
journal already holds is answered from it instead of being evaluated again. With a deterministic
evaluate and one evaluation at a time, a resumed run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridmoo.archive import ParetoArchive
from hybridmoo.backends import Backend, make_backend
from hybridmoo.errors import ConfigError
from hybridmoo.journal import Journal
from hybridmoo.objectives import (
    MISSING_OBJECTIVE,
    Constraint,
    EvalResult,
    EvaluationTask,
    Objective,
)
from hybridmoo.progress import Progress, search_status
from hybridmoo.proposers import DEFAULT_ALGORITHM, Proposer, make_proposer
from hybridmoo.scheduling import RefineSchedule, Round, Scheduler
from hybridmoo.space import FRONT_TUNED, REFINED, Candidate, SearchSpace
from hybridmoo.tasks import FrontJob, Refined, RefineJob, SearchTask

log = logging.getLogger("hybridmoo")

MAX_IDLE_ASKS = 100  # asks in a row that bring nothing new before the proposer counts as stuck
SETUP_CHECK_EVALS = 3  # this many first results all missing one objective = a setup error
NOT_FINITE = "is not a finite number"  # in the reason run_evaluation gives a NaN / Inf objective
OUT_OF_TIME = "max_seconds reached"  # the stop reason when the time budget ends evolution


@dataclass
class SearchResult:
    """What a search found: ``front`` (non-dominated records) and ``history`` (all, in order)."""

    archive: ParetoArchive
    stop_reason: str
    run_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def front(self) -> list[EvalResult]:
        return self.archive.front

    @property
    def history(self) -> list[EvalResult]:
        return self.archive.history

    @property
    def failed(self) -> list[EvalResult]:
        return [r for r in self.history if not r.ok]

    @property
    def hypervolume(self) -> float:
        return self.archive.hypervolume()

    @property
    def hypervolume_curve(self) -> list[float]:
        """Hypervolume after each evaluation (see :mod:`hybridmoo.archive` for normalisation)."""
        return self.archive.hypervolume_curve()


def search(space: SearchSpace, evaluate: Callable[[dict[str, Any]], Mapping[str, Any]],
           objectives: Sequence[Objective], *, constraints: Sequence[Constraint] = (),
           algorithm: str = DEFAULT_ALGORITHM, algorithm_options: Mapping[str, Any] | None = None,
           max_evals: int = 100, seed: int = 0, backend: str | Backend = "local",
           workers: int = 1, run_dir: str | os.PathLike[str] | None = None, resume: bool = False,
           reference: Mapping[str, tuple[float, float]] | None = None,
           refine: RefineSchedule | None = None, max_seconds: float | None = None,
           progress: bool | None = None) -> SearchResult:
    """Multi-objective search over ``space``; ``max_evals`` counts unique configs evaluated.

    ``evaluate(config) -> {objective name: value, ...}``; failures (exceptions, missing or
    non-finite values) become failed records and the search goes on. ``constraints`` name
    returned values that must be ``<= 0`` (or within their ``min``/``max``). ``reference``
    fixes the hypervolume normalisation. ``run_dir`` journals every result; ``resume=True``
    continues a run from its journal. ``refine`` alternates evolution with gradient refinement
    of the front's survivors (:class:`RefineSchedule`). ``max_seconds`` also stops the search
    (no new evaluation, refinement round or refinement job starts after it; those running
    finish; a round of ``RefineSchedule.refine`` in this process runs to its end).
    """
    objectives, constraints = _check_inputs(space, objectives, constraints, max_evals, seed)
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(
            max_seconds, int | float) or not max_seconds > 0):
        raise ConfigError(f"max_seconds must be a positive number, got {max_seconds!r}")
    if refine is not None and refine.final_share > 0 and max_seconds is None:
        raise ConfigError("refine final_share is a share of max_seconds: set max_seconds")
    options = dict(algorithm_options or {})
    proposer = make_proposer(algorithm, space, objectives, constraints, seed, **options)
    archive = ParetoArchive(objectives, reference)
    if isinstance(backend, str):
        backend = make_backend(backend, workers)
    settings = {"space": space.to_json(), "objectives": [vars(o) for o in objectives],
                "constraints": [vars(c) for c in constraints], "algorithm": algorithm,
                "algorithm_options": options, "seed": seed, "max_evals": max_evals}
    with ExitStack() as stack:
        journal = stack.enter_context(Journal(run_dir)) if run_dir is not None else None
        journaled = journal.start(settings, resume) if journal else []
        for r in journaled:
            archive.add(r)
        stack.enter_context(backend)
        task = EvaluationTask(evaluate, objectives, constraints)
        backend.start(task if refine is None or refine.worker is None
                      else SearchTask(task, refine.worker))
        scheduler = Scheduler(refine, max_seconds, journaled,
                              journal.last_round() if journal and journaled else None)
        with Progress(max_evals, progress, title="search") as bar:
            loop = _Loop(proposer, backend, archive, journal, bar, max_evals, journaled,
                         space, refine, scheduler)
            try:
                reason = loop.run()
            except ConfigError:
                if journal is not None and not resume:
                    journal.discard()
                raise
    log.info("search stopped: %s", reason)
    return SearchResult(archive, reason, Path(run_dir) if run_dir else None,
                        journal.warnings if journal else [])


class _Loop:
    """State of one pass of the search loop (kept apart so ``search`` reads in one screen);
    when to refine and what is the :class:`~hybridmoo.scheduling.Scheduler`'s business."""

    def __init__(self, proposer: Proposer, backend: Backend, archive: ParetoArchive,
                 journal: Journal | None, bar: Progress, max_evals: int,
                 journaled: list[EvalResult], space: SearchSpace,
                 refine: RefineSchedule | None, scheduler: Scheduler) -> None:
        self.proposer, self.backend, self.archive = proposer, backend, archive
        self.journal, self.bar, self.max_evals = journal, bar, max_evals
        self.space, self.key = space, space.canonical_key  # equivalent configs: one evaluation
        self.refine, self.scheduler = refine, scheduler
        evolved = [r for r in journaled if r.candidate.origin != REFINED]
        self.known = {self.key(r.config): r for r in evolved}  # every config with a result
        self.unreplayed = set(self.known)  # journaled configs the proposer has not asked yet
        self.waiting: dict[str, list[Candidate]] = {}  # in-flight key -> who asked for it
        self.consumed = 0  # budget used in this pass: submitted plus replayed from the journal
        self.told = 0  # evolutionary results told to the proposer (replayed ones included)
        self.to_tell = _refined_to_tell(journaled)  # (told before it, refined record)
        self.jobs: deque[RefineJob | FrontJob] = deque()  # the active round's, not started
        self.refining = 0  # refinement jobs on the backend
        self.proposer_waits = False  # the last ask gave nothing: its free workers may refine
        self.new_results: list[EvalResult] = []
        self.worked_before = any(r.ok for r in journaled)  # a resumed run that had results

    def run(self) -> str:
        reason = self._evolve()
        while self.scheduler.final_round_due() and self._refine_round(final=True):
            self._finish_round()
        if self.scheduler.evolve_again(reason == OUT_OF_TIME):
            reason = self._evolve()
        self._tell_refined()  # the last rounds' records: the proposer's state holds them too
        return reason

    def _evolve(self) -> str:
        idle_asks = 0
        while True:
            if self.scheduler.round_due(self._evolved()):
                while self.refine.worker is None and self.backend.in_flight:  # serial rounds
                    self._collect(*self.backend.next_done())
                self._refine_round()
            spare = self._spare()
            if self._budget_left(spare) > 0 and self.backend.in_flight < self.backend.capacity:
                asked, submitted = self._fill(spare)
                idle_asks = 0 if submitted else idle_asks + 1
                if self.backend.in_flight == 0:
                    if not asked:
                        return "the proposer has no new configuration to try"
                    if idle_asks >= MAX_IDLE_ASKS:
                        return f"the proposer repeated known configs {MAX_IDLE_ASKS} asks in a row"
                    continue
            if self.backend.in_flight == 0:
                if len(self.new_results) < SETUP_CHECK_EVALS:
                    self._check_setup()
                if not self.scheduler.evolving() and self._evolved() < self.max_evals:
                    return OUT_OF_TIME
                return f"max_evals={self.max_evals} reached"
            self._collect(*self.backend.next_done())

    def _finish_round(self) -> None:
        """Collect a final round's records, the free workers evaluating meanwhile
        (:meth:`_spare`); they drain before the next round is chosen."""
        while self.backend.in_flight:
            if (self._spare() and self.backend.in_flight < self.backend.capacity
                    and self._budget_left(spare=True) > 0):
                self._fill(spare=True)
            self._collect(*self.backend.next_done())

    def _spare(self) -> bool:
        """A round of backend jobs is running, every job started: the workers it leaves
        free evaluate more candidates (evolution past its own deadline, within
        ``max_seconds`` and ``max_evals``) instead of waiting for it."""
        return (self.refine is not None and self.refine.worker is not None and not self.jobs
                and self.scheduler.active is not None)

    def _evolved(self) -> int:
        """Records the evolution made (refined ones do not count towards max_evals)."""
        return len(self.archive) - sum(r.candidate.origin == REFINED
                                       for r in self.archive.history)

    def _refine_round(self, final: bool = False) -> bool:
        """Start the scheduler's next round (kept in the run directory first): refined in this
        process now, or as backend jobs whose records come back through ``_collect``. False
        when there was no survivor to refine."""
        assert self.refine is not None
        todo = self.scheduler.next_round(self.archive, final)
        if todo is None:
            return False
        if todo.told is None:
            todo.told = self.told
        if self.journal is not None:
            self.journal.write_round(todo.to_json())
        self.bar.update(self._evolved(), f"refinement round {todo.number}: refining "
                        f"{len(todo.todo)} survivors")
        if self.refine.worker is not None:
            self.jobs.extend(todo.jobs(self.scheduler.time_left()))
            self._submit_jobs()
            return True
        for result in self.refine.refine(todo.todo, self.archive):
            self._refined(todo, Refined(result))
        todo.remaining.clear()  # a survivor the refiner gave no record for is not waited on
        self.scheduler.finished()
        return True

    def _submit_jobs(self) -> None:
        """Hand the round's jobs to the backend, leaving one worker to evolution while it
        goes on and has candidates (every free one when the proposer waits, or is done).
        Past ``max_seconds`` no job starts: the round ends with those running (a resume
        refines the rest, as for a round a crash cut short)."""
        if self.jobs and self.scheduler.out_of_time():
            assert self.scheduler.active is not None
            self.scheduler.active.remaining -= {s.key for job in self.jobs
                                                for s in job.survivors}
            self.jobs.clear()
            self.scheduler.finished()
            return
        evolving = (self.scheduler.evolving() and self._budget_left() > 0
                    and not self.proposer_waits)
        while self.jobs and (self.refining == 0 or (
                self.backend.in_flight < self.backend.capacity
                and (not evolving or self.refining < self.backend.workers - 1))):
            self.backend.submit(self.jobs.popleft())
            self.refining += 1

    def _refined(self, todo: Round, out: Refined) -> None:
        """A refined record: weights kept first, then journaled, archived, told in turn."""
        result = out.result
        assert self.refine is not None
        if result.ok and out.network is not None and self.refine.keep is not None:
            self.refine.keep(result, out.network)
        todo.stamp(result)
        # serial rounds: told where the round started (a resumed one too); jobs: on arrival
        told = self.told if self.refine.worker is not None or todo.told is None else todo.told
        result.info["told_before"] = told
        if self.journal is not None:
            self.journal.append(result)
        self.archive.add(result)
        self.new_results.append(result)
        self.to_tell.append((told, result))
        self.bar.update(self._evolved(), search_status(
            len(self.archive.front), self.archive.hypervolume(),
            sum(not r.ok for r in self.archive.history)))

    def _tell_refined(self) -> None:
        """Tell the proposer the refined records due at this point of its stream: as many
        evolutionary results before each as when its round started (so a resume replays the
        same stream). Only successful ones whose config lies in the space."""
        due = [r for told, r in self.to_tell if told <= self.told]
        self.to_tell = [(told, r) for told, r in self.to_tell if told > self.told]
        if self.refine is not None and not self.refine.tell:
            return
        self.proposer.tell([r for r in due if r.ok and r.candidate.method != FRONT_TUNED
                            and self.space.contains(r.config)])

    def _budget_left(self, spare: bool = False) -> int:
        """Evaluations evolution may still start (``spare``: on workers a final round leaves
        free, until ``max_seconds``)."""
        if not (self.scheduler.evolving() or (spare and not self.scheduler.out_of_time())):
            return 0
        evaluating = self.backend.in_flight - self.refining
        return min(self.max_evals - self.consumed,
                   self.max_evals - self._evolved() - evaluating)

    def _fill(self, spare: bool = False) -> tuple[bool, bool]:
        """Ask once for the free slots; returns (got any candidate, submitted or replayed any).
        ``spare``: for workers a final round leaves free (see :meth:`_finish_round`)."""
        n = min(self.backend.capacity - self.backend.in_flight, self.max_evals - self.consumed)
        self._tell_refined()
        candidates = self.proposer.ask(n)
        self.proposer_waits = not candidates  # for results in flight (or it is done)
        if self.proposer_waits and not spare:
            self._submit_jobs()  # a free worker refines meanwhile
        submitted = False
        for c in candidates:
            key = self.key(c.config)
            if key in self.waiting:
                self.waiting[key].append(c)
            elif key in self.known:
                if key in self.unreplayed:
                    self.unreplayed.discard(key)
                    self.consumed += 1
                    self.told += 1
                    submitted = True  # replaying the journal is progress, not a repeat
                self.proposer.tell([self.known[key].for_candidate(c)])
            elif self._budget_left(spare) > 0:
                self.waiting[key] = [c]
                self.backend.submit(c)
                self.consumed += 1
                submitted = True
        return bool(candidates), submitted

    def _collect(self, candidate: Candidate | RefineJob | FrontJob, result: Any) -> None:
        if isinstance(candidate, RefineJob | FrontJob):
            self.refining -= 1
            assert self.scheduler.active is not None
            for refined in result if isinstance(result, list) else [result]:
                self._refined(self.scheduler.active, refined)
            self.scheduler.finished()
            self._submit_jobs()
            return
        if self.journal is not None:
            self.journal.append(result)
        self.archive.add(result)
        key = self.key(candidate.config)
        self.known[key] = result
        self.new_results.append(result)
        self.proposer.tell([result.for_candidate(c) for c in self.waiting.pop(key)])
        self.told += 1
        failed = sum(not r.ok for r in self.archive.history)
        self.bar.update(self._evolved(), search_status(len(self.archive.front),
                                                         self.archive.hypervolume(), failed))
        if len(self.new_results) == SETUP_CHECK_EVALS:
            self._check_setup()

    def _check_setup(self) -> None:
        """The first results all missing the same objective, or all giving it the same
        non-finite value (NaN every time): a setup error, not bad luck."""
        reasons = {r.reason for r in self.new_results[:SETUP_CHECK_EVALS]}
        reason = reasons.pop() if len(reasons) == 1 else None
        if reason and reason.startswith(MISSING_OBJECTIVE):
            raise ConfigError(reason)
        if (reason and reason.startswith("objective ") and NOT_FINITE in reason
                and len(self.new_results) >= SETUP_CHECK_EVALS and not self.worked_before):
            raise ConfigError(f"{reason} in each of the first {SETUP_CHECK_EVALS} evaluations")


def _refined_to_tell(journaled: list[EvalResult]) -> list[tuple[int, EvalResult]]:
    """Each journaled refined record with the evolutionary results told before it: its round's
    ``told_before``, or for older journals the evolutionary records before it."""
    out, evolved = [], 0
    for r in journaled:
        if r.candidate.origin != REFINED:
            evolved += 1
        else:
            told = r.info.get("told_before")
            out.append((told if isinstance(told, int) else evolved, r))
    return out


def _check_inputs(space: SearchSpace, objectives: Sequence[Objective],
                  constraints: Sequence[Constraint], max_evals: int, seed: int
                  ) -> tuple[tuple[Objective, ...], tuple[Constraint, ...]]:
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be a SearchSpace, got {type(space).__name__}")
    objectives, constraints = tuple(objectives), tuple(constraints)
    if not objectives:
        raise ConfigError("give at least one objective")
    for kind, items, cls in (("objective", objectives, Objective),
                             ("constraint", constraints, Constraint)):
        for item in items:
            if not isinstance(item, cls):
                raise ConfigError(f"each {kind} must be a {cls.__name__}, got {item!r}")
        names = [i.name for i in items]
        if len(set(names)) != len(names):
            raise ConfigError(f"{kind} names must be unique, got {names}")
    if isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < 1:
        raise ConfigError(f"max_evals must be a positive int, got {max_evals!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    return objectives, constraints
