"""The supernet pipeline: train (or reuse) a supernet, search its sub-networks on measured
accuracy / latency / size with gradient refinement rounds, export the front, write the report.

Run directory::

    pipeline.json        the pipeline config (a resumed run must match it)
    supernet/            the trained supernet checkpoint (hybridmoo.supernet.load_supernet)
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

from hybridmoo.errors import RunDirError
from hybridmoo.files import write_atomic
from hybridmoo.objectives import EvalResult
from hybridmoo.pipeline_config import PipelineConfig
from hybridmoo.rundir import (
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


def run_pipeline(cfg: PipelineConfig, *, resume: bool = False, overwrite: bool = False,
                 progress: bool | None = None) -> PipelineResult:
    """Run every stage of ``cfg`` (see the module docstring); ``resume`` continues a run,
    ``overwrite`` deletes the run in ``cfg.run_dir`` first. Everything that can be checked
    (run directory, model, checkpoint, data, device, Ray address) is checked before the first
    file is written, so a bad config leaves the directory as it was."""
    from hybridmoo.evaluate import SubnetEvaluator

    run_dir = Path(cfg.run_dir)
    settings = json.loads(json.dumps(_settings(cfg), default=str))
    check_pipeline_dir(run_dir, settings, resume=resume, overwrite=overwrite,
                       resumable=RESUMABLE)
    latency, prepared = _preflight(cfg, run_dir, resume)
    with _pipeline_lock(run_dir):
        if overwrite:
            clear_run(run_dir)
        if not resume:
            write_atomic(run_dir / PIPELINE_FILE, json.dumps(settings, indent=1, sort_keys=True))
        supernet, data, metrics = _supernet(cfg, run_dir, prepared, progress)
        evaluator = SubnetEvaluator.from_settings(supernet, data, cfg.evaluation,
                                                  latency=latency, train=cfg.train)
        objectives = [o for o in evaluator.objectives if o.name in cfg.objectives]
        result = search(supernet.space, evaluator, objectives,
                        algorithm=cfg.algorithm or _default_algorithm(),
                        algorithm_options=cfg.algorithm_options, max_evals=cfg.max_evals,
                        seed=cfg.seed, backend=cfg.make_backend(), workers=cfg.workers,
                        run_dir=run_dir, resume=resume and search_started(run_dir),
                        refine=_schedule(cfg, supernet, data, evaluator, run_dir),
                        max_seconds=cfg.max_seconds, progress=progress)
        export_dir = report = None
        if cfg.export:
            from hybridmoo.export import export_run

            export_dir = export_run(run_dir)
        if cfg.report:
            from hybridmoo.report import report_run

            report = report_run(run_dir)
    return PipelineResult(result, run_dir, metrics, export_dir, report)


def _preflight(cfg: PipelineConfig, run_dir: Path, resume: bool) -> tuple[Any, Any]:
    """Check what the config names before anything is written: the evaluation device, the
    latency model, the Ray address, and (unless a finished supernet is resumed) the data, model
    and checkpoint, built as training builds them. Returns the evaluator's ``latency``
    ("measure" or the latency model) and the supernet to come: its checkpoint directory when
    training is done, else ``prepare_training``'s (data, untrained supernet)."""
    from hybridmoo.evaluate.measure import resolve_device
    from hybridmoo.supernet.training import prepare_training

    resolve_device(cfg.evaluation.device)
    latency: Any = "measure"
    if cfg.evaluation.latency_model:
        from hybridmoo.evaluate import LatencyModel

        latency = LatencyModel.load(cfg.evaluation.latency_model)
    if cfg.backend == "ray":
        from hybridmoo.backends.ray_cluster import check_address

        check_address(cfg.ray.get("address"))
    if resume and trained_steps(run_dir) >= cfg.train.steps:
        return latency, run_dir / SUPERNET_DIR
    return latency, prepare_training(cfg.train)


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


def _supernet(cfg: PipelineConfig, run_dir: Path, prepared: Any, progress: bool | None
              ) -> tuple[Any, Any, dict[str, float]]:
    """The trained supernet: loaded when training finished (``prepared`` is its directory),
    else trained now from ``prepared`` (resumed from its last checkpoint when it has one)."""
    from hybridmoo.data import make_data
    from hybridmoo.supernet import load_supernet, train_supernet
    from hybridmoo.supernet.checkpoint import META_FILE

    train_dir = run_dir / SUPERNET_DIR
    if isinstance(prepared, Path):
        meta = json.loads((train_dir / META_FILE).read_text()).get("meta", {})
        supernet = load_supernet(train_dir)
        return supernet, make_data(cfg.train.data, cfg.train.image_size), meta.get(
            "metrics", {})
    trained = train_supernet(replace(cfg.train, run_dir=str(train_dir)),
                             resume=(train_dir / META_FILE).is_file(), progress=progress,
                             prepared=prepared)
    return trained.supernet, trained.data, trained.metrics


def _schedule(cfg: PipelineConfig, supernet: Any, data: Any, evaluator: Any,
              run_dir: Path) -> RefineSchedule | None:
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
                      teacher=_user_model(cfg, data))

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
    """The user's own model (from its checkpoint), refinement's distillation teacher; None
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

