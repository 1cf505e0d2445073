"""The surrogate engine's models: objective warps, features, fits, and the problem its inner
NSGA-II searches (optimistic predictions, predicted waste as a constraint)."""

from __future__ import annotations

import warnings

import numpy as np
from pymoo.core.problem import Problem
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
from sklearn.exceptions import ConvergenceWarning

from hybridmoo.objectives import EvalResult, minimization_matrix
from hybridmoo.proposers.base import Genome
from hybridmoo.space import Choice, SearchSpace

MAX_WASTE_PROBABILITY = 0.3  # configs predicted wasted more often than this are skipped
WARP_SHIFT = 0.1  # objective warp log(y - min + WARP_SHIFT * (median - min)), see LogWarp


def make_regressor(model: str, seed: int, n_trees: int, kernel=None):
    """A fresh ``"gp"`` or ``"forest"`` regressor; a GP given ``kernel`` keeps those
    hyperparameters (no re-tuning)."""
    if model == "forest":
        return ExtraTreesRegressor(n_estimators=n_trees, random_state=seed)
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    if kernel is not None:
        return GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None)
    kernel = ConstantKernel() * RBF(length_scale=1.0) + WhiteKernel(1e-2)
    return GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed)


def fit_quietly(regressor, Z: np.ndarray, y: np.ndarray):
    """``regressor.fit(Z, y)``; GP kernel bounds hit on tiny data are expected and harmless."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return regressor.fit(Z, y)


def joint_samples(gp, Z: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(len(Z), n)`` joint draws of a fitted GP's posterior at ``Z`` (what ``sample_y``
    draws, through a Cholesky factor instead of an SVD: several times cheaper)."""
    mean, cov = gp.predict(Z, return_cov=True)
    jitter = 1e-10 * max(float(np.mean(np.diag(cov))), 1e-12)
    for _ in range(6):  # a posterior covariance can be singular to rounding: add jitter
        try:
            L = np.linalg.cholesky(cov + jitter * np.eye(len(Z)))
            break
        except np.linalg.LinAlgError:
            jitter *= 100
    else:
        L = np.diag(np.sqrt(np.clip(np.diag(cov), 0, None)))
    return mean[:, None] + L @ rng.standard_normal((len(Z), n))


def failure_classifier(results: list[EvalResult], objectives, features: Features,
                       space: SearchSpace, seed: int, n_trees: int
                       ) -> ExtraTreesClassifier | None:
    """Classifier of "this config is wasted": its evaluation failed, or it measured exactly
    what an earlier config measured (NAS spaces hold many isomorphic twins). None until both
    kinds of result exist."""
    measured: set[tuple[float, ...] | None] = set()
    labels = []
    for r in results:
        values = tuple(r.values[o.name] for o in objectives) if r.ok else None
        labels.append(r.ok and values not in measured)
        measured.add(values)
    labels = np.array(labels)
    if labels.all() or not labels.any():
        return None
    X = np.array([space.encode(r.config) for r in results])
    model = ExtraTreesClassifier(n_estimators=n_trees, random_state=seed)
    return model.fit(features(X), labels)


def best_results(results: list[EvalResult], objectives, limit: int) -> list[EvalResult]:
    """At most ``limit`` results, the best non-domination ranks first (bounds surrogate cost)."""
    if len(results) <= limit:
        return results
    order = np.argsort(nondominated_rank(minimization_matrix(results, objectives)), kind="stable")
    return [results[i] for i in order[:limit]]


def nondominated_rank(P: np.ndarray) -> np.ndarray:
    """Non-domination rank of each row of predictions (0 = predicted front)."""
    rank = np.empty(len(P), dtype=int)
    for r, idx in enumerate(NonDominatedSorting().do(P)):
        rank[idx] = r
    return rank


class LogWarp:
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


class Features:
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


class SurrogateProblem(Problem):
    """Objectives = optimistic surrogate predictions; constraints = predicted values and the
    predicted failure probability. Remembers every point it predicted."""

    def __init__(self, space: SearchSpace, features: Features, models: list, n_obj: int,
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
