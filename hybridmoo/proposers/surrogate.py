"""Predictor-assisted search: cheap surrogates decide which configs are worth a real evaluation.

The first ``n_init`` configs are random. Then each round:

1. fit one regressor per objective and per constraint (a Gaussian process on one-hot features
   by default, or a tree ensemble with ``model="forest"``) on the best ``max_train`` results,
   each objective log-warped so the fit resolves the best values, and a classifier of "the
   evaluation is wasted" (it failed, or measured exactly what an earlier config measured) once
   such a result exists (:mod:`.surrogate_models`);
2. collect candidates: the configs an inner NSGA-II visits on the optimistic predictions
   (mean - kappa * spread), every one-dimension move from the real front, and crossovers of
   real configs (an evolutionary step, pre-screened by the surrogates); drop seen ones and
   those predicted wasted;
3. split the batch between two sources (:mod:`.acquisition`). *Model* picks are chosen
   greedily by hypervolume gain over the real front, each believed before the next: with
   GPs, pick ``k`` is scored on the ``k``-th joint posterior sample of the predicted-best
   candidates (batch Thompson sampling), with trees on the optimistic bound; when nothing is
   predicted to gain, by a more optimistic bound, then at random. *Local* picks are Pareto
   local search: one-dimension neighbours of the real front's members, in the order the
   surrogates rank them. A pick is credited when its result improved the front it was made
   against; the source with the higher success rate gets all but one pick of the next batch
   (the other keeps one, so its rate stays measured). Early on the
   model's global picks buy more; once the front is good, no model of a few hundred points
   ranks the rare better architectures near the top, its picks stop paying, and the batch
   goes to the front's neighbourhood (docs/benchmarks.md, issue 18). Batches grow with the
   data (``batch_growth``).

Told results are used in the order of their keys, so the order and grouping of tells do not
change what the engine proposes next.
"""

from __future__ import annotations

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize

from hybridmoo.archive import non_dominated_mask
from hybridmoo.errors import ConfigError
from hybridmoo.objectives import EvalResult, minimization_matrix
from hybridmoo.proposers.acquisition import (
    LOCAL,
    MAX_SHORTLIST,
    MODEL,
    SourceCredit,
    front_of,
    greedy_hypervolume_picks,
    neighbours,
)
from hybridmoo.proposers.base import BatchProposer, Genome, genome, random_unseen
from hybridmoo.proposers.pymoo_engines import IndexMutation
from hybridmoo.proposers.surrogate_models import (
    Features,
    LogWarp,
    SurrogateProblem,
    best_results,
    failure_classifier,
    fit_quietly,
    joint_samples,
    make_regressor,
    nondominated_rank,
)
from hybridmoo.space import Candidate

RETUNE_GROWTH = 1.5  # GP hyperparameters are re-tuned when the data grew by this factor
EXPLORE_KAPPA = 3.0  # optimism of the second pass that fills a batch with uncertain configs
LATE_PHASES = ("auto", "model")  # "model": never hand picks to local search (the old engine)


