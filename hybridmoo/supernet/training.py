"""Supernet training (InstaTune-style: made while fine-tuning the user's model).

Each step follows the sandwich rule: the largest sub-network learns from the labels, then the
smallest and ``random_subnets`` random ones (all FP32) learn from the largest's softened output
(in-place distillation) or from the labels; their gradients add up before one optimizer step.
The optimizer and the warm-up + cosine schedule are timm's. Sub-networks are evaluated after
BatchNorm recalibration on training batches. A run directory gets a checkpoint every
``save_every`` steps and at the end; ``resume=True`` continues from it with the same batches,
the same sub-networks and the same optimizer state as an uninterrupted run.

A step whose loss or gradients are not finite (NaN / Inf) is rolled back: no optimizer step,
BatchNorm statistics restored; it is logged, counted (``TrainResult.skipped_steps``) and recorded
as a NaN loss. ``MAX_BAD_STEPS`` such steps in a row stop the run with a :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hybridmoo.data import (
    ImageData,
    as_image_data,
    batches_per_epoch,
    check_resumed_source,
    data_record,
    epoch_batches,
    eval_batches,
    make_data,
)
from hybridmoo.errors import ConfigError
from hybridmoo.progress import Progress
from hybridmoo.quant import FakeQuant
from hybridmoo.quant import calibrate as calibrate_quant
from hybridmoo.supernet.bn import recalibrate_bn
from hybridmoo.supernet.checkpoint import META_FILE, read_checkpoint, restore, save_checkpoint
from hybridmoo.supernet.factory import make_supernet
from hybridmoo.supernet.models import CHECKPOINT_SUFFIXES
from hybridmoo.supernet.supernet import Supernet
from hybridmoo.supernet.train_config import TrainConfig

RESUMABLE_CHANGES = ("steps", "save_every", "run_dir")  # keys a resumed run may change
MAX_BAD_STEPS = 3  # non-finite steps in a row that stop the run
# (supernet, this replica's loss, its gradients and loss finite) -> (the loss, the verdict)
# of all replicas, called after the backward passes of a data-parallel step
StepSync = Callable[[Supernet, float, bool], tuple[float, bool]]

log = logging.getLogger("hybridmoo")


@dataclass
class TrainResult:
    """What a training run produced."""

    supernet: Supernet
    data: ImageData
    step: int
    losses: list[float] = field(default_factory=list)  # largest sub-network's loss per step
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    run_dir: Path | None = None
    skipped_steps: int = 0  # steps rolled back for a non-finite loss or gradient


def prepare_training(cfg: TrainConfig, data: Any = None) -> tuple[ImageData, Supernet]:
    """The data and the untrained supernet ``cfg`` names (seeded as training seeds them): every
    check of the model name, the data and the checkpoint happens here, before any file is
    written. ``data``: data from Python (see :func:`hybridmoo.data.as_image_data`) instead of
    ``cfg.data``. :func:`train_supernet` takes the pair as ``prepared``."""
    torch.manual_seed(cfg.seed)
    if data is None:
        images = make_data(cfg.data, cfg.image_size)
    else:
        images = as_image_data(data, num_classes=cfg.num_classes, image_size=cfg.image_size)
    sn = make_supernet(cfg.model, cfg.num_classes or images.num_classes, spec=cfg.spec,
                       image_size=cfg.image_size, checkpoint=cfg.checkpoint)
    return images, sn


def with_python_data(cfg: TrainConfig, data: Any) -> tuple[TrainConfig, ImageData]:
    """``data`` from Python checked (:func:`hybridmoo.data.as_image_data`) and ``cfg`` with
    its record (:func:`hybridmoo.data.data_record`) as ``data``: what a checkpoint (and a
    resumed run's check) keeps of data that has no name."""
    images = as_image_data(data, num_classes=cfg.num_classes, image_size=cfg.image_size)
    return replace(cfg, data=data_record(images)), images


def train_supernet(config: TrainConfig | Mapping[str, Any], *, data: Any = None,
                   device: str = "cpu", resume: bool = False, progress: bool | None = None,
                   stop_at: int | None = None,
                   prepared: tuple[ImageData, Supernet] | None = None) -> TrainResult:
    """Train a supernet as ``config`` says, on ``device`` (cpu, cuda, cuda:N, mps: the model
    and every batch go there); returns it with the validation accuracy of its largest and
    smallest sub-networks (after BatchNorm recalibration). ``data``: data from Python (an
    :class:`~hybridmoo.data.ImageData`, or train / val / test Datasets or DataLoaders, see
    :func:`hybridmoo.data.as_image_data`) instead of ``config``'s ``data``; the checkpoint
    records its sizes and fingerprint, so a resume needs the same data again. ``stop_at`` ends
    this call early at that step (with a checkpoint, no evaluation), as an interruption would;
    the learning-rate schedule still spans ``config.steps``. ``prepared``: what
    :func:`prepare_training` returned for ``config``, when the caller checked it first."""
    from hybridmoo.evaluate.measure import resolve_device

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    if resume and run_dir is None:
        raise ConfigError("resume needs a run_dir")
    if data is not None and prepared is not None:
        raise ConfigError("give train_supernet data or prepared (which holds its data), not "
                          "both")
    target = resolve_device(device)
    images = None
    if data is not None:
        cfg, images = with_python_data(cfg, data)
    elif resume and prepared is None:
        check_resumed_source(_saved_config(run_dir).get("data"), cfg.data)
    data, sn = prepared if prepared is not None else prepare_training(cfg, images)
    sn.to(target)
    teacher = user_teacher(cfg, sn) if cfg.distill else None  # before a resume loads weights
    optimizer, scheduler = _optimizer(sn, cfg)
    rng = np.random.default_rng(cfg.seed)
    step, losses, bad_in_a_row = 0, [], 0
    if resume:
        step, losses = _resume(run_dir, sn, optimizer, rng, cfg)
        scheduler.step_update(step)
    skipped = sum(math.isnan(v) for v in losses)
    per_epoch = batches_per_epoch(data.train, cfg.batch_size)
    if per_epoch == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(data.train)} "
                          "training examples")
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    start = time.monotonic()
    with Progress(cfg.steps, progress, title="train-supernet", start=step) as bar:
        while step < end:
            epoch, skip = divmod(step, per_epoch)
            for x, y in epoch_batches(data.train, cfg.batch_size, cfg.seed, epoch, skip):
                losses.append(sandwich_step(sn, optimizer, x, y, _configs(sn, cfg, rng),
                                            cfg.distill, teacher=teacher))
                step += 1
                bad_in_a_row, skipped = count_bad_step(losses[-1], step, bad_in_a_row, skipped)
                scheduler.step_update(step)
                bar.update(step, f"loss {losses[-1]:.3f}")
                if run_dir and cfg.save_every and step % cfg.save_every == 0:
                    _save(run_dir, sn, optimizer, rng, cfg, step, losses)
                if step >= end:
                    break
    seconds = time.monotonic() - start
    if step < cfg.steps:
        if run_dir:
            _save(run_dir, sn, optimizer, rng, cfg, step, losses)
        return TrainResult(sn, data, step, losses, {}, seconds, run_dir, skipped)
    metrics = {f"{name}_val_accuracy": evaluate_subnet(sn, config, data, cfg)
               for name, config in (("largest", sn.largest()), ("smallest", fp32(sn.smallest())))}
    if run_dir:
        _save(run_dir, sn, optimizer, rng, cfg, step, losses, metrics)
    return TrainResult(sn, data, step, losses, metrics, seconds, run_dir, skipped)


