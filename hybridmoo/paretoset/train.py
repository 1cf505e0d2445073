"""Training a Pareto set model on a trained supernet (the supernet's weights stay as they are).

Each step draws ``preferences`` points of the simplex (uniform, Dirichlet(1)) and, for each,
the model's three objectives: the supernet's task loss, the cost model's latency and size
(:mod:`.costs`). Each objective is scaled to the span between the smallest and the largest
sub-network (their task losses measured on training batches before the first step), so 0 is
the best any sub-network reaches and 1 the other extreme and a preference weighs comparable
numbers. The task loss comes, by ``estimator``, from

- ``"predictor"`` (default): a ridge model of the task loss fitted to ``task_samples``
  sub-networks measured on the supernet (spread over the size range) and refitted every
  ``refresh_every`` steps with the configs the model then gives, evaluated at the softmax
  probabilities of the logits: the expected loss, without sampling noise
  (:mod:`.task_model`);
- ``"straight-through"`` / ``"soft"``: a Gumbel-softmax sample (one-hot forward, soft
  gradients; or the soft mixture) run through the supernet on a training batch
  (:mod:`.relaxed`). On Fashion-MNIST straight-through gives one config for every
  preference (its gradient's sign matches the loss change of a real switch on 7 of 26
  moves); the soft mixture steers, at a supernet forward and backward per preference
  (docs/benchmarks.md, issue 19).

The three gradients in the model's parameters are combined per preference by a gradient
multi-objective solver from :mod:`hybridmoo.gradmoo` (:mod:`.directions`): smooth Chebyshev
(the default), EPO and the linear scalarization read the preference; MGDA sees gradient ``i``
at length ``1 / p_i``; UPGrad weights its projected gradients by it. The step's directions
are averaged into one Adam step. Checkpoints (model, optimizer, step, measured task losses)
are written every ``checkpoint_every`` steps and at the end; ``resume=True`` continues from
the last one with the same draws.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridmoo.data.batches import batches_per_epoch, epoch_batches
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency_model import LatencyModel
from hybridmoo.gradmoo import SOLVERS, get_solver
from hybridmoo.paretoset.costs import RelaxedCosts
from hybridmoo.paretoset.directions import predictor_step, sample_preferences, supernet_step
from hybridmoo.paretoset.model import (
    META_FILE,
    OBJECTIVES,
    ParetoSet,
    PreferenceModel,
    read_files,
    save_files,
)
from hybridmoo.paretoset.relaxed import RelaxedSupernet, frozen
from hybridmoo.paretoset.task_model import TaskLossModel, measure_task_loss, rank_correlation
from hybridmoo.progress import Progress
from hybridmoo.space import config_key

PREFERENCE_BLIND = ("mgda", "upgrad")  # solvers without a preference input, steered here
ESTIMATORS = ("predictor", "straight-through", "soft")
REFERENCE_BATCHES = 16  # training batches every measured task loss is the mean over
HELD_OUT = 0.2  # share of the first task-loss samples the predictor's rank correlation uses


@dataclass(frozen=True)
class ParetoSetSettings:
    """How a Pareto set model is trained (see the module docstring)."""

    steps: int = 500
    batch_size: int = 64
    preferences: int = 16  # per step
    lr: float = 3e-3
    solver: str = "chebyshev"
    solver_options: dict[str, Any] = field(default_factory=lambda: {"smoothing": 0.1})
    temperature: float = 1.0  # of the softmax (and Gumbel-softmax)
    estimator: str = "predictor"
    task_samples: int = 200  # sub-networks measured before the first step (predictor)
    refresh_every: int = 100  # steps between refits on the model's own configs (predictor)
    hidden: int = 64
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "preferences", "hidden", "checkpoint_every",
                    "refresh_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"paretoset option {key} must be an int >= 1, got {value!r}")
        if isinstance(self.task_samples, bool) or not isinstance(self.task_samples, int) or \
                self.task_samples < 10:
            raise ConfigError(f"paretoset option task_samples must be an int >= 10, got "
                              f"{self.task_samples!r}")
        for key in ("lr", "temperature"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
                raise ConfigError(f"paretoset option {key} must be a number > 0, got {value!r}")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"paretoset option estimator must be one of {ESTIMATORS}, got "
                              f"{self.estimator!r}")
        spec = get_solver(self.solver)
        if "preference" not in spec.needs and self.solver not in PREFERENCE_BLIND:
            takes = sorted([n for n, s in SOLVERS.items() if "preference" in s.needs]
                           + list(PREFERENCE_BLIND))
            raise ConfigError(f"gradient solver {self.solver!r} cannot be steered by a "
                              f"preference; a Pareto set model trains with one of {takes}")
        unknown = set(self.solver_options) - spec.options()
        if unknown:
            raise ConfigError(f"gradient solver {self.solver!r} has no option(s) "
                              f"{sorted(unknown)}; it takes {sorted(spec.options()) or 'none'}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParetoSetSettings:
        """Settings from a plain mapping; unknown keys are a ConfigError."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown paretoset option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


