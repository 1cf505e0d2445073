"""Refinement settings: one validated, frozen record (unknown keys are errors)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hybridmoo.errors import ConfigError
from hybridmoo.gradmoo import get_solver
from hybridmoo.loading import check_options, unknown_key


@dataclass(frozen=True)
class RefineSettings:
    """How survivors are refined (see :mod:`hybridmoo.refine.loop` for the phases).

    Pruning phase (:mod:`hybridmoo.refine.prune`), ``steps`` steps on ``batch_size`` training
    images in ``prune_rounds`` rounds: the weights follow the task loss with Adam at ``lr``
    (cosine-decayed over both phases), the LSQ log-step sizes with Adam at ``step_lr``; after
    each round units are removed along the ``solver``'s direction (with ``solver_options``; on
    unit-norm gradients when ``normalize_gradients``) until the hardened cost reaches the
    round's share of the preference's target, ``1 - max_prune * (latency + size share)`` of
    the start cost. Recovery phase, up to ``recovery_steps`` steps with the final masks (weights
    and steps only), the best of ``checks`` checkpoints by validation accuracy kept, stopped
    after ``patience`` checkpoints in a row without a better one (0: never).
    ``distill``: ``distill_weight`` x KL(teacher || student) at ``distill_temperature`` in the
    task loss; ``divisor``: hardened groups keep a multiple of it; ``max_loss_ratio``: a task
    loss above this times its start value and above chance level stops the survivor;
    ``calib_batches``: BatchNorm / activation-range batches; ``val_examples``: the validation
    examples decisions are made on (0: all of them).

    Front tuning (:mod:`hybridmoo.refine.front`, a final phase's first round): up to
    ``front_steps`` steps of the task loss on a copy of the supernet's shared weights, each on
    ``front_configs_per_step`` of the front's configs drawn at random, AdamW at ``lr`` with a
    cosine decay over the steps that fit the time left."""

    steps: int = 40
    recovery_steps: int = 200
    lr: float = 1e-3
    step_lr: float = 1e-2
    prune_rounds: int = 4
    solver: str = "linear"
    solver_options: Mapping[str, Any] = field(default_factory=dict)
    normalize_gradients: bool = True
    distill: bool = True
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    batch_size: int = 64
    max_prune: float = 0.3
    divisor: int = 8  # channel counts that are multiples of 8 keep CPU kernels fast
    max_loss_ratio: float = 10.0
    checks: int = 5
    patience: int = 2
    calib_batches: int = 4
    val_examples: int = 2000
    front_steps: int = 400
    front_configs_per_step: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "recovery_steps", "prune_rounds", "batch_size", "divisor",
                     "checks", "patience", "calib_batches", "val_examples", "front_steps",
                     "front_configs_per_step", "seed"):
            value = getattr(self, name)
            low = 0 if name in ("steps", "recovery_steps", "patience", "val_examples",
                                "seed") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"refine {name} must be an int >= {low}, got {value!r}")
        for name in ("lr", "step_lr", "distill_temperature", "max_loss_ratio"):
            if not _positive(getattr(self, name)):
                raise ConfigError(f"refine {name} must be a positive number, "
                                  f"got {getattr(self, name)!r}")
        for name in ("distill_weight", "max_prune"):
            value = getattr(self, name)
            if not _positive(value, allow_zero=True) or value > 1 or (
                    name != "distill_weight" and value >= 1):
                top = "1]" if name == "distill_weight" else "1)"
                raise ConfigError(f"refine {name} must lie in [0, {top}, got {value!r}")
        if self.max_loss_ratio <= 1:
            raise ConfigError(f"refine max_loss_ratio must exceed 1, got {self.max_loss_ratio}")
        for name in ("distill", "normalize_gradients"):
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

    def cost_target(self, preference: Any) -> float:
        """The hardened cost (a fraction of the start cost) the pruning phase aims at under
        ``preference`` over (task, latency, size): ``1 - max_prune * (latency + size)``."""
        p = [float(v) for v in preference]
        return 1.0 - self.max_prune * (p[1] + p[2]) / sum(p)

    @classmethod
    def from_dict(cls, data: Any, source: str = "refine") -> RefineSettings:
        """Settings from plain data (a YAML section); unknown keys are ConfigErrors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                raise unknown_key(source, key, names)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["solver_options"] = dict(self.solver_options)
        return out


def _positive(value: Any, allow_zero: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value >= 0 if allow_zero else value > 0