def starts_from_user_weights(cfg: TrainConfig) -> bool:
    """True when the supernet starts from the user's weights: a ``checkpoint``, or a
    checkpoint file as ``model``."""
    return cfg.checkpoint is not None or str(cfg.model).endswith(CHECKPOINT_SUFFIXES)


def user_teacher(cfg: TrainConfig, sn: Supernet) -> torch.nn.Module | None:
    """A frozen copy of the user's model when the supernet starts from the user's weights,
    else None. Taken before training (and before a resume loads the supernet's weights), so
    it is the user's model itself."""
    if not starts_from_user_weights(cfg):
        return None
    return copy.deepcopy(sn.model).eval().requires_grad_(False)


def sandwich_step(sn: Supernet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor, others: list[dict[str, Any]], distill: bool, *,
                  sync: StepSync | None = None, teacher: torch.nn.Module | None = None
                  ) -> float:
    """One optimizer step: the largest sub-network on the labels, each of ``others`` on the
    output of ``teacher`` (the user's model, when given; computed per batch, which costs one
    forward and keeps the step independent of how the data is stored) or else the largest's
    (``distill``), or on the labels. Returns the largest's loss, or NaN when a
    loss or gradient was not finite: then the step is rolled back (no optimizer step, the
    BatchNorm statistics as before). ``sync`` (data-parallel replicas, see
    :mod:`hybridmoo.supernet.distributed`) combines the replicas' gradients, losses and
    verdicts before that decision, so all replicas take it alike."""
    device = next(sn.parameters()).device
    x, y = x.to(device), y.to(device)
    sn.train()
    optimizer.zero_grad(set_to_none=True)
    buffers = {name: b.clone() for name, b in sn.named_buffers()}
    logits = sn(x, sn.largest())
    loss = F.cross_entropy(logits, y)
    loss.backward()
    if teacher is not None and distill and others:
        with torch.no_grad():
            soft = teacher.to(device)(x).softmax(dim=-1)
    else:
        soft = logits.detach().softmax(dim=-1)
    for config in others:
        out = sn(x, config)
        target = soft if distill else y
        F.cross_entropy(out, target).backward()
    value = float(loss.detach())
    grads = [p.grad for p in sn.parameters() if p.grad is not None]
    finite = math.isfinite(value) and (
        not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()))
    if sync is not None:
        value, finite = sync(sn, value, finite)
    if not finite:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in sn.named_buffers():
                b.copy_(buffers[name])
        return math.nan
    optimizer.step()
    return value


