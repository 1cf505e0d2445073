"""The supernet's task loss as a differentiable function of a relaxed config: measured on
sub-networks, fitted by ridge regression on their one-hot encodings (one coefficient per
value of each dimension).

The fit is linear in one-hot features, so evaluated at the
softmax probabilities of a model's logits it is exactly the expected task loss of a config
drawn from them (each dimension independently): a gradient without sampling noise. The
gradient through the supernet itself (:mod:`.relaxed`) is the alternative: straight-through,
its sign agrees with the loss change of an actual switch on 7 of 26 moves on Fashion-MNIST
and a model trained on it gives one config for every preference; the soft mixture steers,
at a supernet forward and backward per preference (docs/benchmarks.md, issue 19).

Losses are measured as a recalibrated sub-network would see them: each sub-network runs on
the same training batches with BatchNorm batch statistics (the supernet's running statistics
are restored afterwards).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hybridmoo.paretoset.relaxed import frozen
from hybridmoo.space import SearchSpace


@torch.no_grad()
def measure_task_loss(supernet: Any, configs: Sequence[Mapping[str, Any]],
                      batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """Mean cross-entropy of each config on ``batches`` (training-mode BatchNorm)."""
    batches = list(batches)
    device = next(supernet.model.parameters()).device
    was_training = supernet.training
    supernet.train()
    out = []
    try:
        with frozen(supernet.model):
            for config in configs:
                out.append(float(np.mean([float(F.cross_entropy(
                    supernet(x.to(device), config), y.to(device))) for x, y in batches])))
    finally:
        supernet.train(was_training)
    return np.array(out)


class TaskLossModel:
    """Ridge regression of the task loss on one-hot features of ``space``'s configs."""

    def __init__(self, space: SearchSpace, *, alpha: float = 1.0) -> None:
        self.space = space
        self.alpha = float(alpha)
        self.coef: np.ndarray | None = None
        self.intercept = 0.0

    def _one_hot(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        X = np.array([self.space.encode(c) for c in configs])
        return np.concatenate([np.eye(size)[X[:, j]] for j, size in
                               enumerate(self.space.sizes)], axis=1)

    def fit(self, configs: Sequence[Mapping[str, Any]], losses: np.ndarray) -> TaskLossModel:
        """Fit on measured ``(config, loss)`` pairs."""
        from sklearn.linear_model import Ridge

        fit = Ridge(alpha=self.alpha).fit(self._one_hot(configs), losses)
        self.coef, self.intercept = fit.coef_.astype(np.float32), float(fit.intercept_)
        return self

    def predict(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Predicted losses of configs."""
        return self._one_hot(configs) @ self.coef + self.intercept

    def __call__(self, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The expected loss under the relaxed config ``weights`` (``(size,)`` or
        ``(batch, size)`` per dimension), differentiable."""
        if self.coef is None:
            raise RuntimeError("the task-loss model is not fitted")
        probs = torch.cat([weights[name] for name in self.space.dims], dim=-1)
        return probs @ torch.as_tensor(self.coef).to(probs) + self.intercept


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau of two score vectors."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)
