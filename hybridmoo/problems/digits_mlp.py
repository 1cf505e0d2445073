"""The built-in demo on real data: a scikit-learn MLP on the bundled digits images.

scikit-learn's ``load_digits`` (1,797 8x8 grey images, 10 classes) is split once into a fixed,
stratified train/test split (seed 0, 30 % test). The search picks the MLP's width, depth,
activation, L2 penalty and iteration budget; each evaluation trains it (``random_state=0``, so
the same config always gives the same numbers) and reports the test error and the number of
weights and biases. One evaluation takes under a second on one core (float32 training).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

from hybridmoo.objectives import Objective
from hybridmoo.problems import Problem
from hybridmoo.space import Choice, IntRange, SearchSpace

TEST_SIZE = 0.3
SPLIT_SEED = 0
INTERRUPTED = "Training interrupted by user"  # the warning MLPClassifier.fit gives on Ctrl-C

SPACE = SearchSpace({
    "hidden": Choice([16, 32, 64, 128]),
    "layers": IntRange(1, 3),
    "activation": Choice(["relu", "tanh"]),
    "alpha": Choice([1e-5, 1e-4, 1e-3, 1e-2]),
    "max_iter": Choice([50, 100, 200]),
})
OBJECTIVES = (Objective("error", "min", ""), Objective("params", "min", "count"))


@functools.lru_cache(maxsize=1)
def load_split() -> tuple[Any, Any, Any, Any]:
    """``(X_train, X_test, y_train, y_test)``, pixels scaled to [0, 1] as float32 (the MLP then
    trains in float32, about 1.6x faster than float64); the same every call."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return tuple(train_test_split((X / 16.0).astype(np.float32), y, test_size=TEST_SIZE, stratify=y,
                                  random_state=SPLIT_SEED))


@dataclass(frozen=True)
class DigitsMLPEvaluate:
    """Picklable evaluate: trains the configured MLP and measures it on the held-out split."""

    def __call__(self, config: dict[str, Any]) -> dict[str, float]:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

        X_train, X_test, y_train, y_test = load_split()
        model = MLPClassifier(hidden_layer_sizes=(int(config["hidden"]),) * int(config["layers"]),
                              activation=config["activation"], alpha=float(config["alpha"]),
                              max_iter=int(config["max_iter"]), random_state=0)
        # one BLAS thread: these matrices are small, and a second busy process makes
        # multi-threaded OpenBLAS 10x slower (measured 1 s -> 13 s on 2 cores)
        with threadpool_limits(limits=1):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.filterwarnings("always", message=INTERRUPTED)
                model.fit(X_train, y_train)
            if any(INTERRUPTED in str(w.message) for w in caught):
                # scikit-learn swallows Ctrl-C inside fit and keeps the half-trained model: pass
                # the interrupt on instead of recording a wrong result (the run stays resumable)
                raise KeyboardInterrupt
            accuracy = float(model.score(X_test, y_test))
        params = sum(w.size for w in model.coefs_) + sum(b.size for b in model.intercepts_)
        return {"error": 1.0 - accuracy, "params": float(params), "accuracy": accuracy,
                "epochs": int(model.n_iter_)}


def digits_mlp() -> Problem:
    """The digits MLP demo: minimise test error and the number of parameters."""
    return Problem(SPACE, DigitsMLPEvaluate(), OBJECTIVES,
                   "scikit-learn MLP on load_digits (70/30 stratified split, seed 0)")
