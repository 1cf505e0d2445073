"""Predictor-assisted search: cheap surrogates decide which configs are worth a real evaluation.

The first ``n_init`` configs are random. Then each round:

1. fit one regressor per objective and per constraint (a Gaussian process on one-hot features
   by default, or a tree ensemble with ``model="forest"``) on the best ``max_train`` results,
   and a classifier of "the evaluation is wasted" (it failed, or measured exactly what an
   earlier config measured) once such a result exists;
2. collect candidates: the configs an inner NSGA-II visits on the optimistic predictions
   (mean - kappa * spread), every one-dimension move from the real front, and crossovers of
   real configs (an evolutionary step, pre-screened by the surrogates); drop seen ones and
   those predicted wasted;
3. pick the batch greedily by predicted hypervolume gain over the real front, "believing"
   each pick before the next; when nothing is predicted to gain, pick by a more optimistic
   bound (uncertain configs), then at random. Batches grow with the data (``batch_growth``).
"""

from __future__ import annotations

import warnings

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.problem import Problem
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
from sklearn.exceptions import ConvergenceWarning

from hybridmoo.archive import hypervolume, non_dominated_mask
from hybridmoo.errors import ConfigError
from hybridmoo.objectives import EvalResult, minimization_matrix
from hybridmoo.proposers.base import BatchProposer, Genome, genome, random_unseen
from hybridmoo.proposers.pymoo_engines import IndexMutation
from hybridmoo.space import Candidate, Choice, SearchSpace

RETUNE_GROWTH = 1.5  # GP hyperparameters are re-tuned when the data grew by this factor
EXPLORE_KAPPA = 3.0  # optimism of the second pass that fills a batch with uncertain configs
MAX_WASTE_PROBABILITY = 0.3  # configs predicted wasted more often than this are skipped
MAX_SHORTLIST = 200  # predicted-best unseen configs scored for hypervolume gain per round


