"""A trained Pareto set model as a search engine: ``ask`` draws preferences and returns the
configs the model gives for them, so they are measured, journaled and archived like any
other proposal.

Preferences are drawn uniformly on the simplex. A model gives the same config for nearby
preferences, so each ask draws up to :data:`DRAWS_PER_PICK` preferences per wanted config;
when those give no unseen config, the next come from the model's own distribution at a
random preference (a sample of the softmax of its logits: configs near what it believes),
and only then uniformly at random. The model is not trained further by what it is told.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import EvalResult
from hybridmoo.proposers.base import Genome, Proposer, genome, random_unseen
from hybridmoo.space import Candidate

DRAWS_PER_PICK = 20  # preferences drawn per wanted config before sampling the model
SAMPLE_TRIES = 20  # samples of the model's distribution per wanted config


class ParetoSetProposer(Proposer):
    """Proposals of the Pareto set model saved in directory ``model``."""

    name = "paretoset"

    def __init__(self, space, objectives, constraints=(), seed=0, *,
                 model: str | Path | None = None) -> None:
        super().__init__(space, objectives, constraints, seed)
        from hybridmoo.paretoset.model import ParetoSet

        if model is None:
            raise ConfigError("algorithm 'paretoset' needs algorithm_options.model: the "
                              "directory of a trained Pareto set model (hybridmoo paretoset)")
        self.paretoset = ParetoSet.load(model)
        if self.paretoset.space != space:
            raise ConfigError(f"the Pareto set model in {model} was trained on another search "
                              f"space than this search's")
        self._seen: set[Genome] = set()
        self._torch = torch.Generator().manual_seed(int(self.rng.integers(2**31)))

    def _ask(self, n: int) -> list[Candidate]:
        out: list[Candidate] = []
        m = self.paretoset.model.n_objectives
        for x in self._from_preferences(self.rng.dirichlet(np.ones(m), DRAWS_PER_PICK * n), n):
            out.append(Candidate(self.space.decode(x), origin="evo"))
        tries = 0
        while len(out) < n and tries < SAMPLE_TRIES * n:
            tries += 1
            x = self._sample(self.rng.dirichlet(np.ones(m)))
            if x not in self._seen:
                self._seen.add(x)
                out.append(Candidate(self.space.decode(x), origin="evo"))
        while len(out) < n and (x := random_unseen(self.space, self.rng, self._seen)) is not None:
            self._seen.add(x)
            out.append(Candidate(self.space.decode(x), origin="random"))
        return out

    def _from_preferences(self, preferences: np.ndarray, n: int) -> list[Genome]:
        """Up to ``n`` unseen configs the model gives for ``preferences``, in their order."""
        picks: list[Genome] = []
        for config in self.paretoset.configs_for(preferences):
            x = genome(self.space.encode(config))
            if x not in self._seen:
                self._seen.add(x)
                picks.append(x)
                if len(picks) == n:
                    break
        return picks

    def _sample(self, preference: np.ndarray) -> Genome:
        """A config drawn from the model's softmax at ``preference`` (its index vector in this
        search's space)."""
        with torch.no_grad():
            logits = self.paretoset.model(torch.as_tensor(preference[None], dtype=torch.float32))
        index = [int(torch.multinomial(torch.softmax(lg[0], -1), 1, generator=self._torch))
                 for lg in logits]
        return genome(self.space.encode(self.paretoset.space.decode(index)))

    def _tell(self, results: list[EvalResult]) -> None:
        self._seen.update(genome(self.space.encode(r.config)) for r in results)
