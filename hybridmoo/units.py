"""Readable units for sizes, latencies and accuracies (the CLI's lines, the report's axes).

Sizes use decimal units: 1 KB = 1,000 bytes, 1 MB = 1,000,000 bytes (``hybridmoo pick
--max-size-mb`` counts the same MB).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from hybridmoo.objectives import Objective

SIZE_UNITS = (("B", 1.0), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9))
"""Size units, smallest first: (name, bytes)."""


def size_unit(n_bytes: float) -> tuple[str, float]:
    """The largest unit of :data:`SIZE_UNITS` in which ``n_bytes`` (rounded to 3 significant
    digits) is at least 1, as (name, bytes per unit): ``size_unit(12_300) == ("KB", 1e3)``."""
    for name, factor in reversed(SIZE_UNITS):
        if factor == 1.0 or float(f"{abs(n_bytes) / factor:.3g}") >= 1:
            return name, factor
    raise AssertionError("unreachable: the last unit is bytes")


def format_size(n_bytes: float) -> str:
    """``n_bytes`` with 3 significant digits in B, KB, MB or GB: ``"12.3 KB"``."""
    name, factor = size_unit(n_bytes)
    return f"{n_bytes / factor:.3g} {name}"


def format_ms(ms: float) -> str:
    """A latency in milliseconds with 3 significant digits: ``"0.421 ms"``."""
    return f"{ms:.3g} ms"


def format_percent(value: float) -> str:
    """A value already in percent, with 2 decimals: ``"91.23%"``."""
    return f"{value:.2f}%"


@dataclass(frozen=True)
class AxisUnits:
    """How a figure axis shows an objective: its label and the text of a tick at a value
    (the plotted values stay the objective's own; only the tick labels are scaled)."""

    label: str
    divisor: float = 1.0
    suffix: str = ""

    def tick(self, value: float) -> str:
        """The tick label at ``value`` (in the objective's unit): ``"12.3"``, ``"85%"``."""
        scaled = value / self.divisor
        if abs(scaled) < 1e-12:
            scaled = 0.0  # no "-0"
        return f"{scaled:.6g}{self.suffix}"


def axis_units(objective: Objective, values: Iterable[float]) -> AxisUnits:
    """The axis of ``objective`` over ``values``: bytes (unit ``"B"``) in KB or MB chosen
    from the largest value, milliseconds and percent as plain numbers (``%`` on each tick),
    any other unit as plain numbers with the unit in the label. The label ends with which
    direction is better."""
    better = "higher" if objective.direction == "max" else "lower"
    finite = [abs(float(v)) for v in values if math.isfinite(float(v))]
    name, unit = objective.name, objective.unit
    if unit == "B":
        unit, divisor = size_unit(max(finite, default=0.0))
        return AxisUnits(f"{name.removesuffix('_bytes')} [{unit}] ({better} is better)", divisor)
    if unit == "ms":
        return AxisUnits(f"{name.removesuffix('_ms')} [ms] ({better} is better)")
    if unit == "%":
        return AxisUnits(f"{name} [%] ({better} is better)", suffix="%")
    return AxisUnits(f"{name}{f' [{unit}]' if unit else ''} ({better} is better)")
