"""When the search refines, and what: deadlines, refinement rounds and survivor choice.

The search loop asks a :class:`Scheduler` four things: may evolution start an evaluation
(:meth:`Scheduler.evolving`), is a round due (:meth:`Scheduler.round_due`), which survivors make
the next one (:meth:`Scheduler.next_round`), and whether the final phase goes on
(:meth:`Scheduler.final_round_due`, :meth:`Scheduler.evolve_again`). Everything about time
budgets, ``final_share``, rounds a crash cut short and survivor choice lives here.

Survivors are chosen by what they can add: each front record (not a refined one) gets the
preference aimed at the hypervolume gap next to it (:func:`hybridmoo.preference.gap_preference`,
on the archive's normalisation: the hypervolume that the move refinement makes would add along
each objective), and the records whose move adds most are refined first. The move is what
refinement has achieved so far (:func:`expected_steps`), so the choice learns, during the
search, whether lifting accuracy or cutting cost pays on this task. A record already refined
under the same preference (within ``PREFERENCE_TOLERANCE`` per objective) is left out.

With ``front_round`` the final phase opens with a front round: front records at once, one
backend job that tunes the supernet's shared weights on all their configs and returns a
network per record (:mod:`hybridmoo.refine.front`), within the time left. Measuring a record
again costs about its evaluation time, so under a deadline the round takes the records whose
accuracy lift adds most hypervolume, as many as measuring takes ``FRONT_MEASURE_SHARE`` of the
time left (the rest tunes); without one, the whole front. Its records are not
told to the proposer (their configs are known; their accuracy is not the supernet's) and do
not count in :func:`expected_steps` (they show what front tuning does, not refinement).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridmoo.archive import ParetoArchive
from hybridmoo.errors import ConfigError
from hybridmoo.objectives import EvalResult, Objective, minimization_matrix
from hybridmoo.preference import STEP, axis_of, gap_preference
from hybridmoo.space import FRONT_TUNED, REFINED
from hybridmoo.tasks import FrontJob, RefineFn, RefineJob

PREFERENCE_TOLERANCE = 0.01  # preferences this close on every objective count as the same
MIN_STEP = 1e-3  # an objective refinement has not improved still counts a little
FRONT_MEASURE_SHARE = 0.4  # of a front round's time, at most this much for measuring


@dataclass(frozen=True)
class RefineSchedule:
    """Refinement rounds inside a search: after every ``every`` evolutionary evaluations
    (never when None) and once at the end when ``final_round``, up to ``survivors`` front
    records chosen by the hypervolume their gap-aimed step adds (see
    :mod:`hybridmoo.scheduling`) go to ``refine(survivors, archive)``, which returns one
    result per survivor with ``origin="refine"`` (see :mod:`hybridmoo.refine`) under
    preferences of its own choice. Refined results join the archive and
    the journal, and those whose config lies in the space are told to the proposer; they do
    not count towards ``max_evals``.

    ``final_share`` (with ``max_seconds`` only) keeps that share of the time for the end:
    evolution stops that much earlier, then rounds repeat on the front as it is then until the
    time is up or no front record is left to refine (evolution then goes on with the time
    left); with ``worker``, workers a round leaves free go on evaluating meanwhile. Refining
    the final front wastes nothing on survivors that later evolution would have dominated
    anyway.

    ``worker`` instead of ``refine`` makes each survivor's refinement a task on the search's
    backend (:class:`hybridmoo.tasks.SearchTask`): ``worker(job, objectives)`` runs where the
    evaluations run, with the same evaluator, while evolution goes on on the other workers; a
    round's records are journaled as they come back, each after ``keep(record, network)``
    (save the weights) when it produced a network. ``tell=False`` keeps refined records from
    the proposer (they still join the archive: the ablation of refinement feeding evolution)."""

    refine: Callable[[list[EvalResult], ParetoArchive], list[EvalResult]] | None = None
    every: int | None = None
    survivors: int = 4
    final_round: bool = True
    final_share: float = 0.0
    worker: RefineFn | None = None
    keep: Callable[[EvalResult, Any], None] | None = None
    tell: bool = True
    front_round: bool = False

    def __post_init__(self) -> None:
        if (self.refine is None) == (self.worker is None):
            raise ConfigError("a RefineSchedule needs refine (rounds in the driver) or worker "
                              "(refinement as backend work), not both")
        if self.front_round and (self.worker is None or not self.final_round):
            raise ConfigError("refine front_round is a backend job of the final phase: it "
                              "needs worker and final_round")
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
class Round:
    """One refinement round: its number, survivors and their preferences (rows, over the
    search objectives, aimed at the front's gaps when the round was chosen); a front round
    (``front``) is one job for all its survivors."""

    number: int
    survivors: list[EvalResult]
    preferences: list[list[float]]
    front: bool = False
    skip: frozenset[str] = frozenset()  # survivors already refined (a round resumed)
    told: int | None = None  # evolutionary results the proposer had when the round started
    start: int | None = None  # older journals: the records before the round's first one
    remaining: set[str] = field(default_factory=set)  # survivors whose record is not back

    def __post_init__(self) -> None:
        self.remaining = {s.key for s in self.todo}

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.survivors]

    @property
    def todo(self) -> list[EvalResult]:
        """The survivors still to refine."""
        return [s for s in self.survivors if s.key not in self.skip]

    def jobs(self, budget_s: float | None = None) -> list[RefineJob | FrontJob]:
        """One backend job per survivor still to refine; a front round's one job, which may
        take ``budget_s`` seconds."""
        if self.front:
            return [FrontJob(tuple(self.todo), self.number, budget_s)]
        prefs = tuple(tuple(p) for p in self.preferences)
        return [RefineJob(s, prefs, i, self.number) for i, s in enumerate(self.survivors)
                if s.key not in self.skip]

    def stamp(self, result: EvalResult) -> None:
        """Write the round into a refined record's info (what a resume reads back)."""
        index = next((i for i, s in enumerate(self.survivors)
                      if s.key in result.candidate.parents), None)
        result.info.update({"round": self.number, "round_survivors": self.keys})
        if index is not None and self.preferences:
            result.info["front_preference"] = self.preferences[index]
        self.remaining -= set(result.candidate.parents)

    def to_json(self) -> dict[str, Any]:
        """What the run directory keeps of a round while it runs (see Journal.write_round)."""
        return {"round": self.number, "survivors": [s.to_json() for s in self.survivors],
                "preferences": self.preferences, "told": self.told, "front": self.front}


class Scheduler:
    """Deadlines and refinement rounds of one search (see the module docstring)."""

    def __init__(self, schedule: RefineSchedule | None, max_seconds: float | None,
                 journaled: list[EvalResult], last_round: dict[str, Any] | None = None) -> None:
        self.schedule = schedule
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.evolve_deadline = self.deadline  # after which no evaluation starts
        if schedule is not None and schedule.final_share > 0:
            if self.deadline is None or max_seconds is None:
                raise ConfigError("refine final_share is a share of max_seconds: set it")
            self.evolve_deadline = self.deadline - schedule.final_share * max_seconds
        refined = [r for r in journaled if r.candidate.origin == REFINED]
        self.rounds = max((int(r.info.get("round", 0)) for r in refined), default=0)
        self.pending = _unfinished_round(journaled, last_round)
        if self.pending is not None:
            self.rounds = max(self.rounds, self.pending.number)
        self.active: Round | None = None  # the round whose records are not all back
        self._final_done = False
        self._front_done = any(r.candidate.method == FRONT_TUNED for r in refined)

    # -- time ------------------------------------------------------------------------------

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def time_left(self) -> float | None:
        """Seconds to the deadline (None without one)."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    def evolving(self) -> bool:
        """Evolution may start new evaluations."""
        return self.evolve_deadline is None or time.monotonic() < self.evolve_deadline

    # -- rounds ----------------------------------------------------------------------------

    def round_due(self, evolved: int) -> bool:
        """A round is due during evolution: one a crash cut short, or ``every`` more
        evolutionary results since the last."""
        if self.schedule is None or not self.evolving() or self.active is not None:
            return False
        if self.pending is not None:
            return True
        every = self.schedule.every
        return every is not None and evolved >= (self.rounds + 1) * every

    def final_round_due(self) -> bool:
        """Another round on the final front: once, or with ``final_share`` until the time is
        up (the loop stops asking when a round finds no survivor)."""
        if self.schedule is None or not self.schedule.final_round or self.out_of_time():
            return False
        if self.schedule.final_share > 0:
            return True
        done, self._final_done = self._final_done, True
        return not done

    def evolve_again(self, reason_out_of_time: bool) -> bool:
        """After the final rounds: evolution goes on when ``final_share`` time is left."""
        if (self.schedule is None or self.schedule.final_share <= 0 or not reason_out_of_time
                or self.out_of_time()):
            return False
        self.evolve_deadline = self.deadline
        return True

    def next_round(self, archive: ParetoArchive, final: bool = False) -> Round | None:
        """The round to run now (it is active until :meth:`finished` says it is over): the
        one a crash cut short, else survivors chosen on ``archive`` (None when none is): the
        whole front for the first ``final`` round with ``front_round``."""
        assert self.schedule is not None
        if self.pending is not None:
            self.active, self.pending = self.pending, None
            if not self.active.preferences:  # an older journal: aimed as the round was
                then = (archive if self.active.start is None
                        else archive.prefix(self.active.start))
                aimed = _gap_scores(then)
                uniform = [round(1 / len(archive.objectives), 6)] * len(archive.objectives)
                self.active.preferences = [aimed.get(s.key, (0.0, uniform))[1]
                                           for s in self.active.survivors]
            return self.active
        front = final and self.schedule.front_round and not self._front_done
        if front:
            self._front_done = True
            survivors = front_survivors(archive, self.time_left())
            prefs = [task_only(archive.objectives)] * len(survivors)
        else:
            survivors, prefs = choose_survivors(archive, self.schedule.survivors)
        if not survivors:
            return None
        self.rounds += 1
        self.active = Round(self.rounds, survivors, prefs, front=front)
        return self.active

    def finished(self) -> bool:
        """True (and the round closed) when every record of the active round is back."""
        if self.active is not None and not self.active.remaining:
            self.active = None
        return self.active is None


def choose_survivors(archive: ParetoArchive, k: int) -> tuple[list[EvalResult], list[list[float]]]:
    """Up to ``k`` front records whose gap-aimed step adds most hypervolume, with their
    preferences (ordered along the first objective); a record refined before under the same
    preference is left out."""
    done = _refined_under(archive.history)
    scores = _gap_scores(archive)
    front = archive.front
    F = minimization_matrix(front, archive.objectives)
    scored = [(scores[r.key][0], i, scores[r.key][1]) for i, r in enumerate(front)
              if r.candidate.origin != REFINED and r.ok
              and not any(_same(scores[r.key][1], q) for q in done.get(r.key, []))]
    picks = sorted(scored, key=lambda t: (-t[0], t[1]))[:k]
    picks.sort(key=lambda t: (F[t[1], 0], t[1]))  # along the first objective
    return [front[i] for _, i, _ in picks], [p for _, _, p in picks]


def front_survivors(archive: ParetoArchive, time_left: float | None) -> list[EvalResult]:
    """A front round's records (see the module docstring), in front order."""
    front = archive.front
    records = [i for i, r in enumerate(front) if r.ok and r.candidate.origin != REFINED]
    per_record = float(np.mean([front[i].elapsed_s for i in records])) if records else 0.0
    if time_left is None or per_record <= 0:
        return [front[i] for i in records]
    n = max(1, int(FRONT_MEASURE_SHARE * time_left / per_record))
    if n < len(records):
        F = minimization_matrix(front, archive.objectives)
        ideal, nadir = archive.bounds()
        lift = [STEP if m else MIN_STEP for m in task_only(archive.objectives)]
        gains = {i: gap_preference(F, i, ideal, nadir, step=lift)[1] for i in records}
        records = sorted(sorted(records, key=lambda i: (-gains[i], i))[:n])
    return [front[i] for i in records]


def task_only(objectives: Sequence[Objective]) -> list[float]:
    """The preference of a front round's records: the task objectives only (what front tuning
    moves), shared equally."""
    mask = [axis_of(o) == "task" for o in objectives]
    return [round(m / max(sum(mask), 1), 6) for m in mask]


def _gap_scores(archive: ParetoArchive) -> dict[str, tuple[float, list[float]]]:
    """Front record key -> (the hypervolume its gap-aimed move adds, its preference)."""
    front = archive.front
    F = minimization_matrix(front, archive.objectives)
    ideal, nadir = archive.bounds()
    steps = expected_steps(archive)
    out = {}
    for i, r in enumerate(front):
        pref, gain = gap_preference(F, i, ideal, nadir, step=steps)
        out[r.key] = (gain, [round(float(v), 6) for v in pref])
    return out


def expected_steps(archive: ParetoArchive) -> np.ndarray:
    """Per objective, the share of its value refinement improved so far: the median over
    successful refined records of ``(parent - child) / |parent|`` (minimisation form), at
    least ``MIN_STEP``; ``STEP`` for every objective before any refined record."""
    by_key = {r.key: r for r in archive.history}
    pairs = [(by_key[r.candidate.parents[0]], r) for r in archive.history
             if r.candidate.origin == REFINED and r.ok and r.candidate.parents
             and r.candidate.method != FRONT_TUNED
             and r.candidate.parents[0] in by_key and by_key[r.candidate.parents[0]].ok]
    if not pairs:
        return np.full(len(archive.objectives), STEP)
    parents = minimization_matrix([p for p, _ in pairs], archive.objectives)
    children = minimization_matrix([c for _, c in pairs], archive.objectives)
    scale = np.where(parents != 0, np.abs(parents), 1.0)
    return np.maximum(np.median((parents - children) / scale, axis=0), MIN_STEP)


def _refined_under(history: list[EvalResult]) -> dict[str, list[Any]]:
    """Parent key -> preferences it was refined under (None: unknown, counts as any)."""
    out: dict[str, list[Any]] = {}
    for r in history:
        if r.candidate.origin == REFINED:
            for parent in r.candidate.parents:
                out.setdefault(parent, []).append(r.info.get("front_preference"))
    return out


def _same(p: list[float], q: Any) -> bool:
    if q is None or len(q) != len(p):
        return True  # refined before this was recorded: once is enough
    return bool(np.all(np.abs(np.asarray(p) - np.asarray(q, dtype=float))
                       <= PREFERENCE_TOLERANCE))


def _unfinished_round(journaled: list[EvalResult], last: dict[str, Any] | None
                      ) -> Round | None:
    """The last round started (``last``, what the run directory kept of it; else the
    journal's last refined records say) when a crash cut it short: under its number, with its
    survivors and preferences, those with a record in the journal skipped."""
    refined = [r for r in journaled if r.candidate.origin == REFINED]
    if last is not None:
        number = int(last["round"])
        survivors = [EvalResult.from_json(s) for s in last["survivors"]]
        prefs = [list(p) for p in last.get("preferences", [])]
        told, start, front = last.get("told"), None, bool(last.get("front", False))
    elif refined:
        number = int(refined[-1].info.get("round", 0))
        by_key = {r.key: r for r in journaled if r.candidate.origin != REFINED}
        survivors = [by_key[k] for k in refined[-1].info.get("round_survivors", [])
                     if k in by_key]
        prefs, told = [], refined[-1].info.get("told_before")
        front = refined[-1].candidate.method == FRONT_TUNED
        start = next(i for i, r in enumerate(journaled) if r.candidate.origin == REFINED
                     and r.info.get("round", 0) == number)
    else:
        return None
    done = {p for r in refined if r.info.get("round") == number for p in r.candidate.parents}
    pending = Round(number, survivors, prefs, front=front, skip=frozenset(done),
                    told=told if isinstance(told, int) else None, start=start)
    return pending if pending.remaining else None
