"""Re-export the front of a finished supernet run (``hybridmoo export RUN_DIR``).

A supernet run directory holds, beside ``run.json`` and ``journal.jsonl``::

    supernet/        the trained supernet (hybridmoo.supernet.load_supernet)
    refined/<key>/   networks made by gradient refinement (save_network directories)
    pipeline.json    {"data": "digits" | {"root": ...} | {"python": true, ...},
                      "image_size", "batch_size", "bn_batches", "seed", optional
                      "device_name"}: how sub-networks were calibrated, and where they
                     were measured

Data that came from Python has no name to rebuild it by: pipeline.json holds its record
(:func:`hybridmoo.data.data_record`), and exporting such a run needs the same data again
(``export_run(run_dir, data=...)``, checked against the record).

A record of origin ``"refine"`` is exported from ``refined/<key>/``; any other front record is
extracted from the supernet and recalibrated with
:func:`hybridmoo.supernet.training.prepare_subnet` on the batches of
:func:`~hybridmoo.supernet.training.calibration_batches` (``batch_size``, ``seed``,
``bn_batches`` from pipeline.json), as :class:`hybridmoo.evaluate.SubnetEvaluator` does, so
each checkpoint reproduces the accuracy its record holds.

The export directory (:func:`hybridmoo.export.export_front`) holds one directory per front
point, ``front.json`` / ``front.csv`` (the front) and ``history.csv`` (every journaled
evaluation, failed ones too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hybridmoo.archive import ParetoArchive
from hybridmoo.baseline import fixed_hypervolume, load_baseline
from hybridmoo.data import SOURCE_HELP
from hybridmoo.errors import ConfigError
from hybridmoo.export.files import read_manifest
from hybridmoo.export.front import FrontPoint, export_front
from hybridmoo.export.network import load_network
from hybridmoo.rundir import (
    BASELINE_FILE,
    EXPORT_DIR,
    PIPELINE_FILE,
    REFINED_DIR,
    SUPERNET_DIR,
    refined_dir,
)
from hybridmoo.space import REFINED


def export_run(run_dir: str | os.PathLike[str], *, data: Any = None) -> Path:
    """Export the Pareto front of the supernet run in ``run_dir`` to ``run_dir/export``;
    returns the path of its front.json. ``data``: the run's data, when the caller has it
    (see :func:`export_run_front`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    if not (run_dir / SUPERNET_DIR).is_dir():
        raise ConfigError(f"{run_dir} has no {SUPERNET_DIR}/ checkpoint: only supernet runs "
                          "can be exported")
    return export_run_front(run_dir, data=data)


def export_run_front(run_dir: str | os.PathLike[str],
                     out_dir: str | os.PathLike[str] | None = None, *, data: Any = None
                     ) -> Path:
    """Export the front recorded in ``run_dir``'s journal (see the module docstring) to
    ``out_dir`` (default ``run_dir/export``), with the history.csv of every evaluation;
    returns the path of front.json. ``data``: the run's data (an ImageData, or what
    :func:`hybridmoo.data.as_image_data` takes), used instead of rebuilding it from
    pipeline.json; needed when the run's data came from Python, and then checked against
    its record."""
    from hybridmoo.report import read_run
    from hybridmoo.supernet.training import calibration_batches, prepare_subnet

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    archive = ParetoArchive(run.objectives)
    for r in run.history:
        archive.add(r)
    if not archive.front:
        raise ConfigError(f"{run_dir}: the run has no feasible result to export")
    settings = read_pipeline(run_dir)
    data = run_data(run_dir, settings, data)
    batches = calibration_batches(data, settings["batch_size"], settings["seed"],
                                  settings["bn_batches"])
    if not batches:
        raise ConfigError(f"{run_dir}: batch_size {settings['batch_size']} leaves no "
                          "calibration batch")
    supernet = None
    points = []
    evaluation = {id(r): n for n, r in enumerate(run.history, 1)}
    for r in archive.front:
        lineage: dict[str, Any] = {"evaluation": evaluation[id(r)]}
        if r.candidate.origin == REFINED:
            directory = _existing_refined_dir(run_dir, r.key)
            net = load_network(directory)
            lineage["refinement"] = read_manifest(directory).get("meta", {})
        else:
            if supernet is None:
                from hybridmoo.supernet import load_supernet

                supernet = load_supernet(run_dir / SUPERNET_DIR)
            net = prepare_subnet(supernet, r.config, batches)
        device = r.info.get("device") if isinstance(r.info.get("device"), str) else None
        points.append(FrontPoint(net, r, device=device or settings.get("device_name"),
                                 lineage=lineage, test=_test_values(net, data, run.objectives)))
    inputs = [x for x, _ in batches]
    baseline = load_baseline(run_dir / BASELINE_FILE)
    return export_front(points, out_dir or run_dir / EXPORT_DIR, objectives=run.objectives,
                        example=inputs[0][:1], calibration=inputs, history=run.history,
                        baseline=baseline, hypervolume=fixed_hypervolume(
                            baseline, run.history, run.objectives))


def run_data(run_dir: Path, settings: dict[str, Any], data: Any = None) -> Any:
    """The ImageData of the run whose pipeline.json holds ``settings``: ``data`` when given
    (checked against the record when the run's data came from Python), else rebuilt from its
    source (a ConfigError saying to pass it when it came from Python)."""
    from hybridmoo.data import as_image_data, data_record, is_python_record, make_data
    from hybridmoo.supernet.checkpoint import META_FILE

    record = settings["data"]
    if data is None:
        return make_data(record, settings["image_size"])
    try:  # the supernet's classes (plain datasets need not declare theirs)
        meta = json.loads((run_dir / SUPERNET_DIR / META_FILE).read_text(encoding="utf-8"))
        classes = meta.get("num_classes") if isinstance(meta, dict) else None
    except (OSError, ValueError):
        classes = None
    data = as_image_data(data, num_classes=classes if isinstance(classes, int) else None,
                         image_size=settings["image_size"])
    if is_python_record(record) and data_record(data) != record:
        raise ConfigError(f"{run_dir}: the data given is not this run's: {PIPELINE_FILE} "
                          f"records {record}, the data given is {data_record(data)}")
    return data


def _test_values(net: Any, data: Any, objectives: Any) -> dict[str, float]:
    """Accuracy (%) of ``net`` on the test split, when the run selected on accuracy and the
    data has a test split of its own (an image folder without ``test/`` has none)."""
    from hybridmoo.supernet.training import accuracy

    if "accuracy" not in {o.name for o in objectives} or data.test is data.val:
        return {}
    return {"accuracy": 100.0 * accuracy(net.eval(), data.test)}


def read_pipeline(run_dir: Path) -> dict[str, Any]:
    """``pipeline.json`` of a supernet run, type-checked."""
    path = run_dir / PIPELINE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: no {PIPELINE_FILE} (how its sub-networks were "
                          "calibrated)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict) or "data" not in data:
        raise ConfigError(f"{path}: needs a 'data' entry ({SOURCE_HELP})")
    out = dict(data)
    for key, default, low in (("image_size", None, 1), ("batch_size", 64, 1),
                              ("bn_batches", 4, 1), ("seed", 0, 0)):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{path}: {key} must be an int >= {low}, got {value!r}")
        out[key] = value
    if not isinstance(out.get("device_name", ""), str):
        raise ConfigError(f"{path}: device_name must be a string, got {out['device_name']!r}")
    return out


def _existing_refined_dir(run_dir: Path, key: str) -> Path:
    path = refined_dir(run_dir, key)
    if not path.is_dir():
        raise ConfigError(f"{run_dir}: the refined network {key[:8]} has no {REFINED_DIR}/{key}/ "
                          "directory")
    return path
