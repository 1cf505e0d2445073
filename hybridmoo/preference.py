"""Preferences from positions on a front, so refined survivors spread along it.

A survivor's preference says which objectives it is good at: with the front normalised per
objective to ``z = (f - ideal) / (nadir - ideal)`` in [0, 1] (minimisation form, 0 = best on
that axis), objective ``i`` gets ``p_i ∝ 1 - z_i + floor``. The most accurate point of a front
prefers accuracy, the fastest prefers latency, a knee point weighs them alike, and the
``floor`` keeps every entry > 0 (EPO needs it). The search's objectives are then mapped by
name onto the refinement's three (task, latency, size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import Objective

FLOOR = 0.05
AXES = ("task", "latency", "size")
_KEYWORDS = {
    "task": ("acc", "err", "loss", "top1", "top5"),
    "latency": ("latency", "time", "macs", "flops"),
    "size": ("size", "bytes", "param", "memory"),
}


def preference_from_front(F: np.ndarray, index: int, floor: float = FLOOR) -> np.ndarray:
    """Preference (sums to 1, every entry > 0) of row ``index`` of the front ``F`` (n x m,
    minimisation form): ``p_i ∝ 1 - z_i + floor`` with ``z`` the row normalised by the
    front's ideal and nadir points (an axis where every point is equal counts as z = 0)."""
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2 or F.shape[0] == 0 or F.shape[1] == 0:
        raise ConfigError(f"the front must be a non-empty n x m matrix, got shape {F.shape}")
    if not np.all(np.isfinite(F)):
        raise ConfigError("the front holds NaN or infinite values (failed evaluations?)")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) \
            or not 0 <= index < len(F):
        raise ConfigError(f"index must be a row of the {len(F)}-point front, got {index!r}")
    if not (isinstance(floor, int | float) and floor > 0):
        raise ConfigError(f"floor must be a positive number, got {floor!r}")
    ideal, nadir = F.min(axis=0), F.max(axis=0)
    span = nadir - ideal
    z = np.where(span > 0, (F[index] - ideal) / np.where(span > 0, span, 1.0), 0.0)
    p = 1.0 - z + floor
    return p / p.sum()


def axis_of(objective: Objective) -> str | None:
    """Which refinement objective (task, latency, size) a search objective stands for, by its
    name (accuracy / error / loss; latency / time / macs / flops; size / bytes / params), or
    None."""
    name = objective.name.lower()
    for axis, words in _KEYWORDS.items():
        if any(w in name for w in words):
            return axis
    return None


def refinement_preference(F: np.ndarray, index: int,
                          objectives: Sequence[Objective]) -> np.ndarray:
    """Preference over (task, latency, size) of front row ``index``: the search objectives'
    preferences summed per axis they map to; an axis no objective maps to gets the smallest
    preference of the row (neither sought nor ignored). Sums to 1."""
    if len(objectives) != np.asarray(F).shape[-1]:
        raise ConfigError(f"{len(objectives)} objectives for a front with "
                          f"{np.asarray(F).shape[-1]} columns")
    return axes_preference(preference_from_front(F, index), objectives)


def axes_preference(p: Sequence[float], objectives: Sequence[Objective]) -> np.ndarray:
    """A preference over the search ``objectives`` as one over (task, latency, size): summed
    per axis the objectives map to; an axis none maps to gets the smallest entry of ``p``.
    Sums to 1."""
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros(len(AXES))
    mapped = np.zeros(len(AXES), dtype=bool)
    for share, objective in zip(p, objectives, strict=True):
        axis = axis_of(objective)
        if axis is not None:
            out[AXES.index(axis)] += share
            mapped[AXES.index(axis)] = True
    if not mapped.any():
        raise ConfigError("no search objective maps to task, latency or size: name them "
                          "accuracy/error/loss, latency/macs/flops or size/bytes/params")
    out[~mapped] = p.min()
    return out / out.sum()
