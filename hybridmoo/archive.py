"""The Pareto archive: every evaluated record, the non-dominated feasible set, hypervolume.

Normalisation (documented for users): each objective is turned into minimisation (``max``
objectives negated) and scaled as ``(f - ideal) / (nadir - ideal)``. ``ideal`` and ``nadir`` are
fixed when the caller gives them (``reference={"error": (best, worst), ...}``, in the objective's
own units), otherwise they are the ideal and nadir points of the current front (an axis whose
range is zero is given range 1). The reference point is 1.1 on every normalised axis, and the
hypervolume is pymoo's exact indicator on the normalised front. ``hypervolume_curve()`` uses one
normalisation for the whole run (the final one unless fixed), so its values are comparable
across evaluations and never decrease.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import EvalResult, Objective, minimization_matrix

REFERENCE_POINT = 1.1


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` Pareto-dominates ``b`` (both in minimisation form)."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``F`` (minimisation) that no other row dominates."""
    F = np.asarray(F, dtype=float)
    keep = np.ones(len(F), dtype=bool)
    for i in range(len(F)):
        if keep[i]:
            dominated_by_i = np.all(F[i] <= F, axis=1) & np.any(F[i] < F, axis=1)
            keep &= ~dominated_by_i
    return keep


def hypervolume(F: np.ndarray, ideal: np.ndarray, nadir: np.ndarray) -> float:
    """Hypervolume of minimisation points ``F`` normalised by ``ideal``/``nadir``, ref 1.1."""
    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return 0.0
    from pymoo.indicators.hv import HV  # lazy: keeps `import hybridmoo` light

    scale = np.where(nadir - ideal > 0, nadir - ideal, 1.0)
    Z = (F - ideal) / scale
    Z = Z[np.all(Z < REFERENCE_POINT, axis=1)]
    if len(Z) == 0:
        return 0.0
    return float(HV(ref_point=np.full(F.shape[1], REFERENCE_POINT))(Z))


class ParetoArchive:
    """Keeps the full history and its non-dominated feasible subset (the front)."""

    def __init__(self, objectives: Sequence[Objective],
                 reference: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.objectives = tuple(objectives)
        self.history: list[EvalResult] = []
        self._front_idx: list[int] = []
        self._F = np.empty((0, len(self.objectives)))
        self._fixed = self._fixed_bounds(reference) if reference else None

    def _fixed_bounds(self, reference: Mapping[str, tuple[float, float]]
                      ) -> tuple[np.ndarray, np.ndarray]:
        unknown = set(reference) - {o.name for o in self.objectives}
        if unknown:
            raise ConfigError(f"reference names unknown objective(s) {sorted(unknown)}")
        try:
            pairs = [reference[o.name] for o in self.objectives]
        except KeyError as e:
            raise ConfigError(f"reference misses objective {e.args[0]!r}") from None
        signs = np.array([o.sign for o in self.objectives])
        best = signs * np.array([p[0] for p in pairs], dtype=float)
        worst = signs * np.array([p[1] for p in pairs], dtype=float)
        return best, worst

    def __len__(self) -> int:
        return len(self.history)

    def prefix(self, n: int) -> ParetoArchive:
        """The archive as it was after its first ``n`` records (same normalisation)."""
        then = ParetoArchive(self.objectives)
        then._fixed = self._fixed
        for result in self.history[:n]:
            then.add(result)
        return then

    def add(self, result: EvalResult) -> bool:
        """Record a result; returns True when it joins the front."""
        self.history.append(result)
        f = minimization_matrix([result], self.objectives)[0]
        self._F = np.vstack([self._F, f])
        if not result.feasible:
            return False
        front_F = self._F[self._front_idx]
        if any(dominates(g, f) for g in front_F):
            return False
        self._front_idx = [i for i, g in zip(self._front_idx, front_F, strict=True)
                           if not dominates(f, g)] + [len(self.history) - 1]
        return True

    @property
    def front(self) -> list[EvalResult]:
        """Non-dominated feasible records, in evaluation order."""
        return [self.history[i] for i in sorted(self._front_idx)]

    def front_matrix(self) -> np.ndarray:
        """The front in minimisation form, one row per record of :attr:`front`."""
        return self._F[sorted(self._front_idx)]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The ``(ideal, nadir)`` used for normalisation (minimisation form)."""
        if self._fixed is not None:
            return self._fixed
        F = self.front_matrix()
        if len(F) == 0:
            m = len(self.objectives)
            return np.zeros(m), np.ones(m)
        return F.min(axis=0), F.max(axis=0)

    def hypervolume(self) -> float:
        """Normalised hypervolume of the current front (see the module docstring)."""
        ideal, nadir = self.bounds()
        return hypervolume(self.front_matrix(), ideal, nadir)

    def hypervolume_curve(self) -> list[float]:
        """Hypervolume after each evaluation, all under the final normalisation."""
        ideal, nadir = self.bounds()
        curve: list[float] = []
        front: list[np.ndarray] = []
        value = 0.0
        for result, f in zip(self.history, self._F, strict=True):
            if result.feasible and not any(dominates(g, f) for g in front):
                front = [g for g in front if not dominates(f, g)] + [f]
                value = hypervolume(np.array(front), ideal, nadir)
            curve.append(value)
        return curve
