"""Uniform random search over configs not proposed before."""

from __future__ import annotations

from hybridmoo.objectives import EvalResult
from hybridmoo.proposers.base import Proposer
from hybridmoo.space import Candidate

MAX_DRAWS_PER_CANDIDATE = 1000


class RandomProposer(Proposer):
    """Draws configs uniformly; never repeats one it has proposed."""

    name = "random"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._seen: set[str] = set()

    def _ask(self, n: int) -> list[Candidate]:
        out: list[Candidate] = []
        for _ in range(n * MAX_DRAWS_PER_CANDIDATE):
            if len(out) == n or len(self._seen) >= self.space.size:
                break
            c = Candidate(self.space.sample(self.rng), origin="random")
            if c.key not in self._seen:
                self._seen.add(c.key)
                out.append(c)
        return out

    def _tell(self, results: list[EvalResult]) -> None:
        self._seen.update(r.key for r in results)
