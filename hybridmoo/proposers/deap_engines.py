"""DEAP's multi-objective selection (NSGA-II, SPEA2) as a generational ask/tell engine.

DEAP supplies only its deterministic selection operators (``selNSGA2`` with its non-dominated
sorting and crowding distance, ``selSPEA2``). Everything random (initial sampling, binary
tournaments, uniform crossover, mutation) is written here on the proposer's numpy Generator,
so the global ``random`` module plays no part and the seed fixes the run. Individuals are plain
dataclasses with a ``.fitness``; no ``deap.creator`` class is ever made, so nothing built at
run time has to cross a process boundary.

One generation: ``pop_size`` offspring (two per pair of tournament winners, uniform crossover,
then per-dimension mutation) are proposed; when their results are in, parents and offspring
compete for ``pop_size`` places under Deb's feasibility rule: feasible individuals are ranked
by the DEAP selection, infeasible ones (failures included, with violation ``inf``) only fill
the places left, least violation first. No config is ever proposed twice.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from deap import base, tools

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import EvalResult, minimization_matrix
from hybridmoo.proposers.base import BatchProposer, Genome, genome, random_unseen
from hybridmoo.space import Candidate, Choice, SearchSpace

SELECTIONS = ("nsga2", "spea2")
VARIATION_TRIES = 20  # offspring pairs drawn per population slot before random fill-up


class MinFitness(base.Fitness):
    """Fitness with every objective minimised: one weight of -1 per value, set per instance
    (a module-level class instead of a ``deap.creator`` one, so it pickles anywhere)."""

    def __init__(self, values: Sequence[float] = ()) -> None:
        self.weights = (-1.0,) * len(values)
        super().__init__(tuple(values))

    def __deepcopy__(self, memo: dict[int, Any]) -> MinFitness:
        return MinFitness(self.values)


@dataclass(eq=False)
class Individual:
    """One evaluated config: its genome (index vector), its result and DEAP's fitness view."""

    genome: Genome
    result: EvalResult
    fitness: MinFitness = field(default_factory=MinFitness)

    @property
    def key(self) -> str:
        return self.result.key


