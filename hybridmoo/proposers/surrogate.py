"""Predictor-assisted search: cheap surrogates decide which configs are worth a real evaluation.

The first ``n_init`` configs are random. Then each round:

1. fit one regressor per objective and per constraint (a Gaussian process on one-hot features
   by default, or a tree ensemble with ``model="forest"``) on the best ``max_train`` results,
   each objective log-warped so the fit resolves the best values (:class:`_LogWarp`), and a
   classifier of "the evaluation is wasted" (it failed, or measured exactly what an earlier
   config measured) once such a result exists;
2. collect candidates: the configs an inner NSGA-II visits on the optimistic predictions
   (mean - kappa * spread), every one-dimension move from the real front, and crossovers of
   real configs (an evolutionary step, pre-screened by the surrogates); drop seen ones and
   those predicted wasted;
3. pick the batch greedily by hypervolume gain over the real front, "believing" each pick
   before the next: with GPs, pick ``k`` is scored on the ``k``-th joint posterior sample of
   the predicted-best candidates (batch Thompson sampling), with trees on the optimistic
   bound; when nothing is predicted to gain, pick by a more optimistic bound (uncertain
   configs), then at random. Batches grow with the data (``batch_growth``).
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
WARP_SHIFT = 0.1  # objective warp log(y - min + WARP_SHIFT * (median - min)), see _LogWarp


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
        self._warps: list[_LogWarp] = []  # objective transforms of the last fit
        self._models: list = []  # objective models of the last fit

    def _tell(self, results: list[EvalResult]) -> None:
        for r in results:  # every result is training data, wherever it came from
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

    def _next_batch(self) -> list[Candidate]:
        ok = [r for r in self._data.values() if r.ok]
        if self._starting():
            n = self.n_init if not self._data else self.batch_size
            return self._random_unseen(n, origin="init")
        size = max(self.batch_size, int(self.batch_growth * len(self._data)))
        X, mean, spread, lineage = self._inner_search(_best(ok, self.objectives,
                                                            self.max_train))
        picks = self._pick(self._draws(X, mean, spread, size), ok, size)
        if len(picks) < size:  # nothing promising left: the most uncertain promise next
            rest = np.setdiff1d(np.arange(len(X)), picks)
            more = self._pick(self._bound(mean[rest], spread[rest], EXPLORE_KAPPA), ok,
                              size - len(picks))
            picks += [int(rest[i]) for i in more]
        batch = [Candidate(self.space.decode(X[i]), origin="evo", parents=lineage[i])
                 for i in picks]
        self._seen.update(genome(X[i]) for i in picks)
        return batch + self._random_unseen(size - len(batch), origin="random")

    def _random_unseen(self, n: int, origin: str) -> list[Candidate]:
        out: list[Candidate] = []
        while len(out) < n and (x := random_unseen(self.space, self.rng, self._seen)) is not None:
            self._seen.add(x)
            out.append(Candidate(self.space.decode(x), origin=origin))
        return out

    def _inner_search(self, ok: list[EvalResult]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, ...]]]:
        """Unseen index vectors visited by NSGA-II on the surrogates, with the predicted mean
        and spread of each objective, and the real records each was made from (a move from a
        front record, a crossover of two; none for the inner NSGA-II's own)."""
        X = np.array([self.space.encode(r.config) for r in ok])
        F = minimization_matrix(ok, self.objectives)
        self._warps = [_LogWarp(F[:, j]) for j in range(len(self.objectives))]
        targets = [warp(F[:, j]) for j, warp in enumerate(self._warps)]
        targets += [np.array([r.constraints[c.name] for r in ok]) for c in self.constraints]
        with warnings.catch_warnings():  # GP kernel bounds hit on tiny data: expected, harmless
            warnings.simplefilter("ignore", ConvergenceWarning)
            retune = len(X) >= RETUNE_GROWTH * self._tuned_at
            models = [self._regressor(None if retune else self._kernels[i])
                      .fit(self._features(X), y) for i, y in enumerate(targets)]
        self._models = models[: len(self.objectives)]
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
        lineage: dict[Genome, tuple[str, ...]] = {}
        for r in np.array(front)[non_dominated_mask(F)]:  # local moves around the real front
            moves = _neighbours(self.space.encode(r.config), self.space.sizes)
            problem.predict(moves)
            for x in moves:
                lineage.setdefault(genome(x), (r.key,))
        children, parents = self._crossovers(ok)
        problem.predict(children)
        for x, (a, b) in zip(children, parents, strict=True):
            lineage.setdefault(genome(x), (ok[a].key, ok[b].key) if a != b else (ok[a].key,))
        visited, mean, spread = problem.visited()
        unseen = np.array([genome(x) not in self._seen for x in visited], dtype=bool)
        return (visited[unseen], mean[unseen], spread[unseen],
                [lineage.get(genome(x), ()) for x in visited[unseen]])

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
        order = np.argsort(_rank(bound), kind="stable")[:MAX_SHORTLIST]
        Z = self._features(X[order])
        draws = np.full((len(X), size, len(self._models)), np.inf)
        for j, (model, warp) in enumerate(zip(self._models, self._warps, strict=True)):
            sample = model.sample_y(Z, size, random_state=int(self.rng.integers(2**31)))
            draws[order, :, j] = warp.inverse(sample.reshape(len(order), size))
        return draws

    def _crossovers(self, ok: list[EvalResult], n: int = 400) -> tuple[np.ndarray, np.ndarray]:
        """Uniform crossovers of real configs picked by rank tournaments, then one mutation:
        what an evolutionary step from the real population would try, to be pre-screened;
        with the two parents' rows in ``ok``."""
        X = np.array([self.space.encode(r.config) for r in ok])
        rank = _rank(minimization_matrix(ok, self.objectives))
        pairs = self.rng.integers(0, len(X), (n, 2, 2))
        parents = np.where(rank[pairs[:, :, 0]] <= rank[pairs[:, :, 1]],
                           pairs[:, :, 0], pairs[:, :, 1])
        mask = self.rng.random((n, len(self.space))) < 0.5
        children = np.where(mask, X[parents[:, 0]], X[parents[:, 1]])
        dim = self.rng.integers(0, len(self.space), n)
        children[np.arange(n), dim] = self.rng.integers(0, self.space.sizes[dim])
        return children, parents

    def _pick(self, P: np.ndarray, ok: list[EvalResult], size: int) -> list[int]:
        """Up to ``size`` rows of predictions ``P`` (``(n, n_obj)``, or ``(n, size, n_obj)``
        with the values of pick ``k`` in ``P[:, k]``), greedily by hypervolume gain over the
        real feasible front, each pick believed before the next; a draw without a gain is
        skipped."""
        if len(P) == 0:
            return []
        drawn = P.ndim == 3
        if not drawn:
            P = np.repeat(P[:, None, :], size, axis=1)
        order = np.argsort(_rank(P.min(axis=1)), kind="stable")[:MAX_SHORTLIST]
        P = P[order]
        feasible = [r for r in ok if r.feasible]
        F = minimization_matrix(feasible, self.objectives) if feasible else P[:1, 0]
        front = F[non_dominated_mask(F)]
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


class _LogWarp:
    """Monotone transform of a minimised target, ``log(y - min + shift)``: it spreads out the
    best values, where the front is decided, and squeezes the long tail of poor ones (bad
    architectures), so the model spends its fit on the difference between good and best."""

    def __init__(self, y: np.ndarray) -> None:
        low = float(np.min(y))
        span = float(np.median(y)) - low
        self.offset = low - WARP_SHIFT * (span if span > 0 else 1.0)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        return np.log(y - self.offset)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z) + self.offset


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
