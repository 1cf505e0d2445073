"""Training a Pareto set model on a trained supernet (the supernet's weights stay as they are).

Each step draws a training batch and ``preferences`` points of the simplex (uniform,
Dirichlet(1)); for each preference the model's logits give a straight-through Gumbel-softmax
sample per dimension (a one-hot config forward, soft gradients back), which runs through the
supernet (:mod:`.relaxed`: the task loss) and the cost model (:mod:`.costs`: latency and size).
Each objective is scaled to the span between the smallest and the largest sub-network (task
loss measured on a few training batches before the first step), so 0 is the best any
sub-network reaches and 1 the other extreme, and the preference weighs comparable numbers
(without it the cost gradients, exact and steady, outweigh the noisy task gradient of one
sampled config and every preference collapses to the smallest network). The three gradients
in the model's parameters are
combined by a gradient multi-objective solver from :mod:`hybridmoo.gradmoo` at that
preference (smooth Chebyshev by default; EPO; MGDA, UPGrad and the other solvers that take no
preference see gradient ``i`` at length ``1 / p_i``, so the objectives a preference favours
must fall faster), and the directions of the step's preferences are averaged into one Adam
step. Checkpoints (model, optimizer, step) are written every ``checkpoint_every`` steps and at
the end; ``resume=True`` continues from the last one with the same batches and draws.
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
import torch.nn.functional as F

from hybridmoo.data.batches import batches_per_epoch, epoch_batches
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency_model import LatencyModel
from hybridmoo.gradmoo import get_solver, solve
from hybridmoo.paretoset.costs import RelaxedCosts, one_hot
from hybridmoo.paretoset.model import (
    META_FILE,
    OBJECTIVES,
    ParetoSet,
    PreferenceModel,
    read_files,
    save_files,
)
from hybridmoo.paretoset.relaxed import RelaxedSupernet, frozen
from hybridmoo.progress import Progress
from hybridmoo.refine.combine import combined, gram, solver_weights

PREFERENCE_FLOOR = 1e-3  # a preference-blind solver sees gradient i at length 1 / max(p_i, this)
REFERENCE_BATCHES = 4  # training batches the extremes' task losses are measured on


@dataclass(frozen=True)
class ParetoSetSettings:
    """How a Pareto set model is trained (see the module docstring)."""

    steps: int = 400
    batch_size: int = 64
    preferences: int = 4  # per step
    lr: float = 1e-3
    solver: str = "chebyshev"
    solver_options: dict[str, Any] = field(default_factory=lambda: {"smoothing": 0.1})
    temperature: float = 1.0  # of the Gumbel-softmax
    hidden: int = 64
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "preferences", "hidden", "checkpoint_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"paretoset option {key} must be an int >= 1, got {value!r}")
        for key in ("lr", "temperature"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
                raise ConfigError(f"paretoset option {key} must be a number > 0, got {value!r}")
        spec = get_solver(self.solver)
        if "references" in spec.needs:
            raise ConfigError(f"gradient solver {self.solver!r} needs the reference vectors of "
                              f"a finite set; a Pareto set model takes one preference a time")
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


def straight_through_sample(logits: torch.Tensor, temperature: float,
                            generator: torch.Generator) -> torch.Tensor:
    """A one-hot Gumbel-softmax sample of ``logits`` whose gradient is the soft sample's."""
    u = torch.rand(logits.shape, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    soft = torch.softmax((logits - torch.log(-torch.log(u))) / temperature, dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft)
    return hard - soft.detach() + soft


def direction_weights(name: str, G: np.ndarray, losses: np.ndarray, preference: np.ndarray,
                      rng: np.random.Generator, options: Mapping[str, Any]) -> np.ndarray:
    """Weights of the raw gradients for one preference (see the module docstring). The
    gradients are not normalised: the objectives are on one scale already, and a gradient
    that vanished (an objective at its extreme) must not be blown up again."""
    if "preference" in get_solver(name).needs:
        return solver_weights(name, G, losses, preference, rng, options, normalize=False)
    live = np.diag(G) > 0
    weights = np.zeros(len(G))
    if not live.any():
        return weights
    scale = 1.0 / np.maximum(preference[live], PREFERENCE_FLOOR)
    sub = G[np.ix_(live, live)] * np.outer(scale, scale)
    weights[live] = solve(name, sub, losses=losses[live], rng=rng, **options) * scale
    return weights


def sample_preferences(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points uniform on the simplex of ``m`` objectives (normalised exponentials)."""
    e = -torch.log(torch.rand(n, m, generator=generator).clamp_(1e-10, 1.0))
    return e / e.sum(dim=1, keepdim=True)


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
    example = torch.zeros(1, supernet.in_chans, supernet.image_size, supernet.image_size,
                          device=device)
    if not supernet.act_ranges and any(u.a_dim for u in supernet.layout.quant):
        from hybridmoo.supernet.training import calibration_batches
        supernet.calibrate(calibration_batches(data, settings.batch_size, settings.seed, 8))
    costs = RelaxedCosts(supernet, example, latency_model)
    model = PreferenceModel([d.size for d in space.dims.values()], len(OBJECTIVES),
                            settings.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    relaxed = RelaxedSupernet(supernet)
    per_epoch = batches_per_epoch(data.train, settings.batch_size)
    if per_epoch == 0:
        raise ConfigError(f"the training set has fewer than batch_size={settings.batch_size} "
                          f"examples")
    names = list(space.dims)
    was_training = supernet.training
    supernet.train()  # batch statistics: what a recalibrated sub-network sees
    try:
        with frozen(supernet.model):
            if resume and (run_dir / META_FILE).is_file():
                info = _restore(run_dir, model, optimizer, settings, space)
            else:
                info = {"settings": asdict(settings), "step": 0, "history": [],
                        "seconds": 0.0, "span": _span(supernet, relaxed, costs, data, settings),
                        "latency_model": latency_model.to_dict() if latency_model else None}
            began = time.perf_counter() - info["seconds"]
            with Progress(settings.steps, progress, "paretoset", start=info["step"]) as bar:
                batches = _batches(data.train, settings, info["step"], per_epoch)
                while info["step"] < settings.steps:
                    step = info["step"]
                    x, y = next(batches)
                    gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
                    prefs = sample_preferences(settings.preferences, len(OBJECTIVES), gen)
                    losses = _step(model, optimizer, relaxed, costs, info["span"], names,
                                   settings, x.to(device), y.to(device), prefs, gen)
                    info["step"] = step + 1
                    info["history"].append([round(float(v), 5) for v in losses])
                    info["seconds"] = time.perf_counter() - began
                    bar.update(info["step"], "task {:.3f}  latency {:.3f}  size {:.3f} "
                               "(0 = best, 1 = other extreme)".format(*losses))
                    if info["step"] % settings.checkpoint_every == 0 or \
                            info["step"] == settings.steps:
                        _checkpoint(run_dir, model, optimizer, space, info)
    finally:
        supernet.train(was_training)
    return ParetoSet(model, space, costs=costs.of_config, info=info)


def _span(supernet: Any, relaxed: RelaxedSupernet, costs: RelaxedCosts, data: Any,
          settings: ParetoSetSettings) -> dict[str, list[float]]:
    """The best and worst value of each objective over the extremes: task loss of the
    largest and smallest sub-network (a few training batches), their latency and size."""
    batches = list(itertools.islice(epoch_batches(data.train, settings.batch_size,
                                                  settings.seed + 7, 0), REFERENCE_BATCHES))
    device = next(supernet.model.parameters()).device
    values = {}
    for which, config in (("largest", supernet.largest()), ("smallest", supernet.smallest())):
        weights = one_hot(supernet.space, config)
        with torch.no_grad():
            task = np.mean([float(F.cross_entropy(relaxed(x.to(device), weights), y.to(device)))
                            for x, y in batches])
        c = costs.of_config(config)
        values[which] = [task, c["latency_ms"], c["size_bytes"]]
    ideal = [values["largest"][0], values["smallest"][1], values["smallest"][2]]
    nadir = [values["smallest"][0], values["largest"][1], values["largest"][2]]
    if any(n <= i for i, n in zip(ideal, nadir, strict=True)):
        raise ConfigError(f"the largest and smallest sub-networks do not span a trade-off "
                          f"(task loss, latency, size: best {ideal}, worst {nadir}); train the "
                          f"supernet longer")
    return {"ideal": ideal, "nadir": nadir}


def _step(model: PreferenceModel, optimizer: torch.optim.Optimizer, relaxed: RelaxedSupernet,
          costs: RelaxedCosts, span: Mapping[str, list[float]], names: list[str],
          settings: ParetoSetSettings, x: torch.Tensor, y: torch.Tensor,
          prefs: torch.Tensor, gen: torch.Generator) -> np.ndarray:
    """One Adam step over the preferences ``prefs``; returns the mean scaled (task loss,
    latency, size) of their samples."""
    ideal, width = np.array(span["ideal"]), np.array(span["nadir"]) - np.array(span["ideal"])
    params = list(model.parameters())
    total: list[torch.Tensor | None] = [None] * len(params)
    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen)))
    seen = []
    for p in prefs:
        logits = model(p[None].to(x.device))
        weights = {name: straight_through_sample(lg[0], settings.temperature, gen)
                   for name, lg in zip(names, logits, strict=True)}
        task = F.cross_entropy(relaxed(x, weights), y)
        cost = costs(weights)
        raw = [task, cost["latency_ms"], cost["size_bytes"]]
        objectives = [(o - float(z)) / float(w) for o, z, w in zip(raw, ideal, width,
                                                                   strict=True)]
        grads = [torch.autograd.grad(o, params, retain_graph=True, allow_unused=True)
                 for o in objectives]
        values = np.array([float(o.detach()) for o in objectives])
        w = direction_weights(settings.solver, gram(grads), values, p.double().numpy(), rng,
                              settings.solver_options)
        for i, g in enumerate(combined(grads, w)):
            if g is not None:
                total[i] = g / len(prefs) if total[i] is None else total[i] + g / len(prefs)
        seen.append(values)
    if not all(g is None or bool(torch.isfinite(g).all()) for g in total):
        raise FloatingPointError("a Pareto set training step produced a non-finite gradient "
                                 "(the last checkpoint is intact)")
    optimizer.zero_grad(set_to_none=True)
    for param, g in zip(params, total, strict=True):
        param.grad = g
    optimizer.step()
    return np.mean(seen, axis=0)


def _batches(dataset: Any, settings: ParetoSetSettings, step: int, per_epoch: int):
    """Training batches from step ``step`` on, epoch after epoch (resumable)."""
    epoch, skip = divmod(step, per_epoch)
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