def train_paretoset(supernet: Any, data: Any, *, run_dir: str | Path,
                    settings: ParetoSetSettings | None = None,
                    latency_model: LatencyModel | None = None, resume: bool = False,
                    progress: bool | None = None) -> ParetoSet:
    """Train (or, with ``resume``, continue) a Pareto set model over ``supernet``'s space on
    ``data.train``; checkpoints and the result go to ``run_dir``. Activation ranges are
    calibrated first when the space quantizes activations and the supernet has none."""
    settings = settings or ParetoSetSettings()
    run_dir = Path(run_dir)
    space = supernet.space
    device = next(supernet.model.parameters()).device
    if batches_per_epoch(data.train, settings.batch_size) == 0:
        raise ConfigError(f"the training set has fewer than batch_size={settings.batch_size} "
                          f"examples")
    if not supernet.act_ranges and any(u.a_dim for u in supernet.layout.quant):
        from hybridmoo.supernet.training import calibration_batches
        supernet.calibrate(calibration_batches(data, settings.batch_size, settings.seed, 8))
    example = torch.zeros(1, supernet.in_chans, supernet.image_size, supernet.image_size,
                          device=device)
    costs = RelaxedCosts(supernet, example, latency_model)
    with torch.random.fork_rng(devices=[]):  # the same seed, the same initial model
        torch.manual_seed(settings.seed)
        model = PreferenceModel([d.size for d in space.dims.values()], len(OBJECTIVES),
                                settings.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    relaxed = RelaxedSupernet(supernet) if settings.estimator != "predictor" else None
    reference = list(itertools.islice(epoch_batches(data.train, settings.batch_size,
                                                    settings.seed + 7, 0), REFERENCE_BATCHES))
    was_training = supernet.training
    supernet.train()  # batch statistics: what a recalibrated sub-network sees
    try:
        with frozen(supernet.model):
            if resume and (run_dir / META_FILE).is_file():
                info = _restore(run_dir, model, optimizer, settings, space)
            else:
                info = {"settings": asdict(settings), "step": 0, "history": [],
                        "seconds": 0.0, "task_data": [],
                        "latency_model": latency_model.to_dict() if latency_model else None}
            began = time.perf_counter() - info["seconds"]
            if "span" not in info:
                info["span"] = _span(supernet, costs, reference)
            task_model = _task_model(supernet, settings, info, reference) \
                if settings.estimator == "predictor" else None
            with Progress(settings.steps, progress, "paretoset", start=info["step"]) as bar:
                batches = _batches(data.train, settings, info["step"])
                while info["step"] < settings.steps:
                    step = info["step"]
                    gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
                    prefs = sample_preferences(settings.preferences, len(OBJECTIVES), gen)
                    if task_model is None:
                        x, y = next(batches)
                        losses = supernet_step(model, optimizer, relaxed, costs, info["span"],
                                               list(space.dims), settings, x.to(device),
                                               y.to(device), prefs, gen)
                    else:
                        losses = predictor_step(model, optimizer, task_model, costs,
                                                info["span"], list(space.dims), settings,
                                                prefs.to(device), gen)
                    info["step"] = step + 1
                    info["history"].append([round(float(v), 5) for v in losses])
                    if task_model is not None and info["step"] % settings.refresh_every == 0:
                        _refresh(supernet, model, task_model, prefs, info, reference)
                    info["seconds"] = time.perf_counter() - began
                    bar.update(info["step"], "task {:.3f}  latency {:.3f}  size {:.3f} "
                               "(0 = best, 1 = other extreme)".format(*losses))
                    if info["step"] % settings.checkpoint_every == 0 or \
                            info["step"] == settings.steps:
                        _checkpoint(run_dir, model, optimizer, space, info)
    finally:
        supernet.train(was_training)
    return ParetoSet(model, space, costs=costs.of_config, info=info)


def _span(supernet: Any, costs: RelaxedCosts, reference: list) -> dict[str, list[float]]:
    """The best and worst value of each objective over the extremes: task loss of the
    largest and smallest sub-network (the reference batches), their latency and size."""
    values = {}
    for which, config in (("largest", supernet.largest()), ("smallest", supernet.smallest())):
        task = float(measure_task_loss(supernet, [config], reference)[0])
        c = costs.of_config(config)
        values[which] = [task, c["latency_ms"], c["size_bytes"]]
    ideal = [values["largest"][0], values["smallest"][1], values["smallest"][2]]
    nadir = [values["smallest"][0], values["largest"][1], values["largest"][2]]
    if any(n <= i for i, n in zip(ideal, nadir, strict=True)):
        raise ConfigError(f"the largest and smallest sub-networks do not span a trade-off "
                          f"(task loss, latency, size: best {ideal}, worst {nadir}); train the "
                          f"supernet longer")
    return {"ideal": ideal, "nadir": nadir}


def _task_model(supernet: Any, settings: ParetoSetSettings, info: dict[str, Any],
                reference: list) -> TaskLossModel:
    """The task-loss predictor, fitted on the measured configs (measured now on a first
    call: ``task_samples`` spread over the size range; their rank correlation on a held-out
    fifth goes into ``info``)."""
    model = TaskLossModel(supernet.space)
    if not info["task_data"]:
        rng = np.random.default_rng(settings.seed)
        configs = [supernet.largest(), supernet.smallest(),
                   *(supernet.space.sample_spread(rng) for _ in range(settings.task_samples - 2))]
        losses = measure_task_loss(supernet, configs, reference)
        info["task_data"] = [[c, float(v)] for c, v in zip(configs, losses, strict=True)]
        cut = int(len(configs) * (1 - HELD_OUT))
        held = model.fit(configs[:cut], losses[:cut]).predict(configs[cut:])
        info["task_model_tau"] = rank_correlation(held, losses[cut:])
    configs, losses = zip(*info["task_data"], strict=True)
    return model.fit(list(configs), np.array(losses))


def _refresh(supernet: Any, model: PreferenceModel, task_model: TaskLossModel,
             prefs: torch.Tensor, info: dict[str, Any], reference: list) -> None:
    """Measure the configs the model now gives at ``prefs`` (the unmeasured ones) and refit."""
    known = {config_key(c) for c, _ in info["task_data"]}
    fresh = {config_key(c): c for c in ParetoSet(model, supernet.space).configs_for(
        prefs.cpu().numpy()) if config_key(c) not in known}
    if fresh:
        losses = measure_task_loss(supernet, list(fresh.values()), reference)
        info["task_data"] += [[c, float(v)] for c, v in zip(fresh.values(), losses,
                                                             strict=True)]
        configs, values = zip(*info["task_data"], strict=True)
        task_model.fit(list(configs), np.array(values))


def _batches(dataset: Any, settings: ParetoSetSettings, step: int):
    """Training batches from step ``step`` on, epoch after epoch (resumable)."""
    epoch, skip = divmod(step, batches_per_epoch(dataset, settings.batch_size))
    while True:
        yield from epoch_batches(dataset, settings.batch_size, settings.seed, epoch, skip)
        epoch, skip = epoch + 1, 0


def _checkpoint(run_dir: Path, model: PreferenceModel, optimizer: torch.optim.Optimizer,
                space: Any, info: dict[str, Any]) -> None:
    state = optimizer.state_dict()
    extra = {f"optimizer.{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()
             if isinstance(v, torch.Tensor)}
    save_files(run_dir, model, space, {**info, "param_groups": state["param_groups"]}, extra)


def _restore(run_dir: Path, model: PreferenceModel, optimizer: torch.optim.Optimizer,
             settings: ParetoSetSettings, space: Any) -> dict[str, Any]:
    tensors, meta = read_files(run_dir)
    info = dict(meta["info"])
    if meta["space"] != space.to_json():
        raise ConfigError(f"{run_dir}: the saved Pareto set model is for another search space")
    saved = {k: v for k, v in info["settings"].items() if k not in ("steps", "checkpoint_every")}
    now = {k: v for k, v in asdict(settings).items() if k not in ("steps", "checkpoint_every")}
    if saved != now:
        changed = sorted(k for k in now if saved.get(k) != now[k])
        raise ConfigError(f"{run_dir}: cannot resume with other settings ({changed}); use "
                          f"another run directory")
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items()
                           if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})
    info["settings"] = asdict(settings)
    return info
