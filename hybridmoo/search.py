"""``search()``: the one loop that asks a proposer, evaluates on a backend, and keeps the archive.

Resume replays the journal: the proposer is rebuilt from its seed and re-asked; every config the
journal already holds is answered from it instead of being evaluated again. With a deterministic
evaluate and one evaluation at a time, a resumed run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
import os
import time
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
from hybridmoo.space import REFINED, Candidate, SearchSpace

log = logging.getLogger("hybridmoo")

MAX_IDLE_ASKS = 100  # asks in a row that bring nothing new before the proposer counts as stuck
SETUP_CHECK_EVALS = 3  # this many first results all missing one objective = a setup error
NOT_FINITE = "is not a finite number"  # in the reason run_evaluation gives a NaN / Inf objective
OUT_OF_TIME = "max_seconds reached"  # the stop reason when the time budget ends evolution


@dataclass(frozen=True)
class RefineSchedule:
    """Refinement rounds inside a search: after every ``every`` evolutionary evaluations
    (never when None) and once at the end when ``final_round``, up to ``survivors`` front
    records not refined yet, spread along the front, go to ``refine(survivors, archive)``,
    which returns one result per survivor with ``origin="refine"`` (see
    :mod:`hybridmoo.refine`). Refined results join the archive and the journal; they do not
    count towards ``max_evals``.

    ``final_share`` (with ``max_seconds`` only) keeps that share of the time for the end:
    evolution stops that much earlier, then rounds repeat on the front as it is then until the
    time is up or every front record has been refined (evolution then goes on with the time
    left). Refining the final front wastes nothing on survivors that later evolution would
    have dominated anyway."""

    refine: Callable[[list[EvalResult], ParetoArchive], list[EvalResult]]
    every: int | None
    survivors: int = 4
    final_round: bool = True
    final_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("every", "survivors"):
            value = getattr(self, name)
            if name == "every" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"refine {name} must be an int >= 1, got {value!r}")
        share = self.final_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise ConfigError(f"refine final_share must be a number in [0, 1), got {share!r}")
        if share > 0 and not self.final_round:
            raise ConfigError("refine final_share needs final_round: the share is its time")


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
    (no new evaluation or refinement round starts after it; those running finish).
    """
    objectives, constraints = _check_inputs(space, objectives, constraints, max_evals, seed)
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(
            max_seconds, int | float) or not max_seconds > 0):
        raise ConfigError(f"max_seconds must be a positive number, got {max_seconds!r}")
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    evolve_deadline = deadline
    if refine is not None and refine.final_share > 0:
        if max_seconds is None:
            raise ConfigError("refine final_share is a share of max_seconds: set max_seconds")
        evolve_deadline = deadline - refine.final_share * max_seconds
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
        backend.start(EvaluationTask(evaluate, objectives, constraints))
        with Progress(max_evals, progress, title="search") as bar:
            loop = _Loop(proposer, backend, archive, journal, bar, max_evals, journaled,
                         space.canonical_key, refine, deadline, evolve_deadline)
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
    """State of one pass of the search loop (kept apart so ``search`` reads in one screen)."""

    def __init__(self, proposer: Proposer, backend: Backend, archive: ParetoArchive,
                 journal: Journal | None, bar: Progress, max_evals: int,
                 journaled: list[EvalResult], key: Callable[[dict[str, Any]], str],
                 refine: RefineSchedule | None = None, deadline: float | None = None,
                 evolve_deadline: float | None = None) -> None:
        self.proposer, self.backend, self.archive = proposer, backend, archive
        self.deadline = deadline  # time.monotonic() after which nothing new starts
        # after which no evaluation starts: earlier than deadline by the final round's share
        self.evolve_deadline = deadline if evolve_deadline is None else evolve_deadline
        self.journal, self.bar, self.max_evals = journal, bar, max_evals
        self.key = key  # canonical key: equivalent configs share one evaluation
        self.refine = refine
        evolved = [r for r in journaled if r.candidate.origin != REFINED]
        self.known = {key(r.config): r for r in evolved}  # every config with a result
        self.unreplayed = set(self.known)  # journaled configs the proposer has not asked yet
        self.waiting: dict[str, list[Candidate]] = {}  # in-flight key -> who asked for it
        self.consumed = 0  # budget used in this pass: submitted plus replayed from the journal
        self.new_results: list[EvalResult] = []
        self.worked_before = any(r.ok for r in journaled)  # a resumed run that had results
        self.rounds = max((int(r.info.get("round", 0)) for r in journaled
                           if r.candidate.origin == REFINED), default=0)
        # a round a crash cut short: its survivors without a result, and the whole round's keys
        self.pending_survivors, self.pending_keys = _unfinished_round(journaled)

    def run(self) -> str:
        reason = self._evolve()
        if self.refine is None or not self.refine.final_round:
            return reason
        if self.refine.final_share > 0:  # rounds until the time is up or the front is done
            while not self._out_of_time() and self._refine_round():
                pass
            if reason == OUT_OF_TIME and not self._out_of_time():  # done early: evolve on
                self.evolve_deadline = self.deadline
                reason = self._evolve()
        elif not self._out_of_time():
            self._refine_round()
        return reason

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _evolution_over(self) -> bool:
        return self.evolve_deadline is not None and time.monotonic() >= self.evolve_deadline

    def _evolve(self) -> str:
        idle_asks = 0
        while True:
            if self._refine_due():
                while self.backend.in_flight:
                    self._collect(*self.backend.next_done())
                self._refine_round()
            if self._budget_left() > 0 and self.backend.in_flight < self.backend.capacity:
                asked, submitted = self._fill()
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
                if self._evolution_over() and self._evolved() < self.max_evals:
                    return OUT_OF_TIME
                return f"max_evals={self.max_evals} reached"
            self._collect(*self.backend.next_done())

    def _refine_due(self) -> bool:
        if self.refine is None or self._evolution_over():
            return False
        if self.refine.every is None:
            return bool(self.pending_survivors)
        due = self._evolved() >= (self.rounds + 1) * self.refine.every
        return bool(self.pending_survivors) or due

    def _evolved(self) -> int:
        """Records the evolution made (refined ones do not count towards max_evals)."""
        return len(self.archive) - sum(r.candidate.origin == REFINED
                                       for r in self.archive.history)

    def _refine_round(self) -> bool:
        """Refine the chosen survivors; their results are journaled and join the archive.
        False when there was no survivor to refine."""
        assert self.refine is not None
        if self.pending_survivors:  # finish the round a crash cut short, under its number
            survivors, keys = self.pending_survivors, self.pending_keys
            self.pending_survivors = []
        else:
            survivors = self._survivors()
            keys = [r.key for r in survivors]
            if not survivors:
                return False
            self.rounds += 1
        self.bar.update(self._evolved(), f"refinement round {self.rounds}: refining "
                        f"{len(survivors)} survivors")
        for result in self.refine.refine(survivors, self.archive):
            result.info.update({"round": self.rounds, "round_survivors": keys})
            if self.journal is not None:
                self.journal.append(result)
            self.archive.add(result)
            self.new_results.append(result)
        self.bar.update(self._evolved(), search_status(
            len(self.archive.front), self.archive.hypervolume(),
            sum(not r.ok for r in self.archive.history)))
        return True

    def _survivors(self) -> list[EvalResult]:
        """Front records not refined yet, evenly spread along the first objective."""
        assert self.refine is not None
        done = {p for r in self.archive.history if r.candidate.origin == REFINED
                for p in r.candidate.parents}
        front = [r for r in self.archive.front
                 if r.candidate.origin != REFINED and r.key not in done]
        if not front:
            return []
        first = self.archive.objectives[0]
        front.sort(key=lambda r: first.sign * r.values[first.name])
        k = min(self.refine.survivors, len(front))
        picks = sorted({round(i * (len(front) - 1) / max(k - 1, 1)) for i in range(k)})
        return [front[i] for i in picks]

    def _budget_left(self) -> int:
        if self._evolution_over():
            return 0
        return min(self.max_evals - self.consumed,
                   self.max_evals - self._evolved() - self.backend.in_flight)

    def _fill(self) -> tuple[bool, bool]:
        """Ask once for the free slots; returns (got any candidate, submitted or replayed any)."""
        n = min(self.backend.capacity - self.backend.in_flight, self.max_evals - self.consumed)
        candidates = self.proposer.ask(n)
        submitted = False
        for c in candidates:
            key = self.key(c.config)
            if key in self.waiting:
                self.waiting[key].append(c)
            elif key in self.known:
                if key in self.unreplayed:
                    self.unreplayed.discard(key)
                    self.consumed += 1
                    submitted = True  # replaying the journal is progress, not a repeat
                self.proposer.tell([self.known[key].for_candidate(c)])
            elif self._budget_left() > 0:
                self.waiting[key] = [c]
                self.backend.submit(c)
                self.consumed += 1
                submitted = True
        return bool(candidates), submitted

    def _collect(self, candidate: Candidate, result: EvalResult) -> None:
        if self.journal is not None:
            self.journal.append(result)
        self.archive.add(result)
        key = self.key(candidate.config)
        self.known[key] = result
        self.new_results.append(result)
        self.proposer.tell([result.for_candidate(c) for c in self.waiting.pop(key)])
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


def _unfinished_round(journaled: list[EvalResult]) -> tuple[list[EvalResult], list[str]]:
    """Survivors of the journal's last refinement round that got no result (a crash cut it
    short; none when the round finished), and the keys of all that round's survivors."""
    refined = [r for r in journaled if r.candidate.origin == REFINED]
    if not refined:
        return [], []
    wanted = refined[-1].info.get("round_survivors", [])
    last_round = refined[-1].info.get("round")
    done = {p for r in refined if r.info.get("round") == last_round for p in r.candidate.parents}
    by_key = {r.key: r for r in journaled if r.candidate.origin != REFINED}
    return [by_key[k] for k in wanted if k not in done and k in by_key], list(wanted)


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
