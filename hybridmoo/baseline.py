"""The reference every front point is compared with: the model the user started from.

The baseline is the user's own model when the supernet was built from their checkpoint,
else the supernet's largest sub-network, both in FP32, measured by the search's own evaluator
(the same split, latency measurement and size count as every candidate) and, when the data has
a test split, on test as well. A pipeline measures it once, before the search, into
``baseline.json`` in its run directory; the CLI table, the report and ``front.json`` compare
every point with it (``-0.4 points, 5.1x smaller, 3.2x faster``).

It also fixes the pipeline's hypervolume (:func:`fixed_reference`): normalised by the box of
the baseline and the first ``FIRST_BATCH`` evaluations, kept in ``baseline.json`` once a
search has made them (or as many as it made), so a resumed, longer run never shows a lower
hypervolume.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridmoo.errors import RunDirError
from hybridmoo.files import write_atomic
from hybridmoo.objectives import EvalResult, Objective
from hybridmoo.preference import axis_of

FIRST_BATCH = 10  # evaluations that, with the baseline, fix the hypervolume's reference
USER_MODEL = "your model (FP32)"
LARGEST = "the supernet's largest sub-network (FP32)"


@dataclass(frozen=True)
class Baseline:
    """What the baseline is (``source``) and its measured values: ``values`` as the search
    measures candidates, ``test`` the objectives measured on the test split (may be empty)."""

    source: str
    values: dict[str, float]
    test: dict[str, float] = field(default_factory=dict)
    reference: dict[str, tuple[float, float]] | None = None  # fixed by the first search

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "values": dict(self.values), "test": dict(self.test),
                "reference": None if self.reference is None
                else {k: list(v) for k, v in self.reference.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Baseline:
        reference = data.get("reference")
        return cls(str(data["source"]), {k: float(v) for k, v in data["values"].items()},
                   {k: float(v) for k, v in data.get("test", {}).items()},
                   None if reference is None
                   else {k: (float(v[0]), float(v[1])) for k, v in reference.items()})


def save_baseline(path: Path, baseline: Baseline) -> None:
    """Write ``baseline`` to ``path`` atomically."""
    write_atomic(path, json.dumps(baseline.to_json(), indent=1, sort_keys=True) + "\n")


def load_baseline(path: Path) -> Baseline | None:
    """The baseline saved at ``path``; None when there is none."""
    try:
        return Baseline.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RunDirError(f"{path}: not a baseline file ({exc}); delete it to measure the "
                          "baseline again") from None


def compare(values: Mapping[str, float], baseline: Mapping[str, float],
            objectives: Sequence[Objective]) -> dict[str, float]:
    """Per objective, a point against the baseline: task objectives as the difference
    (``values - baseline``, in the objective's unit: percentage points for accuracy), cost
    objectives as the factor ``baseline / values`` (``5.1``: 5.1 times smaller or faster)."""
    out = {}
    for o in objectives:
        if o.name not in values or o.name not in baseline:
            continue
        mine, base = float(values[o.name]), float(baseline[o.name])
        if axis_of(o) in ("latency", "size") and o.direction == "min":
            out[o.name] = base / mine if mine > 0 else math.inf
        else:
            out[o.name] = mine - base
    return out


def describe(comparison: Mapping[str, float], objectives: Sequence[Objective]) -> str:
    """``comparison`` (:func:`compare`) in words: ``-0.4 points, 5.1x smaller, 3.2x faster``."""
    words = []
    for o in objectives:
        if o.name not in comparison:
            continue
        value, axis = comparison[o.name], axis_of(o)
        if axis in ("latency", "size") and o.direction == "min":
            words.append(f"{value:.1f}x {'faster' if axis == 'latency' else 'smaller'}")
        elif o.name == "accuracy":
            words.append(f"{value:+.1f} points")
        else:
            words.append(f"{o.name} {value:+.3g}")
    return ", ".join(words)


def fixed_reference(baseline: Mapping[str, float] | None, history: Sequence[EvalResult],
                    objectives: Sequence[Objective], first: int = FIRST_BATCH
                    ) -> dict[str, tuple[float, float]] | None:
    """``{objective: (best, worst)}`` over the baseline and the first ``first`` successful
    evaluations (refined records do not count): a hypervolume normalisation that extending
    the run does not change (:class:`hybridmoo.archive.ParetoArchive`'s ``reference``).
    None when there is nothing to fix it with yet."""
    rows = [dict(r.values) for r in history if r.ok and r.candidate.origin != "refine"][:first]
    if baseline is not None:
        rows.append(dict(baseline))
    rows = [r for r in rows if all(o.name in r for o in objectives)]
    if len(rows) < 2:
        return None
    out = {}
    for o in objectives:
        signed = [o.sign * r[o.name] for r in rows]
        out[o.name] = (o.sign * min(signed), o.sign * max(signed))
    return out


def reference_text(baseline: Baseline | None, first: int = FIRST_BATCH) -> str:
    """What :func:`fixed_reference` was fixed by, for the output."""
    return (f"fixed reference: the baseline and the first {first} evaluations" if baseline
            else f"fixed reference: the first {first} evaluations")


def fixed_hypervolume(baseline: Baseline | None, history: Sequence[EvalResult],
                      objectives: Sequence[Objective]) -> tuple[float, str]:
    """The front's hypervolume under :func:`fixed_reference` and what fixed it (the front's own
    normalisation, said so, while there is too little to fix it with)."""
    from hybridmoo.archive import ParetoArchive

    reference = (baseline.reference if baseline is not None and baseline.reference else
                 fixed_reference(baseline.values if baseline else None, history, objectives))
    archive = ParetoArchive(objectives, reference)
    for r in history:
        archive.add(r)
    text = (reference_text(baseline) if reference is not None
            else "normalised to the front's own range")
    return archive.hypervolume(), text
