"""The supernet pipeline: train (or reuse) a supernet, search its sub-networks on measured
accuracy / latency / size with gradient refinement rounds, export the front, write the report.

Run directory::

    pipeline.json        the pipeline config (a resumed run must match it)
    supernet/            the trained supernet checkpoint (hybridmoo.supernet.load_supernet)
    baseline.json        the starting model, measured before the search (hybridmoo.baseline)
    run.json, journal.jsonl   the search journal (hybridmoo.journal)
    refined/<key>/       weights of every refined network (hybridmoo.export.save_network)
    export/              one checkpoint per front point + front.json / front.csv
    report/report.html   the report, with its PNG figures

Every stage resumes: training from its last checkpoint, the search from its journal (refined
networks are saved before their record is journaled), export and report are rewritten.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hybridmoo.baseline import (
    LARGEST,
    USER_MODEL,
    Baseline,
    fixed_hypervolume,
    fixed_reference,
    load_baseline,
    save_baseline,
)
from hybridmoo.errors import RunDirError
from hybridmoo.files import write_atomic
from hybridmoo.objectives import EvalResult
from hybridmoo.pipeline_config import PipelineConfig
from hybridmoo.rundir import (
    BASELINE_FILE,
    PIPELINE_FILE,
    PIPELINE_LOCK_FILE,
    SUPERNET_DIR,
    check_pipeline_dir,
    clear_run,
    hold_lock,
    refined_dir,
    search_started,
    trained_steps,
)
from hybridmoo.search import RefineSchedule, SearchResult, search

log = logging.getLogger("hybridmoo")

RESUMABLE = ("max_evals", "max_seconds", "backend", "workers", "ray")
"""Pipeline settings a resumed run may change."""


@dataclass
class PipelineResult:
    """What a pipeline run produced."""

    search: SearchResult
    run_dir: Path
    train_metrics: dict[str, float]
    export_dir: Path | None = None
    report: Path | None = None
    baseline: Baseline | None = None

    @property
    def hypervolume(self) -> tuple[float, str]:
        """The front's hypervolume under a fixed reference and what fixed it
        (:func:`hybridmoo.baseline.fixed_hypervolume`)."""
        return fixed_hypervolume(self.baseline, self.search.history,
                                 self.search.archive.objectives)


def run_pipeline(cfg: PipelineConfig, *, data: Any = None, resume: bool = False,
                 overwrite: bool = False, progress: bool | None = None) -> PipelineResult:
    """Run every stage of ``cfg`` (see the module docstring); ``resume`` continues a run,
    ``overwrite`` deletes the run in ``cfg.run_dir`` first. Everything that can be checked
    (run directory, model, checkpoint, data, device, Ray address) is checked before the first
    file is written, so a bad config leaves the directory as it was. ``data``: data from
    Python instead of the config's ``supernet.data`` (an :class:`~hybridmoo.data.ImageData`,
    or train / val / test Datasets or DataLoaders, see :func:`hybridmoo.data.as_image_data`):
    pipeline.json records its sizes and fingerprint (:func:`hybridmoo.data.data_record`), so
    resuming the run needs the same data passed again."""
    from hybridmoo.evaluate import SubnetEvaluator

    images = None
    if data is not None:
        from hybridmoo.supernet.training import with_python_data

        train, images = with_python_data(cfg.train, data)
        cfg = replace(cfg, train=train)
    run_dir = Path(cfg.run_dir)
    settings = json.loads(json.dumps(_settings(cfg), default=str))
    if resume:
        _check_resumed_data(run_dir, settings)
    check_pipeline_dir(run_dir, settings, resume=resume, overwrite=overwrite,
                       resumable=RESUMABLE)
    latency, prepared = _preflight(cfg, run_dir, resume, images)
    with _pipeline_lock(run_dir):
        if overwrite:
            clear_run(run_dir)
        if not resume:
            write_atomic(run_dir / PIPELINE_FILE, json.dumps(settings, indent=1, sort_keys=True))
        supernet, data, metrics = _supernet(cfg, run_dir, prepared, progress, images)
        evaluator = SubnetEvaluator.from_settings(supernet, data, cfg.evaluation_settings(),
                                                  latency=latency, train=cfg.train)
        objectives = [o for o in evaluator.objectives if o.name in cfg.objectives]
        user_model = _user_model(cfg, data)  # the baseline, and refinement's teacher
        baseline = _baseline(cfg, run_dir, supernet, data, evaluator, user_model)
        result = search(supernet.space, evaluator, objectives,
                        algorithm=cfg.algorithm or _default_algorithm(),
                        algorithm_options=cfg.algorithm_options, max_evals=cfg.max_evals,
                        seed=cfg.seed, backend=cfg.make_backend(), workers=cfg.workers,
                        run_dir=run_dir, resume=resume and search_started(run_dir),
                        refine=_schedule(cfg, supernet, data, evaluator, run_dir,
                                         teacher=user_model),
                        max_seconds=cfg.max_seconds, progress=progress)
        baseline = _fix_reference(run_dir, baseline, result, objectives)
        export_dir = report = None
        if cfg.export:
            from hybridmoo.export import export_run

            export_dir = export_run(run_dir, data=data)
        if cfg.report:
            from hybridmoo.report import report_run

            report = report_run(run_dir)
    return PipelineResult(result, run_dir, metrics, export_dir, report, baseline)


def _fix_reference(run_dir: Path, baseline: Baseline, result: SearchResult,
                   objectives: list[Any]) -> Baseline:
    """The baseline with the hypervolume reference of the first search kept in it (a resumed
    run keeps the one it has: :mod:`hybridmoo.baseline`)."""
    if baseline.reference is not None:
        return baseline
    reference = fixed_reference(baseline.values, result.history, objectives)
    if reference is None:
        return baseline
    baseline = replace(baseline, reference=reference)
    save_baseline(run_dir / BASELINE_FILE, baseline)
    return baseline


def _baseline(cfg: PipelineConfig, run_dir: Path, supernet: Any, data: Any, evaluator: Any,
              user_model: Any) -> Baseline:
    """The starting model (``user_model``, else the largest sub-network in FP32) measured by
    the search's evaluator (:mod:`hybridmoo.baseline`): read from the run directory when a
    resumed run measured it already."""
    from hybridmoo.supernet.training import accuracy, calibration_batches, fp32, prepare_subnet

    path = run_dir / BASELINE_FILE
    saved = load_baseline(path)
    if saved is not None:
        return saved
    network, source = user_model, USER_MODEL
    if network is None:
        largest = fp32(supernet.largest())
        calib = calibration_batches(data, evaluator.batch_size, evaluator.seed,
                                    evaluator.bn_batches)
        network, source = prepare_subnet(supernet, largest, calib), LARGEST
    measured = evaluator.measure_network(network)
    values = {o.name: float(measured[o.name]) for o in evaluator.objectives
              if o.name in measured}
    test = ({} if data.test is data.val
            else {"accuracy": 100.0 * accuracy(network.eval(), data.test)})
    baseline = Baseline(source, values, test)
    save_baseline(path, baseline)
    log.info("baseline (%s): %s", source, values)
    return baseline


def _preflight(cfg: PipelineConfig, run_dir: Path, resume: bool, data: Any = None
               ) -> tuple[Any, Any]:
    """Check what the config names before anything is written: the device, the latency model,
    the Ray address, and (unless a finished supernet is resumed) the data (``data``: checked
    data from Python), model and checkpoint, built as training builds them. Returns the
    evaluator's ``latency`` ("measure" or the latency model) and the supernet to come: its
    checkpoint directory when training is done, else ``prepare_training``'s (data, untrained
    supernet)."""
    from hybridmoo.evaluate.measure import resolve_device
    from hybridmoo.supernet.training import prepare_training

    resolve_device(cfg.device)
    latency: Any = "measure"
    if cfg.evaluation.latency_model:
        from hybridmoo.evaluate import LatencyModel

        latency = LatencyModel.load(cfg.evaluation.latency_model)
    if cfg.backend == "ray":
        from hybridmoo.backends.ray_cluster import check_address

        check_address(cfg.ray.get("address"))
    if resume and trained_steps(run_dir) >= cfg.train.steps:
        return latency, run_dir / SUPERNET_DIR
    return latency, prepare_training(cfg.train, data)


@contextmanager
def _pipeline_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s pipeline lock for every stage: a second process is refused."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: "
                          f"{exc.strerror or exc}") from None
    with hold_lock(run_dir, PIPELINE_LOCK_FILE):
        yield


def _check_resumed_data(run_dir: Path, settings: dict[str, Any]) -> None:
    """ConfigError saying to pass the data again when the run in ``run_dir`` was started on
    data from Python and this call passes none (the settings check would only say the data
    differs, and suggest starting over)."""
    from hybridmoo.data import check_resumed_source

    try:
        old = json.loads((run_dir / PIPELINE_FILE).read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return  # check_pipeline_dir reports a missing or unreadable pipeline.json
    check_resumed_source(old, settings.get("data"))


def _settings(cfg: PipelineConfig) -> dict[str, Any]:
    train = cfg.train.to_dict()
    train.pop("run_dir", None)
    out = {k: v for k, v in asdict(cfg).items() if k not in ("train", "run_dir", "source")}
    out["train"] = train
    out["evaluation"] = cfg.evaluation.to_dict()
    # how the evaluator rebuilds BatchNorm / calibration batches (export repeats it)
    ev = cfg.evaluation
    out.update(data=train["data"], image_size=train["image_size"],
               batch_size=ev.batch_size or cfg.train.batch_size,
               bn_batches=ev.bn_batches or cfg.train.calib_batches, seed=cfg.train.seed)
    return out


def _supernet(cfg: PipelineConfig, run_dir: Path, prepared: Any, progress: bool | None,
              data: Any = None) -> tuple[Any, Any, dict[str, float]]:
    """The trained supernet and its data (``data`` when given, else the config's): loaded when
    training finished (``prepared`` is its directory), else trained now on ``cfg.device``
    from ``prepared`` (resumed from its last checkpoint when it has one)."""
    from hybridmoo.data import make_data
    from hybridmoo.supernet import load_supernet, train_supernet
    from hybridmoo.supernet.checkpoint import META_FILE

    train_dir = run_dir / SUPERNET_DIR
    if isinstance(prepared, Path):
        meta = json.loads((train_dir / META_FILE).read_text()).get("meta", {})
        supernet = load_supernet(train_dir)
        if data is None:
            data = make_data(cfg.train.data, cfg.train.image_size)
        return supernet, data, meta.get("metrics", {})
    trained = train_supernet(replace(cfg.train, run_dir=str(train_dir)), device=cfg.device,
                             resume=(train_dir / META_FILE).is_file(), progress=progress,
                             prepared=prepared)
    return trained.supernet, trained.data, trained.metrics


def _schedule(cfg: PipelineConfig, supernet: Any, data: Any, evaluator: Any,
              run_dir: Path, teacher: Any = None) -> RefineSchedule | None:
    """The refinement rounds of ``cfg`` as backend work; ``teacher``: the user's model to
    distil from (None: the supernet's largest sub-network)."""
    if cfg.refine is None:
        return None
    from hybridmoo.refine import Refiner, RefineSettings

    options = dict(cfg.refine)
    every, survivors = options.pop("every"), options.pop("survivors")
    final_share, front = options.pop("final_share"), options.pop("front")
    # the fitted latency model, when the run has one, is refinement's latency surrogate too
    model = evaluator.latency if not isinstance(evaluator.latency, str) else None
    refiner = Refiner(supernet, data, RefineSettings.from_dict(options),
                      measure=evaluator.measure_network, latency_model=model,
                      teacher=teacher, device=cfg.device)
    if refiner.settings.distill:  # once, before the search: the teacher's logits travel with
        refiner.distillation_target()  # the refiner to every worker instead of each making them
    return RefineSchedule(worker=refiner.refine_job, keep=_Keep(run_dir), every=every,
                          survivors=survivors, final_share=final_share, front_round=front)


class _Keep:
    """Saves a refined network's weights under ``refined/<key>/`` before its record is
    journaled: written in a temporary directory, then renamed into place, so a directory there
    is always complete (a kill mid-way leaves only the temporary one, replaced next time)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def __call__(self, result: EvalResult, network: Any) -> None:
        from hybridmoo.export import save_network

        final = refined_dir(self.run_dir, result.key)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_network(network, tmp, meta={"config": result.config,
                                         "hardened_config": result.info.get("hardened_config"),
                                         "parents": list(result.candidate.parents)})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)


def _user_model(cfg: PipelineConfig, data: Any) -> Any:
    """The user's own model (from its checkpoint): the baseline and refinement's teacher; None
    when the supernet started from a random init (refinement then distils from its largest
    sub-network)."""
    from hybridmoo.supernet import make_supernet
    from hybridmoo.supernet.training import starts_from_user_weights, user_teacher

    train = cfg.train
    if not starts_from_user_weights(train):
        return None
    sn = make_supernet(train.model, train.num_classes or data.num_classes, spec=train.spec,
                       image_size=train.image_size, checkpoint=train.checkpoint)
    return user_teacher(train, sn)


def _default_algorithm() -> str:
    from hybridmoo.proposers import DEFAULT_ALGORITHM

    return DEFAULT_ALGORITHM

