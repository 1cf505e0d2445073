"""How the surrogate engine chooses what to evaluate: hypervolume-gain picks on predictions,
the one-dimension neighbourhood of the front (Pareto local search), and the credit that
decides between the two from what each has bought so far."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybridmoo.archive import hypervolume, non_dominated_mask
from hybridmoo.proposers.surrogate_models import nondominated_rank

MAX_SHORTLIST = 200  # predicted-best candidates scored for hypervolume gain per pick
CREDIT_WINDOW = 20  # a source's last this many settled picks make its rate
MODEL, LOCAL = "model", "local"  # the two sources of a batch's picks


def neighbours(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Every index vector that differs from ``x`` in exactly one dimension."""
    rows = []
    for j, size in enumerate(sizes):
        for v in range(int(size)):
            if v != x[j]:
                y = x.copy()
                y[j] = v
                rows.append(y)
    return np.array(rows).reshape(-1, len(x))


def front_of(F: np.ndarray) -> np.ndarray:
    """The non-dominated rows of ``F`` (minimisation)."""
    return F[non_dominated_mask(F)] if len(F) else F


def greedy_hypervolume_picks(P: np.ndarray, front: np.ndarray, size: int) -> list[int]:
    """Up to ``size`` rows of predictions ``P`` (``(n, n_obj)``, or ``(n, size, n_obj)`` with
    the values of pick ``k`` in ``P[:, k]``), greedily by hypervolume gain over ``front``
    (the real feasible front, minimisation), each pick believed before the next. With one
    prediction per row, picking stops when nothing gains; with draws, a draw without a gain
    is skipped."""
    if len(P) == 0 or size == 0:
        return []
    drawn = P.ndim == 3
    if not drawn:
        P = np.repeat(P[:, None, :], size, axis=1)
    order = np.argsort(nondominated_rank(P.min(axis=1)), kind="stable")[:MAX_SHORTLIST]
    P = P[order]
    front = front if len(front) else P[:1, 0]
    ideal, nadir = front.min(axis=0), front.max(axis=0)
    picks: list[int] = []
    base = hypervolume(front, ideal, nadir)
    for k in range(size):
        gains = np.array([-1.0 if i in picks else
                          hypervolume(np.vstack([front, P[i, k]]), ideal, nadir) - base
                          for i in range(len(P))])
        best = int(np.argmax(gains))
        if gains[best] > 0:
            picks.append(best)
            front = np.vstack([front, P[best, k]])
            base += gains[best]
        elif not drawn:
            break
    return [int(order[i]) for i in picks]


@dataclass
class SourceCredit:
    """What each source's picks bought: a pick succeeds when its result is not weakly
    dominated by the front as it stood when its batch was made (it improved the front). A
    source's rate is its share of successes over its last :data:`CREDIT_WINDOW` settled picks
    (in the order they were proposed, so the order results come in does not matter). Success
    rather than hypervolume gain: a gain measured in the front's own box favours early picks
    that stretch the box, and kept the model's picks long after local search paid more
    (docs/benchmarks.md, issue 18)."""

    fronts: list[np.ndarray] = field(default_factory=list)  # the front at each batch
    pending: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # key -> batch, i
    settled: dict[str, list[tuple[int, int, float]]] = field(
        default_factory=lambda: {MODEL: [], LOCAL: []})

    def propose(self, front: np.ndarray, sources: dict[str, str]) -> None:
        """A new batch made against ``front``: ``sources`` maps each pick's key to its source."""
        batch = len(self.fronts)
        self.fronts.append(front)
        for i, (key, source) in enumerate(sources.items()):
            self.pending[key] = (batch, i, source)

    def settle(self, key: str, f: np.ndarray | None) -> None:
        """The result of pick ``key``: its objectives (minimisation), None when it failed or
        is infeasible (it bought nothing)."""
        if key not in self.pending:
            return
        batch, i, source = self.pending.pop(key)
        front = self.fronts[batch]
        improved = f is not None and not np.any(np.all(front <= f, axis=1))
        self.settled[source].append((batch, i, float(improved)))

    def rate(self, source: str) -> float | None:
        """Share of the source's window that improved the front; None before any pick."""
        last = sorted(self.settled[source])[-CREDIT_WINDOW:]
        return float(np.mean([g for _, _, g in last])) if last else None

    def local_slots(self, size: int) -> int:
        """How many of a batch's ``size`` picks go to the front's neighbourhood: all but one
        once local search improves the front more often than the model's global picks, else
        one (each
        source keeps one pick per batch, so the other's rate stays measured)."""
        if size <= 1:
            return 0
        model, local = self.rate(MODEL), self.rate(LOCAL)
        return size - 1 if local is not None and model is not None and local > model else 1
