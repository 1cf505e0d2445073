"""Whether a refined network improves on its parent for its preference (decided on val).

The gain on each objective is relative: ``1 - err'/err`` for the validation error (each
floored at :data:`ERROR_FLOOR`, so one image of a near-perfect network is not an infinite
gain), ``1 - latency'/latency`` and ``1 - size'/size`` for the costs. The refined network
improves on its parent when the preference-weighted sum of the gains is positive; a network
that is worse on every objective never does. Anything else is rolled back: the parent stays,
the reason is recorded, and no network is returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

ERROR_FLOOR = 0.005


@dataclass(frozen=True)
class Verdict:
    """``improved``; the weighted ``score``; the per-objective ``gains`` (task, latency,
    size); and the reason when rolled back."""

    improved: bool
    score: float
    gains: tuple[float, float, float]
    reason: str | None = None


def gains(parent: Mapping[str, float], child: Mapping[str, float]) -> np.ndarray:
    """Relative gains (task, latency, size) of ``child`` over ``parent``; both map
    ``accuracy`` (a fraction), ``latency`` and ``bytes``."""
    err_p = max(1.0 - parent["accuracy"], ERROR_FLOOR)
    err_c = max(1.0 - child["accuracy"], ERROR_FLOOR)
    return np.array([1.0 - err_c / err_p, 1.0 - child["latency"] / parent["latency"],
                     1.0 - child["bytes"] / parent["bytes"]])


def judge(preference: np.ndarray, parent: Mapping[str, float],
          child: Mapping[str, float]) -> Verdict:
    """The verdict on ``child`` against ``parent`` under ``preference`` (task, latency,
    size; normalised here)."""
    g = gains(parent, child)
    p = np.asarray(preference, dtype=np.float64)
    score = float(p @ g / p.sum())
    as_tuple = (float(g[0]), float(g[1]), float(g[2]))
    if score > 0 and np.any(g > 0):
        return Verdict(True, score, as_tuple)
    reason = (f"rolled back: no improvement on the parent for preference "
              f"{np.round(p / p.sum(), 3).tolist()} on val (accuracy "
              f"{100 * parent['accuracy']:.2f} -> {100 * child['accuracy']:.2f} %, latency "
              f"{-100 * g[1]:+.1f} %, size {-100 * g[2]:+.1f} %; weighted gain {score:+.4f})")
    return Verdict(False, score, as_tuple, reason)
