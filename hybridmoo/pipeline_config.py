"""Supernet pipeline configs: a run config whose ``supernet:`` block replaces ``space`` and
``evaluate`` (``hybridmoo search --config pipeline.yaml``)::

    supernet:                   # a supernet training config (see hybridmoo/supernet/train_config)
      model: test_resnet
      steps: 300
    device: cpu                 # where training, evaluation (latency too) and refinement run:
                                #   cpu, cuda, cuda:N, mps; checked before anything is written
                                #   (the older evaluation.device is read as this key)
    evaluation:                 # how sub-networks are measured (hybridmoo.evaluate)
      batch_size: 64            # BatchNorm recalibration batches (default: the training's)
      eval_batch_size: 256      # held-out accuracy batches
      latency_batch: 1          # batch size of the latency measurement
      repeats: 20               # timed runs (median) after warmup runs
      warmup: 3
      bn_batches: 4             # BatchNorm recalibration batches before an evaluation
      split: val                # the split accuracy is measured on (search decisions)
      runtime: auto             # latency runtime: auto, torch or onnxruntime
      threads: 1                # torch / onnxruntime threads of a measurement
      latency_model: null       # a `hybridmoo profile` file: predicted instead of measured latency
    objectives: [accuracy, latency_ms, size_bytes]   # optional: pick among these
    algorithm: surrogate
    max_evals: 60
    max_seconds: null           # optional wall-clock budget of the search (seconds)
    seed: 0
    refine:                     # optional: gradient refinement rounds (hybridmoo.refine)
      every: 20                 # evolutionary evaluations between rounds (and one at the end);
                                #   null: no rounds during evolution
      survivors: 4              # front points refined per round
      final_share: 0            # with max_seconds: share of it kept for rounds on the final
                                #   front (they repeat until the time is up)
      front: true               # the final phase opens with front tuning: the supernet's
                                #   weights fine-tuned on the whole front (front_steps)
      steps: 40                 # and any other RefineSettings key
      solver: linear
    export: true                # export the final front (run_dir/export/)
    report: true                # write run_dir/report/report.html
    run_dir: runs/pipeline      # required; relative to the YAML file
    backend: local
    workers: 1
    ray: {address: auto, num_gpus: 0.25}   # RayBackend options (backend: ray), as in run configs

Unknown keys and wrong types are :class:`ConfigError`\\ s naming the file and the key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hybridmoo.config import ConfigReader
from hybridmoo.errors import ConfigError
from hybridmoo.evaluation_settings import EvaluationSettings
from hybridmoo.loading import did_you_mean

PIPELINE_KEYS = ("supernet", "device", "evaluation", "objectives", "algorithm", "algorithm_options",
                 "max_evals", "max_seconds", "seed", "refine", "export", "report", "run_dir",
                 "backend", "workers", "ray")
SCHEDULE_KEYS = ("every", "survivors", "final_share", "front")
OBJECTIVE_NAMES = ("accuracy", "latency_ms", "size_bytes")

log = logging.getLogger("hybridmoo")


@dataclass(frozen=True)
class PipelineConfig:
    """A validated supernet pipeline run (see the module docstring)."""

    train: Any  # hybridmoo.supernet.TrainConfig (imported lazily: it needs no torch, but keeps
    #             this module's imports as light as hybridmoo.config's)
    run_dir: Path
    device: str = "cpu"  # training, evaluation and refinement (evaluation.device: None or equal)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    objectives: tuple[str, ...] = OBJECTIVE_NAMES
    algorithm: str | None = None
    algorithm_options: dict[str, Any] = field(default_factory=dict)
    max_evals: int = 60
    max_seconds: float | None = None
    seed: int = 0
    refine: dict[str, Any] | None = None  # SCHEDULE_KEYS + RefineSettings keys
    export: bool = True
    report: bool = True
    backend: str = "local"
    workers: int = 1
    ray: dict[str, Any] = field(default_factory=dict)  # RayBackend options (backend: ray)
    source: str = "config"

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be a non-empty string (cpu, cuda, cuda:N, mps), got "
                              f"{self.device!r}")
        if self.evaluation.device not in (None, self.device):
            raise ConfigError(f"evaluation.device {self.evaluation.device!r} differs from "
                              f"device {self.device!r}: a pipeline trains, evaluates and "
                              "refines on its one device; set device only")

    def evaluation_settings(self) -> EvaluationSettings:
        """``evaluation`` on the pipeline's ``device``."""
        return replace(self.evaluation, device=self.device)

    def make_backend(self) -> Any:
        """The backend name, or for ``ray`` a RayBackend built with the ``ray`` options."""
        from hybridmoo.backends import backend_for

        return backend_for(self.backend, self.workers, self.ray)


def is_pipeline_config(data: Any) -> bool:
    """True for a config mapping that describes a supernet pipeline."""
    return isinstance(data, Mapping) and "supernet" in data


def pipeline_config_from_dict(data: Mapping[str, Any], *,
                              base_dir: str | os.PathLike[str] | None = None,
                              source: str = "config") -> PipelineConfig:
    """Validate a pipeline config mapping; relative paths are taken from ``base_dir``."""
    return _PipelineReader(source, Path(base_dir) if base_dir is not None else None).read(data)


