"""ZDT1 on an integer grid: a cheap problem with a known front, where search beats chance.

Each of ``dims`` integer dimensions takes ``levels`` values. ``x0`` sets the first objective,
``f1 = x0 / (levels - 1)``; the others set ``g``, which is 1 exactly when each sits on its own
target level (spread inside the grid, not a corner an engine could find by sampling the
bounds) and grows with the distance from it; ``f2 = g (1 - sqrt(f1 / g))``. The true front is
``f2 = 1 - sqrt(f1)`` at the ``levels`` values of ``x0``. Random search hits ``g = 1`` once in
``levels ** (dims - 1)`` draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import Objective
from hybridmoo.problems import Problem
from hybridmoo.space import IntRange, SearchSpace

OBJECTIVES = (Objective("f1", "min"), Objective("f2", "min"))


@dataclass(frozen=True)
class ZdtGridEvaluate:
    """Picklable evaluate of :func:`zdt1_grid`."""

    dims: int
    levels: int

    def targets(self) -> list[int]:
        """The level each of ``x1..`` must take for ``g = 1``."""
        return [int(i * (self.levels - 1) / self.dims + 0.5) for i in range(1, self.dims)]

    def __call__(self, config: dict[str, Any]) -> dict[str, float]:
        top = self.levels - 1
        f1 = config["x0"] / top
        distance = [abs(config[f"x{i}"] - t) / top for i, t in enumerate(self.targets(), 1)]
        g = 1.0 + 9.0 * float(np.mean(distance))
        return {"f1": f1, "f2": g * (1.0 - math.sqrt(f1 / g))}


def zdt1_grid(*, dims: int = 6, levels: int = 8) -> Problem:
    """ZDT1 on ``dims`` integer dimensions of ``levels`` values each (see the module doc)."""
    for name, value, low in (("dims", dims, 2), ("levels", levels, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"zdt1-grid option {name} must be an int >= {low}, got {value!r}")
    space = SearchSpace({f"x{i}": IntRange(0, levels - 1) for i in range(dims)})
    return Problem(space, ZdtGridEvaluate(dims, levels), OBJECTIVES,
                   f"ZDT1 on a {levels}^{dims} integer grid")


def true_front(levels: int = 8) -> np.ndarray:
    """The exact front of :func:`zdt1_grid` (any ``dims``), rows ``(f1, f2)``."""
    f1 = np.arange(levels) / (levels - 1)
    return np.column_stack([f1, 1.0 - np.sqrt(f1)])