def count_bad_step(loss: float, step: int, bad_in_a_row: int, skipped: int) -> tuple[int, int]:
    """Book-keeping after step ``step`` whose loss is ``loss`` (NaN: rolled back): returns the
    new ``(bad_in_a_row, skipped)``; logs a rolled-back step and raises :class:`ConfigError`
    at ``MAX_BAD_STEPS`` of them in a row."""
    if not math.isnan(loss):
        return 0, skipped
    bad_in_a_row, skipped = bad_in_a_row + 1, skipped + 1
    log.warning("training step %d: the loss or a gradient is not finite; the step was rolled "
                "back (%d skipped so far)", step, skipped)
    if bad_in_a_row >= MAX_BAD_STEPS:
        raise ConfigError(f"{MAX_BAD_STEPS} training steps in a row had a non-finite loss or "
                          f"gradient (last: step {step}); check the data for NaN/Inf values or "
                          "lower lr")
    return bad_in_a_row, skipped


@torch.no_grad()
def evaluate_subnet(sn: Supernet, config: Mapping[str, Any], data: ImageData,
                    cfg: TrainConfig, split: str = "val") -> float:
    """Accuracy of the extracted sub-network on ``split`` after BatchNorm recalibration (and
    activation calibration when ``config`` quantizes) on ``cfg.calib_batches`` training
    batches."""
    calib = calibration_batches(data, cfg.batch_size, cfg.seed, cfg.calib_batches)
    return accuracy(prepare_subnet(sn, config, calib), getattr(data, split))