class _PipelineReader(ConfigReader):
    def read(self, data: Any) -> PipelineConfig:  # type: ignore[override]
        from hybridmoo.supernet.train_config import TrainConfig

        for key in data:
            if key not in PIPELINE_KEYS:
                self.fail(f"unknown key {key!r}{did_you_mean(str(key), PIPELINE_KEYS)}; a "
                          f"supernet pipeline takes: {', '.join(PIPELINE_KEYS)}")
        try:
            train = TrainConfig.from_dict(data["supernet"], base_dir=self.base_dir,
                                          source=f"{self.source}: supernet")
        except ConfigError as exc:
            raise ConfigError(str(exc)) from None
        run_dir = self.run_dir(data.get("run_dir"))
        if run_dir is None:
            self.fail("run_dir is required for a supernet pipeline (the supernet, journal, "
                      "exported checkpoints and report go there)")
        algorithm = data.get("algorithm")
        max_seconds = data.get("max_seconds")
        if max_seconds is not None and not self.number("max_seconds", max_seconds) > 0:
            self.fail(f"max_seconds must be a positive number of seconds, got {max_seconds}")
        refine = self.refine(data.get("refine"))
        workers = self.integer(data, "workers", 1, minimum=1)
        if refine and refine["final_share"] > 0 and max_seconds is None:
            self.fail("refine.final_share is a share of max_seconds: set max_seconds")
        return PipelineConfig(
            train=train, run_dir=run_dir, device=self.device(data),
            evaluation=self.evaluation(data.get("evaluation")),
            objectives=self.objective_names(data.get("objectives")),
            algorithm=self.algorithm(algorithm) if algorithm is not None else None,
            algorithm_options=self.options(data, "algorithm_options"),
            max_evals=self.integer(data, "max_evals", 60, minimum=1),
            max_seconds=None if max_seconds is None else float(max_seconds),
            seed=self.integer(data, "seed", 0, minimum=0),
            refine=refine,
            export=self.flag(data, "export"), report=self.flag(data, "report"),
            backend=self.backend(data.get("backend", "local")), workers=workers,
            ray=self.ray_options(data.get("ray"), workers), source=self.source)

    def device(self, data: Mapping[str, Any]) -> str:
        """The top-level ``device``; the older ``evaluation.device`` is read as it (with a
        warning), and both given must agree."""
        device = data.get("device")
        if device is not None:
            self.string("device", device)
        evaluation = data.get("evaluation")
        old = evaluation.get("device") if isinstance(evaluation, Mapping) else None
        if old is None:
            return device or "cpu"
        self.string("evaluation.device", old)
        if device is not None and old != device:
            self.fail(f"evaluation.device {old!r} and device {device!r} disagree: a pipeline "
                      "trains, evaluates and refines on its one device; set device only")
        log.warning("%s: evaluation.device is now the top-level key device (training, "
                    "evaluation and refinement run there); read as device: %s", self.source, old)
        return old

    def evaluation(self, value: Any) -> EvaluationSettings:
        names = tuple(f.name for f in fields(EvaluationSettings))
        out = dict(self.record("evaluation", value or {}, names))
        out.pop("device", None)  # the pipeline's device (see device())
        if out.get("latency_model") is not None:
            path = Path(self.string("evaluation.latency_model", out["latency_model"]))
            path = path.expanduser()
            if not path.is_absolute() and self.base_dir is not None:
                path = self.base_dir / path
            out["latency_model"] = str(path)
        try:
            return EvaluationSettings.from_dict(out)
        except ConfigError as exc:
            self.fail(str(exc))

    def objective_names(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return OBJECTIVE_NAMES
        if not isinstance(value, list) or not value:
            self.fail(f"objectives must be a non-empty list of names among "
                      f"{', '.join(OBJECTIVE_NAMES)}, got {value!r}")
        for name in value:
            if name not in OBJECTIVE_NAMES:
                self.fail(f"objectives: unknown objective {name!r}"
                          f"{did_you_mean(str(name), OBJECTIVE_NAMES)}; a supernet pipeline "
                          f"measures {', '.join(OBJECTIVE_NAMES)}")
        self.unique("objectives", list(value))
        if "accuracy" not in value:
            self.fail("objectives must include accuracy")
        return tuple(value)

    def refine(self, value: Any) -> dict[str, Any] | None:
        if value is None or value is False:
            return None
        if not isinstance(value, Mapping):
            self.fail(f"refine must be a mapping (every, survivors, steps, solver, ...), got "
                      f"{value!r}")
        from hybridmoo.refine import RefineSettings

        schedule: dict[str, Any] = {"every": 20, "survivors": 4, "final_share": 0.0,
                                    "front": self.flag(value, "front")}
        for key in ("every", "survivors"):
            if key in value and not (key == "every" and value[key] is None):
                schedule[key] = self.integer(value, key, 1, minimum=1)
            elif key in value:
                schedule[key] = None
        if "final_share" in value:
            share = self.number("refine.final_share", value["final_share"])
            if not 0 <= share < 1:
                self.fail(f"refine.final_share must lie in [0, 1), got {share}")
            schedule["final_share"] = share
        settings = {k: v for k, v in value.items() if k not in SCHEDULE_KEYS}
        try:
            RefineSettings.from_dict(settings)
        except ConfigError as exc:
            self.fail(f"refine: {exc}")
        return {**schedule, **settings}

    def flag(self, data: Mapping[str, Any], key: str) -> bool:
        value = data.get(key, True)
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false, got {value!r}")
        return value


def load_pipeline_config(path: str | os.PathLike[str],
                         overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Read a YAML pipeline config; ``overrides`` (command-line flags, ``None`` = not given)
    replace its top-level keys, a relative ``run_dir`` among them taken as given."""
    from hybridmoo.config import read_config_file

    data = read_config_file(path)
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = str(Path(value).absolute()) if key == "run_dir" else value
    return pipeline_config_from_dict(data, base_dir=Path(path).parent, source=str(path))
