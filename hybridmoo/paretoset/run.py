"""Pareto set models of pipeline runs: train one on a run's supernet and data (saved in
``RUN_DIR/paretoset``), and export the network it gives for a preference or a cost limit
in the same checkpoint format as the front's export (``hybridmoo pick --from-model``), also
where the measured front has no point."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmoo.errors import ConfigError
from hybridmoo.paretoset.model import META_FILE, ParetoSet
from hybridmoo.paretoset.train import ParetoSetSettings, train_paretoset
from hybridmoo.pick import MB
from hybridmoo.rundir import PARETOSET_DIR, SUPERNET_DIR
from hybridmoo.space import config_key

LATENCY_MODEL_FILE = "latency_model.json"  # where `hybridmoo profile` writes it


@dataclass
class ModelPick:
    """The network a Pareto set model gave, exported to ``checkpoint``."""

    config: dict[str, Any]
    checkpoint: Path
    measured: dict[str, float]
    predicted: dict[str, float]
    asked: str


def run_latency_model(run_dir: Path, supernet: Any) -> Any:
    """The run's latency model (``RUN_DIR`` or its supernet directory), or None."""
    from hybridmoo.evaluate.latency_model import LatencyModel, supernet_fingerprint

    for place in (run_dir, run_dir / SUPERNET_DIR):
        if (place / LATENCY_MODEL_FILE).is_file():
            return LatencyModel.load(place / LATENCY_MODEL_FILE,
                                     model_fingerprint=supernet_fingerprint(supernet))
    return None


def _run_parts(run_dir: str | os.PathLike[str]) -> tuple[Path, Any, Any, dict[str, Any]]:
    from hybridmoo.export.run import read_pipeline, run_data
    from hybridmoo.supernet import load_supernet

    run_dir = Path(run_dir)
    if not (run_dir / SUPERNET_DIR).is_dir():
        raise ConfigError(f"{run_dir} has no {SUPERNET_DIR}/ checkpoint: a Pareto set model "
                          f"needs a pipeline run's trained supernet")
    settings = read_pipeline(run_dir)
    return run_dir, load_supernet(run_dir / SUPERNET_DIR), run_data(run_dir, settings), settings


def train_for_run(run_dir: str | os.PathLike[str], settings: ParetoSetSettings | None = None,
                  *, resume: bool = False, progress: bool | None = None) -> ParetoSet:
    """Train a Pareto set model on a pipeline run's supernet and training data (with the
    run's latency model when it has one), into ``RUN_DIR/paretoset``."""
    run_dir, supernet, data, _ = _run_parts(run_dir)
    out = run_dir / PARETOSET_DIR
    if (out / META_FILE).is_file() and not resume:
        raise ConfigError(f"{out} holds a Pareto set model already: resume it (--resume) or "
                          f"remove it")
    return train_paretoset(supernet, data, run_dir=out, settings=settings, resume=resume,
                           latency_model=run_latency_model(run_dir, supernet),
                           progress=progress)


def pick_from_model(run_dir: str | os.PathLike[str], *, preference: Any = None,
                    max_latency_ms: float | None = None, max_size_mb: float | None = None,
                    out: str | os.PathLike[str] | None = None) -> ModelPick:
    """Ask the run's Pareto set model for a preference or one cost limit, extract that
    network from the supernet (BatchNorm and activation ranges recalibrated), measure it
    (val accuracy, latency, size) and export it to ``out`` (default
    ``RUN_DIR/paretoset/picked/<key>``)."""
    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.export.point import export_point
    from hybridmoo.paretoset import load_paretoset
    from hybridmoo.supernet.training import calibration_batches, prepare_subnet

    run_dir, supernet, data, settings = _run_parts(run_dir)
    model_dir = run_dir / PARETOSET_DIR
    if not (model_dir / META_FILE).is_file():
        raise ConfigError(f"{run_dir} has no Pareto set model: train one with 'hybridmoo "
                          f"paretoset {run_dir}'")
    ps = load_paretoset(model_dir, supernet)
    size_bytes = None if max_size_mb is None else MB * float(max_size_mb)
    config = ps.config_for(preference, latency_ms=max_latency_ms, size_bytes=size_bytes)
    asked = (f"preference {list(map(float, preference))}" if preference is not None else
             f"latency <= {max_latency_ms} ms" if max_latency_ms is not None else
             f"size <= {max_size_mb} MB")
    batches = calibration_batches(data, settings["batch_size"], settings["seed"],
                                  settings["bn_batches"])
    net = prepare_subnet(supernet, config, batches)
    evaluator = SubnetEvaluator(supernet, data, split="val", seed=settings["seed"])
    measured = evaluator.measure_network(net)
    values = {"accuracy": measured["accuracy"], "latency_ms": measured["latency_ms"],
              "size_bytes": measured["size_bytes"]}
    units = {"accuracy": "%", "latency_ms": "ms", "size_bytes": "B"}
    directory = Path(out) if out is not None else model_dir / "picked" / config_key(config)
    inputs = [x for x, _ in batches]
    predicted = ps.predicted(config)
    export_point(net, directory, config=config,
                 metrics={k: {"value": float(v), "unit": units[k], "split": "val"}
                          for k, v in values.items()},
                 lineage={"paretoset": str(model_dir), "asked": asked},
                 example=inputs[0][:1], calibration=inputs,
                 device_name=str(measured.get("device", "cpu")),
                 extra={"predicted": {k: float(v) for k, v in predicted.items()}})
    return ModelPick(config, directory, values, predicted, asked)
