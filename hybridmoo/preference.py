"""Preferences for refining a front's survivors, aimed at the front's gaps.

:func:`gap_preference` aims a survivor at the hypervolume gap
next to it: objective ``k`` gets a share of the hypervolume that the move refinement can make
along ``k`` alone would add. Refinement moves objectives by a share of their value (pruning
removes a share of the cost, fine-tuning lifts accuracy by a share), so the move is relative:
``step_k`` of the point's own value (``STEP`` until refinements have shown what they achieve,
see :func:`hybridmoo.scheduling.expected_steps`). The largest of those gains says how much
refining the point can add.

The ``floor`` keeps every entry > 0 (EPO needs it). The search's objectives are then
mapped by name onto the refinement's three (task, latency, size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import Objective

FLOOR = 0.05
STEP = 0.03  # gap_preference's step: a share of the point's own value per objective
AXES = ("task", "latency", "size")
_KEYWORDS = {
    "task": ("acc", "err", "loss", "top1", "top5"),
    "latency": ("latency", "time", "macs", "flops"),
    "size": ("size", "bytes", "param", "memory"),
}


def gap_preference(F: np.ndarray, index: int, ideal: np.ndarray, nadir: np.ndarray,
                   step: float | Sequence[float] = STEP, floor: float = FLOOR
                   ) -> tuple[np.ndarray, float]:
    """Preference (sums to 1, every entry > 0) of row ``index`` of the front ``F`` (n x m,
    minimisation form) aimed at the gap next to it, and the largest gain: ``gain_k`` is the
    hypervolume (normalised by ``ideal`` / ``nadir``, as :func:`hybridmoo.archive.hypervolume`)
    that improving the row's objective ``k`` alone by ``step_k`` of its own value (of the
    range where the value is 0) adds; ``p_k ∝ gain_k / sum(gain) + floor`` (uniform when no
    move adds anything). ``step``: one share for every objective, or one per objective."""
    from hybridmoo.archive import hypervolume

    F = _checked_front(F, index)
    steps = np.broadcast_to(np.asarray(step, dtype=np.float64), (F.shape[1],))
    if not np.all(np.isfinite(steps)) or np.any(steps <= 0):
        raise ConfigError(f"step must be positive numbers, got {step!r}")
    ideal, nadir = np.asarray(ideal, dtype=np.float64), np.asarray(nadir, dtype=np.float64)
    span = np.where(nadir - ideal > 0, nadir - ideal, 1.0)
    scale = np.where(F[index] != 0, np.abs(F[index]), span)
    base = hypervolume(F, ideal, nadir)
    gains = np.zeros(F.shape[1])
    for k in range(F.shape[1]):
        moved = F.copy()
        moved[index, k] -= steps[k] * scale[k]
        gains[k] = max(hypervolume(moved, ideal, nadir) - base, 0.0)
    share = gains / gains.sum() if gains.sum() > 0 else np.full(len(gains), 1 / len(gains))
    p = share + floor
    return p / p.sum(), float(gains.max())


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
    """Preference over (task, latency, size) of front row ``index``, aimed at the gap next
    to it on ``F``'s own normalisation (:func:`gap_preference`), the search objectives'
    shares summed per axis they map to (:func:`axes_preference`). Sums to 1."""
    F = _checked_front(F, index)
    if len(objectives) != F.shape[1]:
        raise ConfigError(f"{len(objectives)} objectives for a front with {F.shape[1]} columns")
    return axes_preference(gap_preference(F, index, F.min(axis=0), F.max(axis=0))[0],
                           objectives)


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


def _checked_front(F: np.ndarray, index: int) -> np.ndarray:
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2 or F.shape[0] == 0 or F.shape[1] == 0:
        raise ConfigError(f"the front must be a non-empty n x m matrix, got shape {F.shape}")
    if not np.all(np.isfinite(F)):
        raise ConfigError("the front holds NaN or infinite values (failed evaluations?)")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) \
            or not 0 <= index < len(F):
        raise ConfigError(f"index must be a row of the {len(F)}-point front, got {index!r}")
    return F