class SurrogateProposer(BatchProposer):
    """Surrogate-assisted batches; the first ``n_init`` configs are drawn at random."""

    name = "surrogate"

    def __init__(self, space, objectives, constraints=(), seed=0, *, batch_size: int = 5,
                 batch_growth: float = 0.1, n_init: int = 10, model: str = "gp",
                 n_trees: int = 50, max_train: int = 300, inner_pop: int = 100,
                 inner_gens: int = 25, kappa: float = 1.0) -> None:
        super().__init__(space, objectives, constraints, seed)
        for key, value, low in (("batch_size", batch_size, 1), ("n_init", n_init, 2),
                                ("n_trees", n_trees, 1), ("max_train", max_train, 10),
                                ("inner_pop", inner_pop, 4), ("inner_gens", inner_gens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"surrogate option {key} must be an int >= {low}, got {value!r}")
        if not 0 <= batch_growth <= 1:
            raise ConfigError(f"surrogate option batch_growth must be in [0, 1]: {batch_growth}")
        self.batch_size, self.batch_growth, self.n_init = batch_size, batch_growth, n_init
        self.n_trees, self.max_train = n_trees, max_train
        self.inner_pop, self.inner_gens, self.kappa = inner_pop, inner_gens, float(kappa)
        if model not in ("forest", "gp"):
            raise ConfigError(f"surrogate option model must be 'forest' or 'gp', got {model!r}")
        self.model = model
        self._features = _Features(space)
        self._seen: set[Genome] = set()
        self._data: dict[str, EvalResult] = {}
        self._kernels: list = []  # tuned GP kernels, one per target
        self._tuned_at = 0  # how many points they were tuned on

    def _tell(self, results: list[EvalResult]) -> None:
        for r in results:  # every result is training data, wherever it came from
            self._data.setdefault(r.key, r)
            self._seen.add(genome(self.space.encode(r.config)))
        super()._tell(results)

    def _learn(self, results: list[EvalResult]) -> None:
        """Nothing to do per batch: the data was taken in ``_tell``."""

    def _next_batch(self) -> list[Candidate]:
        ok = [r for r in self._data.values() if r.ok]
        if len(ok) < max(2, min(self.n_init, self.space.size // 2)):
            n = self.n_init if not self._data else self.batch_size
            return self._random_unseen(n, origin="init")
        size = max(self.batch_size, int(self.batch_growth * len(self._data)))
        X, mean, spread = self._inner_search(_best(ok, self.objectives, self.max_train))
        picks = self._pick(mean - self.kappa * spread, ok, size)
        if len(picks) < size:  # nothing promising left: the most uncertain promise next
            rest = np.setdiff1d(np.arange(len(X)), picks)
            more = self._pick(mean[rest] - EXPLORE_KAPPA * spread[rest], ok, size - len(picks))
            picks += [int(rest[i]) for i in more]
        batch = [Candidate(self.space.decode(X[i]), origin="evo") for i in picks]
        self._seen.update(genome(X[i]) for i in picks)
        return batch + self._random_unseen(size - len(batch), origin="random")

    def _random_unseen(self, n: int, origin: str) -> list[Candidate]:
        out: list[Candidate] = []
        while len(out) < n and (x := random_unseen(self.space, self.rng, self._seen)) is not None:
            self._seen.add(x)
            out.append(Candidate(self.space.decode(x), origin=origin))
        return out

    def _inner_search(self, ok: list[EvalResult]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unseen index vectors visited by NSGA-II on the surrogates, with the predicted mean
        and spread of each objective."""
        X = np.array([self.space.encode(r.config) for r in ok])
        targets = [minimization_matrix(ok, self.objectives)[:, j]
                   for j in range(len(self.objectives))]
        targets += [np.array([r.constraints[c.name] for r in ok]) for c in self.constraints]
        with warnings.catch_warnings():  # GP kernel bounds hit on tiny data: expected, harmless
            warnings.simplefilter("ignore", ConvergenceWarning)
            retune = len(X) >= RETUNE_GROWTH * self._tuned_at
            models = [self._regressor(None if retune else self._kernels[i])
                      .fit(self._features(X), y) for i, y in enumerate(targets)]
        if self.model == "gp" and retune:
            self._kernels, self._tuned_at = [m.kernel_ for m in models], len(X)
        failure = self._failure_model()
        problem = _SurrogateProblem(self.space, self._features, models, len(self.objectives),
                                    failure, self.kappa)
        pop_size = max(4, min(self.inner_pop, self.space.size // 8))
        algorithm = NSGA2(pop_size=pop_size, sampling=IntegerRandomSampling(),
                          crossover=UniformCrossover(), mutation=IndexMutation(),
                          eliminate_duplicates=DefaultDuplicateElimination())
        minimize(problem, algorithm, ("n_gen", self.inner_gens),
                 seed=int(self.rng.integers(2**31)), verbose=False)
        front = [r for r in ok if r.feasible] or ok
        F = minimization_matrix(front, self.objectives)
        for r in np.array(front)[non_dominated_mask(F)]:  # local moves around the real front
            problem.predict(_neighbours(self.space.encode(r.config), self.space.sizes))
        problem.predict(self._crossovers(ok))
        visited, mean, spread = problem.visited()
        unseen = np.array([genome(x) not in self._seen for x in visited], dtype=bool)
        return visited[unseen], mean[unseen], spread[unseen]

    def _crossovers(self, ok: list[EvalResult], n: int = 400) -> np.ndarray:
        """Uniform crossovers of real configs picked by rank tournaments, then one mutation:
        what an evolutionary step from the real population would try, to be pre-screened."""
        X = np.array([self.space.encode(r.config) for r in ok])
        rank = _rank(minimization_matrix(ok, self.objectives))
        pairs = self.rng.integers(0, len(X), (n, 2, 2))
        parents = np.where(rank[pairs[:, :, 0]] <= rank[pairs[:, :, 1]],
                           pairs[:, :, 0], pairs[:, :, 1])
        mask = self.rng.random((n, len(self.space))) < 0.5
        children = np.where(mask, X[parents[:, 0]], X[parents[:, 1]])
        dim = self.rng.integers(0, len(self.space), n)
        children[np.arange(n), dim] = self.rng.integers(0, self.space.sizes[dim])
        return children

    def _pick(self, P: np.ndarray, ok: list[EvalResult], size: int) -> list[int]:
        """Up to ``size`` rows of predictions ``P``, greedily by hypervolume gain over the real
        feasible front, each pick believed before the next; none without a predicted gain."""
        if len(P) == 0:
            return []
        order = np.argsort(_rank(P), kind="stable")[:MAX_SHORTLIST]
        P = P[order]
        feasible = [r for r in ok if r.feasible]
        F = minimization_matrix(feasible, self.objectives) if feasible else P[:1]
        front = F[non_dominated_mask(F)]
        ideal, nadir = front.min(axis=0), front.max(axis=0)
        picks: list[int] = []
        base = hypervolume(front, ideal, nadir)
        for _ in range(min(size, len(P))):
            gains = np.array([-1.0 if i in picks else
                              hypervolume(np.vstack([front, P[i]]), ideal, nadir) - base
                              for i in range(len(P))])
            best = int(np.argmax(gains))
            if gains[best] <= 0:
                break
            picks.append(best)
            front = np.vstack([front, P[best]])
            base += gains[best]
        return [int(order[i]) for i in picks]

    def _regressor(self, kernel=None):
        """A fresh model; a GP given ``kernel`` keeps those hyperparameters (no re-tuning)."""
        seed = int(self.rng.integers(2**31))
        if self.model == "forest":
            return ExtraTreesRegressor(n_estimators=self.n_trees, random_state=seed)
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
        if kernel is not None:
            return GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None)
        kernel = ConstantKernel() * RBF(length_scale=1.0) + WhiteKernel(1e-2)
        return GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed)

    def _failure_model(self) -> ExtraTreesClassifier | None:
        """Classifier of "this config is wasted": its evaluation failed, or it measured exactly
        what an earlier config measured (NAS spaces hold many isomorphic twins)."""
        measured: set[tuple[float, ...]] = set()
        labels = []
        for r in self._data.values():
            values = tuple(r.values[o.name] for o in self.objectives) if r.ok else None
            labels.append(r.ok and values not in measured)
            measured.add(values)
        labels = np.array(labels)
        if labels.all() or not labels.any():
            return None
        X = np.array([self.space.encode(r.config) for r in self._data.values()])
        model = ExtraTreesClassifier(n_estimators=self.n_trees,
                                     random_state=int(self.rng.integers(2**31)))
        return model.fit(self._features(X), labels)


def _best(results: list[EvalResult], objectives, limit: int) -> list[EvalResult]:
    """At most ``limit`` results, the best non-domination ranks first (bounds surrogate cost)."""
    if len(results) <= limit:
        return results
    order = np.argsort(_rank(minimization_matrix(results, objectives)), kind="stable")
    return [results[i] for i in order[:limit]]


def _neighbours(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Every index vector that differs from ``x`` in exactly one dimension."""
    rows = []
    for j, size in enumerate(sizes):
        for v in range(int(size)):
            if v != x[j]:
                y = x.copy()
                y[j] = v
                rows.append(y)
    return np.array(rows).reshape(-1, len(x))


def _rank(P: np.ndarray) -> np.ndarray:
    """Non-domination rank of each row of predictions (0 = predicted front)."""
    rank = np.empty(len(P), dtype=int)
    for r, idx in enumerate(NonDominatedSorting().do(P)):
        rank[idx] = r
    return rank


class _Features:
    """Index vector -> model features: one-hot per categorical value, scaled integer position."""

    def __init__(self, space: SearchSpace) -> None:
        self.sizes = space.sizes
        self.categorical = [isinstance(d, Choice) for d in space.dims.values()]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.rint(np.atleast_2d(X)).astype(int)
        cols = []
        for j, (size, categorical) in enumerate(zip(self.sizes, self.categorical, strict=True)):
            if categorical and size > 2:
                cols.append(np.eye(size)[X[:, j]])
            else:
                cols.append((X[:, j] / max(size - 1, 1))[:, None])
        return np.hstack(cols)


class _SurrogateProblem(Problem):
    """Objectives = optimistic surrogate predictions; constraints = predicted values and the
    predicted failure probability. Remembers every point it predicted."""

    def __init__(self, space: SearchSpace, features: _Features, models: list, n_obj: int,
                 failure: ExtraTreesClassifier | None, kappa: float) -> None:
        n_constr = len(models) - n_obj + 1
        super().__init__(n_var=len(space), n_obj=n_obj, n_ieq_constr=n_constr,
                         xl=np.zeros(len(space)), xu=space.sizes - 1.0, vtype=int)
        self.categorical = np.array([isinstance(d, Choice) for d in space.dims.values()])
        self.features, self.models, self.n_obj_models = features, models, n_obj
        self.failure, self.kappa = failure, kappa
        self._seen: dict[Genome, tuple[np.ndarray, np.ndarray]] = {}

    def _evaluate(self, X, out, *args, **kwargs):
        out["F"], out["G"] = self.predict(X)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Optimistic objectives and constraints for index vectors ``X`` (and remember them)."""
        X = np.rint(X).astype(int)
        Z = self.features(X)
        Z32 = Z.astype(np.float32)  # the trees' own dtype; calling tree_ skips input checks
        optimistic, means, spreads = [], [], []
        for model in self.models:
            if isinstance(model, ExtraTreesRegressor):
                per_tree = np.stack([t.tree_.predict(Z32)[:, 0] for t in model.estimators_])
                mean, std = per_tree.mean(axis=0), per_tree.std(axis=0)
            else:
                mean, std = model.predict(Z, return_std=True)
            optimistic.append(mean - self.kappa * std)
            means.append(mean)
            spreads.append(std)
        F = np.column_stack(optimistic[: self.n_obj_models])
        M = np.column_stack(means[: self.n_obj_models])
        S = np.column_stack(spreads[: self.n_obj_models])
        fail = (self.failure.predict_proba(Z)[:, list(self.failure.classes_).index(False)]
                if self.failure is not None else np.zeros(len(X)))
        G = np.column_stack([*optimistic[self.n_obj_models:], fail - MAX_WASTE_PROBABILITY])
        for x, m, s, g in zip(X, M, S, G, strict=True):
            if np.all(g <= 0):
                self._seen.setdefault(tuple(x), (m, s))
        return F, G

    def visited(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every point predicted feasible: index vectors, predicted means, spreads."""
        if not self._seen:
            empty = np.empty((0, self.n_obj))
            return np.empty((0, self.n_var), dtype=int), empty, empty
        keys = list(self._seen)
        return (np.array(keys), np.array([self._seen[k][0] for k in keys]),
                np.array([self._seen[k][1] for k in keys]))
