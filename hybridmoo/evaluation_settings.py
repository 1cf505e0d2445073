"""How a pipeline measures sub-networks: the ``evaluation:`` block as one typed record.

:class:`EvaluationSettings` holds every :class:`~hybridmoo.evaluate.SubnetEvaluator` option a
config may set; :meth:`hybridmoo.evaluate.SubnetEvaluator.from_settings` builds the evaluator
from it by name. It imports no torch, so configs are checked without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from hybridmoo.errors import ConfigError

SPLITS = ("train", "val", "test")
RUNTIMES = ("auto", "torch", "onnxruntime")


@dataclass(frozen=True)
class EvaluationSettings:
    """``device`` (None: a pipeline's ``device``, cpu for an evaluator of its own);
    ``batch_size`` / ``bn_batches``: BatchNorm recalibration batches (None:
    the training's ``batch_size`` / ``calib_batches``); ``eval_batch_size``: accuracy batches
    on ``split``; latency of ``latency_batch`` images, median of ``repeats`` runs after
    ``warmup``, with ``runtime`` on ``threads`` threads; ``latency_model``: a `hybridmoo
    profile` file whose prediction replaces the measurement."""

    device: str | None = None
    batch_size: int | None = None
    eval_batch_size: int = 256
    latency_batch: int = 1
    repeats: int = 20
    warmup: int = 3
    bn_batches: int | None = None
    split: str = "val"
    runtime: str = "auto"
    threads: int = 1
    latency_model: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            if f.type.startswith("int"):
                low = 0 if f.name == "warmup" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ConfigError(f"evaluation.{f.name} must be an int >= {low}, "
                                      f"got {value!r}")
            elif not isinstance(value, str) or not value:
                raise ConfigError(f"evaluation.{f.name} must be a non-empty string, "
                                  f"got {value!r}")
        for name, allowed in (("split", SPLITS), ("runtime", RUNTIMES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"evaluation.{name} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> EvaluationSettings:
        """The record from a config mapping; unknown keys are ConfigErrors."""
        data = dict(data or {})
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                from hybridmoo.loading import unknown_key

                raise unknown_key("evaluation", key, names)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The settings that differ from the defaults (what a run directory records)."""
        defaults = cls_defaults()
        return {k: v for k, v in asdict(self).items() if v != defaults[k]}


def cls_defaults() -> dict[str, Any]:
    """Every field's default."""
    return {f.name: f.default for f in fields(EvaluationSettings)}