class DeapProposer(BatchProposer):
    """NSGA-II or SPEA2 (``selection``) from DEAP over the space's index vectors."""

    def __init__(self, space: SearchSpace, objectives, constraints=(), seed: int = 0, *,
                 selection: str = "nsga2", pop_size: int = 20) -> None:
        super().__init__(space, objectives, constraints, seed)
        if selection not in SELECTIONS:
            raise ConfigError(f"deap selection must be one of {SELECTIONS}, got {selection!r}")
        if isinstance(pop_size, bool) or not isinstance(pop_size, int) or pop_size < 2:
            raise ConfigError(f"pop_size must be an int >= 2, got {pop_size!r}")
        self.name = f"deap-{selection}"
        self.selection = selection
        self.pop_size = min(pop_size, space.size)
        self._categorical = [isinstance(d, Choice) for d in space.dims.values()]
        self._seen: set[Genome] = set()
        self._population: list[Individual] = []
        self._generation = 0

    # -- BatchProposer hooks --------------------------------------------------------------

    def _next_batch(self) -> list[Candidate]:
        if not self._population:
            return self._random_fill([], "init" if self._generation == 0 else "random")
        return self._random_fill(self._offspring(), "random")

    def _learn(self, results: list[EvalResult]) -> None:
        offspring = [Individual(self._genome(r.config), r) for r in results]
        self._population = self._survive(self._population + offspring)
        self._generation += 1

    def _tell(self, results: list[EvalResult]) -> None:
        for r in results:  # configs evaluated elsewhere count as seen too
            self._seen.add(self._genome(r.config))
        super()._tell(results)

    # -- selection ------------------------------------------------------------------------

    def _survive(self, pool: list[Individual]) -> list[Individual]:
        """Deb's rule: feasible ones by DEAP's selection, then the least infeasible ones."""
        k = min(self.pop_size, len(pool))
        feasible = [ind for ind in pool if ind.result.feasible]
        infeasible = sorted((ind for ind in pool if not ind.result.feasible),
                            key=lambda ind: ind.result.violation)
        for ind in infeasible:
            ind.fitness = MinFitness()
        chosen = self._select(feasible, min(k, len(feasible))) if feasible else []
        return chosen + infeasible[:k - len(chosen)]

    def _select(self, individuals: list[Individual], k: int) -> list[Individual]:
        """DEAP's selection on objectives scaled to [0, 1] over ``individuals`` (dominance is
        unchanged; SPEA2's density distances stop depending on the units)."""
        F = minimization_matrix([ind.result for ind in individuals], self.objectives)
        lo, span = F.min(axis=0), np.ptp(F, axis=0)
        F = (F - lo) / np.where(span > 0, span, 1.0)
        for ind, f in zip(individuals, F, strict=True):
            ind.fitness = MinFitness(tuple(float(v) for v in f))
        if self.selection == "nsga2":
            return tools.selNSGA2(individuals, k)  # also sets fitness.crowding_dist
        # selSPEA2's quickselect draws pivots from the global ``random`` module; the value it
        # selects does not depend on them, and the global state is put back untouched.
        state = random.getstate()
        try:
            return tools.selSPEA2(individuals, k)
        finally:
            random.setstate(state)

    def _tournament(self, pool: list[Individual]) -> Individual:
        """Binary tournament: feasible beats infeasible, less violation beats more, Pareto
        dominance, then (NSGA-II) larger crowding distance; a tie is a coin flip."""
        if len(pool) == 1:
            return pool[0]
        i, j = self.rng.choice(len(pool), size=2, replace=False)
        a, b = pool[int(i)], pool[int(j)]
        winner = _better(a, b, crowding=self.selection == "nsga2")
        if winner is None:
            winner = a if self.rng.random() < 0.5 else b
        return winner

    # -- variation ------------------------------------------------------------------------

    def _offspring(self) -> list[Candidate]:
        batch: list[Candidate] = []
        pool = self._population
        for _ in range(VARIATION_TRIES * self.pop_size):
            if len(batch) >= self.pop_size:
                break
            p1 = self._tournament(pool)
            p2 = self._tournament([ind for ind in pool if ind is not p1] or pool)
            for child in self._crossover(p1.genome, p2.genome):
                child = self._mutate(child)
                if child in self._seen or len(batch) >= self.pop_size:
                    continue
                self._seen.add(child)
                parents = (p1.key, p2.key) if p1 is not p2 else (p1.key,)
                batch.append(Candidate(self.space.decode(np.array(child)), origin="evo",
                                       parents=parents))
        return batch

    def _crossover(self, g1: Genome, g2: Genome) -> tuple[Genome, Genome]:
        """Uniform crossover (as ``tools.cxUniform`` with ``indpb=0.5``): two children."""
        swap = self.rng.random(len(g1)) < 0.5
        a, b = np.array(g1), np.array(g2)
        return genome(np.where(swap, b, a)), genome(np.where(swap, a, b))

    def _mutate(self, genome: Genome) -> Genome:
        """Per dimension with probability 1/n: redraw a categorical index (to another value);
        move an integer one by a step of at most a quarter of its range (at least 1)."""
        x = list(genome)
        hits = self.rng.random(len(x)) < 1.0 / len(x)
        for j in np.flatnonzero(hits):
            size = int(self.space.sizes[j])
            if size < 2:
                continue
            if self._categorical[j]:
                new = int(self.rng.integers(size - 1))
                x[j] = new + (new >= x[j])
            else:
                reach = max(1, (size - 1) // 4)
                step = int(self.rng.integers(1, reach + 1)) * (1 if self.rng.random() < 0.5 else -1)
                x[j] = min(max(x[j] + step, 0), size - 1)
        return tuple(x)

    def _random_fill(self, batch: list[Candidate], origin: str) -> list[Candidate]:
        """Top ``batch`` up to ``pop_size`` with random unseen configs (fewer when none left)."""
        while len(batch) < self.pop_size:
            x = random_unseen(self.space, self.rng, self._seen)
            if x is None:
                break
            self._seen.add(x)
            batch.append(Candidate(self.space.decode(np.array(x)), origin=origin))
        return batch

    def _genome(self, config: dict[str, Any]) -> Genome:
        return genome(self.space.encode(config))


def _better(a: Individual, b: Individual, crowding: bool) -> Individual | None:
    fa, fb = a.result.feasible, b.result.feasible
    if fa != fb:
        return a if fa else b
    if not fa:
        va, vb = a.result.violation, b.result.violation
        return None if va == vb else (a if va < vb else b)
    if a.fitness.dominates(b.fitness):
        return a
    if b.fitness.dominates(a.fitness):
        return b
    if crowding:
        ca = getattr(a.fitness, "crowding_dist", 0.0)
        cb = getattr(b.fitness, "crowding_dist", 0.0)
        if ca != cb:
            return a if ca > cb else b
    return None
