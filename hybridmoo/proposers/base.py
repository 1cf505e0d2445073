"""The one interface every search engine implements: ask / tell / state_dict.

Subclasses implement ``_ask`` and ``_tell``. The base class records every ask and tell, so
``state_dict()`` is plain JSON and ``load_state_dict()`` rebuilds a proposer by replaying that
record into a fresh one with the same seed (and checks that it proposes the same configs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from hybridmoo.objectives import Constraint, EvalResult, Objective
from hybridmoo.space import REFINED, Candidate, SearchSpace


class Proposer(ABC):
    """Proposes candidates (``ask``) and learns from their results (``tell``).

    Contract (checked by :mod:`hybridmoo.testing.proposers`):
    - ``ask(n)`` returns at most ``n`` candidates whose configs lie in the space. It may return
      fewer, even none, while it waits for results of candidates it already handed out; when
      every handed-out candidate has been told, an empty answer means "nothing left to try".
    - ``tell`` accepts results in any order and in any grouping, failed ones included, and
      results of candidates it never handed out: refined networks (``origin="refine"``, a
      config in the space) are data to learn and breed from like any other.
    - same seed and same results give the same sequence of candidates.
    """

    name: ClassVar[str] = "proposer"

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective],
                 constraints: Sequence[Constraint] = (), seed: int = 0) -> None:
        self.space = space
        self.objectives = tuple(objectives)
        self.constraints = tuple(constraints)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._events: list[dict[str, Any]] = []

    def ask(self, n: int) -> list[Candidate]:
        """Up to ``n`` new candidates."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"ask(n) needs n >= 1, got {n!r}")
        candidates = self._ask(n)
        if len(candidates) > n:
            raise RuntimeError(f"{self.name} returned {len(candidates)} candidates for ask({n})")
        self._events.append({"ask": n, "keys": [c.key for c in candidates]})
        return candidates

    def tell(self, results: Sequence[EvalResult]) -> None:
        """Results of candidates this proposer handed out (or identical configs)."""
        results = list(results)
        if not results:
            return
        self._events.append({"tell": [r.to_json() for r in results]})
        self._tell(results)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the seed and the record of asks and tells."""
        return {"algorithm": self.name, "seed": self.seed,
                "events": [dict(e) for e in self._events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore by replay; only valid on a fresh proposer built with the same settings."""
        if self._events:
            raise RuntimeError("load_state_dict needs a fresh proposer (this one was used)")
        if state.get("algorithm") != self.name or state.get("seed") != self.seed:
            raise ValueError(
                f"state of {state.get('algorithm')!r} seed {state.get('seed')} cannot load into "
                f"{self.name!r} seed {self.seed}"
            )
        for event in state["events"]:
            if "ask" in event:
                keys = [c.key for c in self.ask(int(event["ask"]))]
                if keys != event["keys"]:
                    raise RuntimeError(f"{self.name}: replay diverged (the proposer is not "
                                       "deterministic for this seed)")
            else:
                self.tell([EvalResult.from_json(r) for r in event["tell"]])

    @abstractmethod
    def _ask(self, n: int) -> list[Candidate]: ...

    @abstractmethod
    def _tell(self, results: list[EvalResult]) -> None: ...


class BatchProposer(Proposer):
    """A generational engine: it makes a whole batch, hands it out, then waits for every result.

    Subclasses implement ``_next_batch() -> list[Candidate]`` and ``_learn(results)``, where
    ``results`` line up with the batch, followed by the successful refined records told since
    the last batch (networks made outside the engine that it may select and breed from).
    Duplicate configs within a batch share one result. An engine that learns from each result
    as it is told (:meth:`_whole_batch` False) makes its next batch as soon as the last one is
    handed out, from the results in so far, so parallel workers never wait for a batch's
    slowest evaluation; ``results`` then holds those of its batch that came in.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: list[Candidate] = []
        self._batch: list[Candidate] = []
        self._received: dict[str, EvalResult] = {}
        self._outside: list[EvalResult] = []  # refined records told since the last batch

    def _ask(self, n: int) -> list[Candidate]:
        if not self._queue and not (self._whole_batch() and self._waiting()):
            if self._batch:
                self._learn([self._received[c.key] for c in self._batch
                             if c.key in self._received] + self._outside)
                self._outside = []
            self._batch = self._next_batch()
            self._queue = list(self._batch)
            self._received = {}
        out, self._queue = self._queue[:n], self._queue[n:]
        return out

    def _waiting(self) -> bool:
        return any(c.key not in self._received for c in self._batch)

    def _whole_batch(self) -> bool:
        """Whether the next batch waits for every result of this one (generational engines)."""
        return True

    def _tell(self, results: list[EvalResult]) -> None:
        batch_keys = {c.key for c in self._batch}
        for r in results:
            if r.key in batch_keys:
                self._received[r.key] = r
            elif r.candidate.origin == REFINED and r.ok and self.space.contains(r.config):
                self._outside.append(r)

    @abstractmethod
    def _next_batch(self) -> list[Candidate]: ...

    @abstractmethod
    def _learn(self, results: list[EvalResult]) -> None: ...


Genome = tuple[int, ...]  # a config as its index vector (hashable)
RANDOM_TRIES = 1000  # rejection-sampling draws when looking for an unseen config
ENUMERATE_LIMIT = 1 << 16  # spaces up to this size are enumerated when rejection fails


def genome(x: Any) -> Genome:
    """Index vector (array, list or config encoding) as a hashable tuple of ints."""
    return tuple(int(v) for v in np.rint(np.asarray(x)))


def random_unseen(space: SearchSpace, rng: np.random.Generator, seen: set[Genome]
                  ) -> Genome | None:
    """A uniformly drawn index vector not in ``seen``; ``None`` when every config is seen
    (or, in a space too large to enumerate, when ``RANDOM_TRIES`` draws found nothing new)."""
    if len(seen) >= space.size:
        return None
    for _ in range(RANDOM_TRIES):
        x = genome(rng.integers(0, space.sizes))
        if x not in seen:
            return x
    if space.size > ENUMERATE_LIMIT:
        return None
    free = [x for x in np.ndindex(*(int(s) for s in space.sizes)) if x not in seen]
    return genome(free[int(rng.integers(len(free)))]) if free else None


FAILED = 1e12  # stands in for "infinitely bad" where an engine needs finite numbers


def constraint_matrix(results: Sequence[EvalResult], constraints: Sequence[Constraint]
                      ) -> np.ndarray:
    """``(n, len(constraints) + 1)``: constraint values (<= 0 feasible), plus one column that is
    positive exactly when the evaluation failed, so failures are infeasible to every engine."""
    G = np.zeros((len(results), len(constraints) + 1))
    for i, r in enumerate(results):
        if r.ok:
            G[i, :-1] = [r.constraints[c.name] for c in constraints]
        else:
            G[i] = FAILED
    return G
