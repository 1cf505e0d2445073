"""pymoo's multi-objective algorithms (NSGA-II, NSGA-III, AGE-MOEA2, SMS-EMOA) via ask/tell.

Configs are integer index vectors. Variation suits both kinds of dimension: uniform crossover,
and a mutation that redraws a categorical index or nudges an integer one. Duplicate elimination
also rejects every config this proposer has already handed out, so no evaluation is wasted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.evaluator import Evaluator
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.problems.static import StaticProblem

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import EvalResult, minimization_matrix
from hybridmoo.proposers.base import FAILED, BatchProposer, Genome, constraint_matrix, genome
from hybridmoo.space import Candidate, Choice, SearchSpace

ALGORITHMS = ("nsga2", "nsga3", "agemoea2", "smsemoa")


class PymooProposer(BatchProposer):
    """One of pymoo's algorithms, chosen by ``algorithm``, over the space's index vectors."""

    def __init__(self, space, objectives, constraints=(), seed=0, *, algorithm: str = "nsga2",
                 pop_size: int = 20, n_offsprings: int | None = None) -> None:
        super().__init__(space, objectives, constraints, seed)
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"pymoo algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if not isinstance(pop_size, int) or pop_size < 2:
            raise ConfigError(f"pop_size must be an int >= 2, got {pop_size!r}")
        self.name = algorithm
        self._seen: set[Genome] = set()
        self._problem = _IndexProblem(space, len(self.objectives), len(self.constraints) + 1)
        self._algorithm = _build(algorithm, pop_size, n_offsprings, space, len(self.objectives),
                                 self._seen)
        self._algorithm.setup(self._problem, termination=NoTermination(), seed=self.seed)
        self._pop: Population | None = None

    def _next_batch(self) -> list[Candidate]:
        self._pop = self._algorithm.ask()
        X = self._pop.get("X") if self._pop is not None else np.empty((0, len(self.space)))
        origin = "init" if self._algorithm.n_gen in (None, 1) else "evo"
        batch = []
        for x in X:
            self._seen.add(genome(x))
            batch.append(Candidate(self.space.decode(x), origin=origin))
        return batch

    def _learn(self, results: list[EvalResult]) -> None:
        """The batch's results, and refined records after them as extra infills: survival
        then competes them with the population like offspring."""
        pop = self._pop
        if len(results) > len(pop):
            X = np.array([self.space.encode(r.config) for r in results[len(pop):]], dtype=float)
            pop = Population.merge(pop, Population.new(X=X))
        F = minimization_matrix(results, self.objectives, failed_value=FAILED)
        G = constraint_matrix(results, self.constraints)
        Evaluator().eval(StaticProblem(self._problem, F=F, G=G), pop)
        self._algorithm.tell(infills=pop)

    def _tell(self, results: list[EvalResult]) -> None:
        for r in results:  # configs evaluated elsewhere are "seen" too
            self._seen.add(genome(self.space.encode(r.config)))
        super()._tell(results)


class _IndexProblem(Problem):
    """The space as pymoo sees it: integer vectors ``0 <= x_i < size_i``; never evaluated here."""

    def __init__(self, space: SearchSpace, n_obj: int, n_ieq_constr: int) -> None:
        super().__init__(n_var=len(space), n_obj=n_obj, n_ieq_constr=n_ieq_constr,
                         xl=np.zeros(len(space)), xu=space.sizes - 1.0, vtype=int)
        self.categorical = np.array([isinstance(d, Choice) for d in space.dims.values()])

    def _evaluate(self, x, out, *args, **kwargs):
        raise RuntimeError("hybridmoo evaluates candidates itself (ask/tell)")


class IndexMutation(Mutation):
    """Per variable with probability 1/n: redraw a categorical index; move an integer one by a
    step of at most a quarter of its range (at least 1)."""

    def _do(self, problem: _IndexProblem, X, *args, random_state=None, **kwargs):
        X = np.rint(X).astype(float)
        hi = problem.xu
        prob = self.get_prob_var(problem, size=len(X))
        for j in range(problem.n_var):
            hit = random_state.random(len(X)) < prob
            if not hit.any():
                continue
            if problem.categorical[j]:
                X[hit, j] = random_state.integers(0, hi[j] + 1, size=hit.sum())
            else:
                reach = max(1, int(hi[j] // 4))
                step = random_state.integers(1, reach + 1, size=hit.sum())
                step *= random_state.choice([-1, 1], size=hit.sum())
                X[hit, j] = np.clip(X[hit, j] + step, 0, hi[j])
        return X


class SeenElimination(DuplicateElimination):
    """Duplicates within the population, against ``other``, and against every config seen."""

    def __init__(self, seen: set[Genome]) -> None:
        super().__init__()
        self.seen = seen

    def _do(self, pop, other, is_duplicate):
        keys = [genome(x) for x in pop.get("X")]
        taken = set(self.seen) if other is None else {genome(x) for x in other.get("X")}
        for i, key in enumerate(keys):
            if key in taken:
                is_duplicate[i] = True
            elif other is None:
                taken.add(key)
        return is_duplicate


def _build(name: str, pop_size: int, n_offsprings: int | None, space: SearchSpace, n_obj: int,
           seen: set[Genome]) -> Any:
    common = dict(sampling=IntegerRandomSampling(), crossover=UniformCrossover(),
                  mutation=IndexMutation(), eliminate_duplicates=SeenElimination(seen),
                  n_offsprings=n_offsprings)
    pop_size = min(pop_size, space.size)
    if name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2
        return NSGA2(pop_size=pop_size, **common)
    if name == "nsga3":
        from pymoo.algorithms.moo.nsga3 import NSGA3
        return NSGA3(ref_dirs=_reference_directions(n_obj, pop_size), pop_size=pop_size,
                     **common)
    if name == "agemoea2":
        from pymoo.algorithms.moo.age2 import AGEMOEA2
        return AGEMOEA2(pop_size=pop_size, **common)
    from pymoo.algorithms.moo.sms import SMSEMOA
    return SMSEMOA(pop_size=pop_size, **common)


def _reference_directions(n_obj: int, pop_size: int) -> np.ndarray:
    """Das-Dennis directions: the most partitions whose count stays within ``pop_size``."""
    from math import comb

    from pymoo.util.ref_dirs import get_reference_directions
    partitions = 1
    while comb(partitions + 1 + n_obj - 1, n_obj - 1) <= pop_size:
        partitions += 1
    return get_reference_directions("das-dennis", n_obj, n_partitions=partitions)
