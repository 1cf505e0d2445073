"""Refinement settings: one validated, frozen record (unknown keys are errors)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hybridmoo.errors import ConfigError
from hybridmoo.gradmoo import get_solver
from hybridmoo.loading import check_options, did_you_mean

OPEN_LOG_ALPHA = math.log(11.0)
"""A hard-concrete gate whose ``log_alpha`` exceeds this is exactly 1 at test time."""


@dataclass(frozen=True)
class RefineSettings:
    """How survivors are refined.

    ``steps`` Adam steps on ``batch_size`` training images; ``lr``: the learning rate of the
    weights and quantizer log-step sizes; ``gate_lr``: of the gates' ``log_alpha``;
    ``solver``: a :mod:`hybridmoo.gradmoo` name with its ``solver_options``, fed unit-norm
    gradients when ``normalize_gradients`` (see :mod:`hybridmoo.refine.combine`);
    ``distill``: add ``distill_weight`` x KL(teacher || student) at ``distill_temperature`` to
    the task loss; ``gate_init``: the gates' initial ``log_alpha`` (> log 11, so they start
    exactly open); ``sample_gates``: draw hard-concrete gates in training forwards (L0
    training, noisy over a few steps) instead of using the test-time gates; ``divisor``:
    hardened groups keep a multiple of it; ``max_loss_ratio``: a task loss above this times
    its first value and above chance level stops the survivor (as does any non-finite loss or
    gradient); ``task_budget``: while the running task loss exceeds this times its start
    value, steps follow the task gradient alone (see :mod:`hybridmoo.refine.loop`);
    ``calib_batches``: BatchNorm / activation-range batches after hardening (and the batches
    the start value of the task loss is measured on)."""

    steps: int = 40
    lr: float = 3e-4
    gate_lr: float = 0.3
    solver: str = "linear"  # the best refined-set hypervolume in scripts/bench_refine_solvers.py
    solver_options: Mapping[str, Any] = field(default_factory=dict)
    normalize_gradients: bool = True
    distill: bool = True
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    batch_size: int = 64
    gate_init: float = 3.0
    sample_gates: bool = False
    divisor: int = 8  # channel counts that are multiples of 8 keep CPU kernels fast
    max_loss_ratio: float = 10.0
    task_budget: float = 1.5
    calib_batches: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "divisor", "calib_batches", "seed"):
            value = getattr(self, name)
            low = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"refine {name} must be an int >= {low}, got {value!r}")
        for name in ("lr", "gate_lr", "distill_temperature", "max_loss_ratio"):
            if not _positive(getattr(self, name)):
                raise ConfigError(f"refine {name} must be a positive number, "
                                  f"got {getattr(self, name)!r}")
        if not _positive(self.distill_weight, allow_zero=True) or self.distill_weight > 1:
            raise ConfigError(f"refine distill_weight must lie in [0, 1], "
                              f"got {self.distill_weight!r}")
        if self.max_loss_ratio <= 1:
            raise ConfigError(f"refine max_loss_ratio must exceed 1, got {self.max_loss_ratio}")
        if not _positive(self.task_budget) or self.task_budget < 1:
            raise ConfigError(f"refine task_budget must be a number >= 1, "
                              f"got {self.task_budget!r}")
        if not _positive(self.gate_init) or self.gate_init <= OPEN_LOG_ALPHA:
            raise ConfigError(f"refine gate_init must exceed log(11) = {OPEN_LOG_ALPHA:.3f} "
                              f"(gates start open), got {self.gate_init!r}")
        for name in ("distill", "normalize_gradients", "sample_gates"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"refine {name} must be true or false, "
                                  f"got {getattr(self, name)!r}")
        if not isinstance(self.solver, str):
            raise ConfigError(f"refine solver must be a solver name, got {self.solver!r}")
        spec = get_solver(self.solver)
        if not isinstance(self.solver_options, Mapping):
            raise ConfigError(f"refine solver_options must be a mapping, "
                              f"got {self.solver_options!r}")
        # Pareto MTL's ``index`` is the survivor's own reference vector, set by the refiner.
        check_options(f"gradient solver {self.solver!r}", self.solver_options,
                      spec.options() - {"index"})
        object.__setattr__(self, "solver_options", dict(self.solver_options))

    @classmethod
    def from_dict(cls, data: Any, source: str = "refine") -> RefineSettings:
        """Settings from plain data (a YAML section); unknown keys are ConfigErrors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean(str(key), names)}"
                                  f"; valid keys: {', '.join(names)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["solver_options"] = dict(self.solver_options)
        return out


def _positive(value: Any, allow_zero: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value >= 0 if allow_zero else value > 0
