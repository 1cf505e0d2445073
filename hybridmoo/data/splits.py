"""What every source makes: :class:`ImageData` (train / val / test splits), and what the makers
share: the fixed held-out split (seed :data:`SPLIT_SEED`) and :func:`class_count`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset, TensorDataset

SPLIT_SEED = 0


@dataclass
class ImageData:
    """Train / val / test image datasets yielding ``(image, label)``; ``calib``: the training
    images under the evaluation transform, for BatchNorm / activation calibration (None: the
    training set itself, when it does not augment)."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_chans: int = 3
    calib: Dataset | None = None

    def calibration_set(self) -> Dataset:
        """The dataset calibration batches come from: ``calib``, else ``train``."""
        return self.calib if self.calib is not None else self.train


def _holdout(labels: Any, n: int, fraction: float) -> np.ndarray:
    """Indices of a fixed ``fraction`` (seed :data:`SPLIT_SEED`) of ``n`` examples: that share
    of each class when ``labels`` (n class indices) are given, else of all at random."""
    rng = np.random.default_rng(SPLIT_SEED)
    if labels is None:
        return rng.permutation(n)[:round(n * fraction)]
    labels = np.asarray(labels)
    return np.concatenate([
        rng.permutation(members)[:round(len(members) * fraction)]
        for members in (np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1))])


def class_count(dataset: Any) -> int | None:
    """The number of classes ``dataset`` declares (``classes``, ``class_to_idx``, a timm
    reader's ``class_to_idx``, the largest of ``targets`` or of a TensorDataset's labels, plus
    one), or None."""
    for names in (getattr(dataset, "classes", None), getattr(dataset, "class_to_idx", None),
                  getattr(getattr(dataset, "reader", None), "class_to_idx", None)):
        if isinstance(names, Sequence | Mapping) and len(names) > 0:
            return len(names)
    labels = getattr(dataset, "targets", None)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        labels = dataset.tensors[1]
    if labels is None or len(labels) == 0:
        return None
    try:
        return int(np.asarray(labels).max()) + 1
    except (TypeError, ValueError):
        return None