class SurrogateProposer(BatchProposer):
    """Surrogate-assisted batches; the first ``n_init`` configs are drawn at random.
    ``late_phase="model"`` keeps every pick with the model (the engine before issue 18, for
    comparison); the default ``"auto"`` lets measured credit move picks to local search."""

    name = "surrogate"

    def __init__(self, space, objectives, constraints=(), seed=0, *, batch_size: int = 5,
                 batch_growth: float = 0.1, n_init: int = 10, model: str = "gp",
                 n_trees: int = 50, max_train: int = 300, inner_pop: int = 100,
                 inner_gens: int = 25, kappa: float = 1.0, late_phase: str = "auto") -> None:
        super().__init__(space, objectives, constraints, seed)
        for key, value, low in (("batch_size", batch_size, 1), ("n_init", n_init, 2),
                                ("n_trees", n_trees, 1), ("max_train", max_train, 10),
                                ("inner_pop", inner_pop, 4), ("inner_gens", inner_gens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"surrogate option {key} must be an int >= {low}, got {value!r}")
        if not 0 <= batch_growth <= 1:
            raise ConfigError(f"surrogate option batch_growth must be in [0, 1]: {batch_growth}")
        if model not in ("forest", "gp"):
            raise ConfigError(f"surrogate option model must be 'forest' or 'gp', got {model!r}")
        if late_phase not in LATE_PHASES:
            raise ConfigError(f"surrogate option late_phase must be one of {LATE_PHASES}, "
                              f"got {late_phase!r}")
        self.batch_size, self.batch_growth, self.n_init = batch_size, batch_growth, n_init
        self.n_trees, self.max_train, self.model = n_trees, max_train, model
        self.inner_pop, self.inner_gens, self.kappa = inner_pop, inner_gens, float(kappa)
        self.late_phase = late_phase
        self._features = Features(space)
        self._seen: set[Genome] = set()
        self._data: dict[str, EvalResult] = {}
        self._kernels: list = []  # tuned GP kernels, one per target
        self._tuned_at = 0  # how many points they were tuned on
        self._warps: list[LogWarp] = []  # objective transforms of the last fit
        self._models: list = []  # objective models of the last fit
        self.credit = SourceCredit()

    def _tell(self, results: list[EvalResult]) -> None:
        for r in results:  # every result is training data, wherever it came from
            if r.key not in self._data:
                f = minimization_matrix([r], self.objectives)[0] if r.ok and r.feasible else None
                self.credit.settle(r.key, f)
            self._data.setdefault(r.key, r)
            self._seen.add(genome(self.space.encode(r.config)))
        super()._tell(results)

    def _learn(self, results: list[EvalResult]) -> None:
        """Nothing to do per batch: the data was taken in ``_tell``."""

    def _whole_batch(self) -> bool:
        """Only the random start waits for its batch; later batches are fitted on the results
        in so far (the configs still out are seen, so never asked again), so parallel workers
        do not wait for a batch's slowest evaluation. One worker sees no difference."""
        return self._starting()

    def _starting(self) -> bool:
        ok = sum(r.ok for r in self._data.values())
        return ok < max(2, min(self.n_init, self.space.size // 2))

    def _results(self) -> list[EvalResult]:
        """Every told result in key order (so tell order does not matter)."""
        return [self._data[k] for k in sorted(self._data)]

    def _next_batch(self) -> list[Candidate]:
        if self._starting():
            n = self.n_init if not self._data else self.batch_size
            return self._random_unseen(n, origin="init")
        ok = [r for r in self._results() if r.ok]
        size = max(self.batch_size, int(self.batch_growth * len(self._data)))
        X, mean, spread, lineage, is_move = self._inner_search(
            best_results(ok, self.objectives, self.max_train))
        front = self._real_front(ok)
        wanted = 0 if self.late_phase == "model" else self.credit.local_slots(size)
        local = self._local_picks(np.flatnonzero(is_move), mean, spread, front, wanted)
        others = np.setdiff1d(np.arange(len(X)), local)
        model = [int(others[i]) for i in
                 self._model_picks(X[others], mean[others], spread[others], front,
                                   size - len(local))]
        self._seen.update(genome(X[i]) for i in local + model)
        batch = [Candidate(self.space.decode(X[i]), origin="evo", parents=lineage[i])
                 for i in local + model]
        self.credit.propose(front, {c.key: LOCAL if i < len(local) else MODEL
                                    for i, c in enumerate(batch)})
        return batch + self._random_unseen(size - len(batch), origin="random")

    def _real_front(self, ok: list[EvalResult]) -> np.ndarray:
        feasible = [r for r in ok if r.feasible]
        return front_of(minimization_matrix(feasible, self.objectives)) if feasible else \
            np.empty((0, len(self.objectives)))

    def _local_picks(self, moves: np.ndarray, mean: np.ndarray, spread: np.ndarray,
                     front: np.ndarray, n: int) -> list[int]:
        """Up to ``n`` neighbours of the front (rows ``moves``): those predicted to gain
        hypervolume first, then the rest in order of predicted non-domination rank."""
        n = min(n, len(moves))
        bound = self._bound(mean[moves], spread[moves], self.kappa)
        picks = greedy_hypervolume_picks(bound, front, n)
        rest = np.setdiff1d(np.arange(len(moves)), picks)
        order = rest[np.argsort(nondominated_rank(bound[rest]), kind="stable")]
        return [int(moves[i]) for i in [*picks, *order[: n - len(picks)]]]

    def _model_picks(self, X: np.ndarray, mean: np.ndarray, spread: np.ndarray,
                     front: np.ndarray, n: int) -> list[int]:
        """Up to ``n`` rows by hypervolume gain on posterior draws; when nothing promising is
        left, the most uncertain promise next."""
        if n <= 0:
            return []
        picks = greedy_hypervolume_picks(self._draws(X, mean, spread, n), front, n)
        if len(picks) < n:
            rest = np.setdiff1d(np.arange(len(X)), picks)
            more = greedy_hypervolume_picks(
                self._bound(mean[rest], spread[rest], EXPLORE_KAPPA), front, n - len(picks))
            picks += [int(rest[i]) for i in more]
        return picks

    def _random_unseen(self, n: int, origin: str) -> list[Candidate]:
        out: list[Candidate] = []
        while len(out) < n and (x := random_unseen(self.space, self.rng, self._seen)) is not None:
            self._seen.add(x)
            out.append(Candidate(self.space.decode(x), origin=origin))
        return out

    def _inner_search(self, ok: list[EvalResult]) -> tuple[
            np.ndarray, np.ndarray, np.ndarray, list[tuple[str, ...]], np.ndarray]:
        """Unseen index vectors visited by NSGA-II on the surrogates, with the predicted mean
        and spread of each objective, the real records each was made from (a move from a
        front record, a crossover of two; none for the inner NSGA-II's own), and which are
        one-dimension moves from the real front."""
        X = np.array([self.space.encode(r.config) for r in ok])
        F = minimization_matrix(ok, self.objectives)
        self._warps = [LogWarp(F[:, j]) for j in range(len(self.objectives))]
        targets = [warp(F[:, j]) for j, warp in enumerate(self._warps)]
        targets += [np.array([r.constraints[c.name] for r in ok]) for c in self.constraints]
        retune = len(X) >= RETUNE_GROWTH * self._tuned_at
        models = [fit_quietly(self._regressor(None if retune else self._kernels[i]),
                              self._features(X), y) for i, y in enumerate(targets)]
        self._models = models[: len(self.objectives)]
        if self.model == "gp" and retune:
            self._kernels, self._tuned_at = [m.kernel_ for m in models], len(X)
        failure = failure_classifier(self._results(), self.objectives, self._features,
                                     self.space, int(self.rng.integers(2**31)), self.n_trees)
        problem = SurrogateProblem(self.space, self._features, models, len(self.objectives),
                                   failure, self.kappa)
        pop_size = max(4, min(self.inner_pop, self.space.size // 8))
        algorithm = NSGA2(pop_size=pop_size, sampling=IntegerRandomSampling(),
                          crossover=UniformCrossover(), mutation=IndexMutation(),
                          eliminate_duplicates=DefaultDuplicateElimination())
        minimize(problem, algorithm, ("n_gen", self.inner_gens),
                 seed=int(self.rng.integers(2**31)), verbose=False)
        front = [r for r in ok if r.feasible] or ok
        F = minimization_matrix(front, self.objectives)
        lineage: dict[Genome, tuple[str, ...]] = {}
        moves: set[Genome] = set()
        for r in np.array(front)[non_dominated_mask(F)]:  # local moves around the real front
            rows = neighbours(self.space.encode(r.config), self.space.sizes)
            problem.predict(rows)
            for x in rows:
                lineage.setdefault(genome(x), (r.key,))
                moves.add(genome(x))
        children, parents = self._crossovers(ok)
        problem.predict(children)
        for x, (a, b) in zip(children, parents, strict=True):
            lineage.setdefault(genome(x), (ok[a].key, ok[b].key) if a != b else (ok[a].key,))
        visited, mean, spread = problem.visited()
        unseen = np.array([genome(x) not in self._seen for x in visited], dtype=bool)
        visited = visited[unseen]
        return (visited, mean[unseen], spread[unseen],
                [lineage.get(genome(x), ()) for x in visited],
                np.array([genome(x) in moves for x in visited], dtype=bool))

    def _bound(self, mean: np.ndarray, spread: np.ndarray, kappa: float) -> np.ndarray:
        """Objectives at ``kappa`` spreads below the predicted mean, in their own units."""
        return np.column_stack([warp.inverse(mean[:, j] - kappa * spread[:, j])
                                for j, warp in enumerate(self._warps)])

    def _draws(self, X: np.ndarray, mean: np.ndarray, spread: np.ndarray, size: int
               ) -> np.ndarray:
        """``(len(X), size, n_obj)`` objective values to pick by, one draw per pick: joint
        samples of each GP's posterior on the predicted-best configs (batch Thompson sampling;
        the others get +inf), or the optimistic bound for every pick with trees."""
        bound = self._bound(mean, spread, self.kappa)
        if self.model != "gp" or len(X) == 0:
            return np.repeat(bound[:, None, :], size, axis=1)
        order = np.argsort(nondominated_rank(bound), kind="stable")[:MAX_SHORTLIST]
        Z = self._features(X[order])
        draws = np.full((len(X), size, len(self._models)), np.inf)
        for j, (model, warp) in enumerate(zip(self._models, self._warps, strict=True)):
            draws[order, :, j] = warp.inverse(joint_samples(model, Z, size, self.rng))
        return draws

    def _crossovers(self, ok: list[EvalResult], n: int = 400) -> tuple[np.ndarray, np.ndarray]:
        """Uniform crossovers of real configs picked by rank tournaments, then one mutation:
        what an evolutionary step from the real population would try, to be pre-screened;
        with the two parents' rows in ``ok``."""
        X = np.array([self.space.encode(r.config) for r in ok])
        rank = nondominated_rank(minimization_matrix(ok, self.objectives))
        pairs = self.rng.integers(0, len(X), (n, 2, 2))
        parents = np.where(rank[pairs[:, :, 0]] <= rank[pairs[:, :, 1]],
                           pairs[:, :, 0], pairs[:, :, 1])
        mask = self.rng.random((n, len(self.space))) < 0.5
        children = np.where(mask, X[parents[:, 0]], X[parents[:, 1]])
        dim = self.rng.integers(0, len(self.space), n)
        children[np.arange(n), dim] = self.rng.integers(0, self.space.sizes[dim])
        return children, parents

    def _regressor(self, kernel=None):
        """A fresh model; a GP given ``kernel`` keeps those hyperparameters (no re-tuning)."""
        return make_regressor(self.model, int(self.rng.integers(2**31)), self.n_trees, kernel)
