"""Uniform random search over configs not proposed before."""

from __future__ import annotations

from hybridmoo.objectives import EvalResult
from hybridmoo.proposers.base import Genome, Proposer, genome, random_unseen
from hybridmoo.space import Candidate


class RandomProposer(Proposer):
    """Draws configs uniformly; never repeats one it has proposed or been told about."""

    name = "random"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._seen: set[Genome] = set()

    def _ask(self, n: int) -> list[Candidate]:
        out: list[Candidate] = []
        while len(out) < n and (x := random_unseen(self.space, self.rng, self._seen)) is not None:
            self._seen.add(x)
            out.append(Candidate(self.space.decode(x), origin="random"))
        return out

    def _tell(self, results: list[EvalResult]) -> None:
        self._seen.update(genome(self.space.encode(r.config)) for r in results)