def calibration_batches(data: ImageData, batch_size: int, seed: int,
                        n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``n`` training batches that recalibrate a sub-network before its evaluation (from
    :meth:`~hybridmoo.data.ImageData.calibration_set`: not augmented)."""
    return list(itertools.islice(epoch_batches(data.calibration_set(), batch_size, seed + 1, 0),
                                 n))


@torch.no_grad()
def prepare_subnet(sn: Supernet, config: Mapping[str, Any], calib: list[Any], *,
                   calibrate_supernet: bool = True) -> torch.nn.Module:
    """Sub-network ``config`` extracted, its BatchNorm statistics recalibrated on ``calib``,
    then its FakeQuant input ranges. ``calibrate_supernet=False`` keeps the supernet's
    activation ranges (which extraction needs) when they are already set."""
    if calibrate_supernet and _quantizes_inputs(sn, config):
        sn.calibrate(calib)  # the supernet's ranges, which extraction copies
    net = sn.extract(config)
    recalibrate_bn(net, calib)
    if any(isinstance(m, FakeQuant) for m in net.modules()):
        calibrate_quant(net, calib)  # ranges of this sub-network, after its BN recalibration
    return net


@torch.no_grad()
def accuracy(net: torch.nn.Module, dataset: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy (a fraction) of ``net`` on every example of ``dataset``."""
    device = next(net.parameters()).device
    correct = total = 0
    for x, y in eval_batches(dataset, batch_size):
        correct += int((net(x.to(device)).argmax(-1).cpu() == y).sum())
        total += len(y)
    return correct / max(total, 1)


def _configs(sn: Supernet, cfg: TrainConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    if not cfg.sandwich:
        return []
    return [fp32(sn.smallest()), *(fp32(sn.space.sample(rng))
                                    for _ in range(cfg.random_subnets))]


def fp32(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every bit-width dimension at 32 (quantization off)."""
    return {k: (32 if k.endswith("_bits") else v) for k, v in config.items()}


def _quantizes_inputs(sn: Supernet, config: Mapping[str, Any]) -> bool:
    return any(a < 32 for _, a in sn.plan(config).quant.values())


def _optimizer(sn: Supernet, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    try:
        optimizer = create_optimizer_v2(sn.model, opt=cfg.optimizer, lr=cfg.lr,
                                        weight_decay=cfg.weight_decay)
    except (ValueError, AssertionError) as exc:
        raise ConfigError(f"optimizer {cfg.optimizer!r}: {exc}") from None
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.steps, warmup_t=cfg.warmup_steps,
                                  warmup_lr_init=cfg.lr * 0.01, t_in_epochs=False)
    return optimizer, scheduler


def _save(run_dir: Path, sn: Supernet, optimizer: torch.optim.Optimizer,
          rng: np.random.Generator, cfg: TrainConfig, step: int, losses: list[float],
          metrics: Mapping[str, float] | None = None) -> None:
    meta = {"step": step, "config": cfg.to_dict(), "losses": losses,
            "skipped_steps": sum(math.isnan(v) for v in losses),
            "rng_numpy": rng.bit_generator.state, "metrics": dict(metrics or {})}
    save_checkpoint(run_dir, sn, optimizer=optimizer, meta=meta)


def _saved_config(run_dir: Path) -> dict[str, Any]:
    """The training config a checkpoint in ``run_dir`` recorded ({} when there is none to read:
    :func:`_resume` reports that)."""
    try:
        saved = json.loads((run_dir / META_FILE).read_text()).get("meta", {}).get("config", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _resume(run_dir: Path, sn: Supernet, optimizer: torch.optim.Optimizer,
            rng: np.random.Generator, cfg: TrainConfig) -> tuple[int, list[float]]:
    tensors, info = read_checkpoint(run_dir)
    meta = info.get("meta", {})
    saved = {k: v for k, v in meta.get("config", {}).items() if k not in RESUMABLE_CHANGES}
    current = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
    if saved != current:
        changed = sorted(k for k in current if saved.get(k) != current[k])
        raise ConfigError(f"{run_dir}: cannot resume with a changed config ({', '.join(changed)}"
                          f"); only {', '.join(RESUMABLE_CHANGES)} may change")
    restore(sn, tensors, info, optimizer)
    rng.bit_generator.state = meta["rng_numpy"]
    return int(meta["step"]), [float(v) for v in meta.get("losses", [])]
