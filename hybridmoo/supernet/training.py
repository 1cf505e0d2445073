"""Supernet training (InstaTune-style: made while fine-tuning the user's model).

Each step follows the sandwich rule: the largest sub-network learns from the labels, then the
smallest and ``random_subnets`` random ones (all FP32) learn from the largest's softened output
(in-place distillation) or from the labels; their gradients add up before one optimizer step.
The optimizer and the warm-up + cosine schedule are timm's. Sub-networks are evaluated after
BatchNorm recalibration on training batches. A run directory gets a checkpoint every
``save_every`` steps and at the end; ``resume=True`` continues from it with the same batches,
the same sub-networks and the same optimizer state as an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hybridmoo.data import ImageData, batches_per_epoch, epoch_batches, eval_batches, make_data
from hybridmoo.errors import ConfigError
from hybridmoo.progress import Progress
from hybridmoo.quant import FakeQuant
from hybridmoo.quant import calibrate as calibrate_quant
from hybridmoo.supernet.bn import recalibrate_bn
from hybridmoo.supernet.checkpoint import read_checkpoint, restore, save_checkpoint
from hybridmoo.supernet.factory import make_supernet
from hybridmoo.supernet.supernet import Supernet
from hybridmoo.supernet.train_config import TrainConfig

RESUMABLE_CHANGES = ("steps", "save_every", "run_dir")  # keys a resumed run may change


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


def train_supernet(config: TrainConfig | Mapping[str, Any], *, resume: bool = False,
                   progress: bool | None = None, stop_at: int | None = None) -> TrainResult:
    """Train a supernet as ``config`` says; returns it with the validation accuracy of its
    largest and smallest sub-networks (after BatchNorm recalibration). ``stop_at`` ends this
    call early at that step (with a checkpoint, no evaluation), as an interruption would; the
    learning-rate schedule still spans ``config.steps``."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    if resume and run_dir is None:
        raise ConfigError("resume needs a run_dir")
    torch.manual_seed(cfg.seed)
    data = make_data(cfg.data, cfg.image_size)
    sn = make_supernet(cfg.model, cfg.num_classes or data.num_classes, spec=cfg.spec,
                       image_size=cfg.image_size, checkpoint=cfg.checkpoint)
    optimizer, scheduler = _optimizer(sn, cfg)
    rng = np.random.default_rng(cfg.seed)
    step, losses = 0, []
    if resume:
        step, losses = _resume(run_dir, sn, optimizer, rng, cfg)
        scheduler.step_update(step)
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
                                            cfg.distill))
                step += 1
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
        return TrainResult(sn, data, step, losses, {}, seconds, run_dir)
    metrics = {f"{name}_val_accuracy": evaluate_subnet(sn, config, data, cfg)
               for name, config in (("largest", sn.largest()), ("smallest", _fp32(sn.smallest())))}
    if run_dir:
        _save(run_dir, sn, optimizer, rng, cfg, step, losses, metrics)
    return TrainResult(sn, data, step, losses, metrics, seconds, run_dir)


def sandwich_step(sn: Supernet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor, others: list[dict[str, Any]], distill: bool) -> float:
    """One optimizer step: the largest sub-network on the labels, each of ``others`` on the
    largest's output (``distill``) or the labels. Returns the largest's loss."""
    device = next(sn.parameters()).device
    x, y = x.to(device), y.to(device)
    sn.train()
    optimizer.zero_grad(set_to_none=True)
    logits = sn(x, sn.largest())
    loss = F.cross_entropy(logits, y)
    loss.backward()
    teacher = logits.detach().softmax(dim=-1)
    for config in others:
        out = sn(x, config)
        target = teacher if distill else y
        F.cross_entropy(out, target).backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate_subnet(sn: Supernet, config: Mapping[str, Any], data: ImageData,
                    cfg: TrainConfig, split: str = "val") -> float:
    """Accuracy of the extracted sub-network on ``split`` after BatchNorm recalibration (and
    activation calibration when ``config`` quantizes) on ``cfg.calib_batches`` training
    batches."""
    calib = list(epoch_batches(data.train, cfg.batch_size, cfg.seed + 1, 0))[:cfg.calib_batches]
    if _quantizes_inputs(sn, config):
        sn.calibrate(calib)  # the supernet's ranges, which extraction copies
    net = sn.extract(config)
    recalibrate_bn(net, calib)
    if any(isinstance(m, FakeQuant) for m in net.modules()):
        calibrate_quant(net, calib)  # ranges of this sub-network, after its BN recalibration
    device = next(net.parameters()).device
    correct = total = 0
    for x, y in eval_batches(getattr(data, split)):
        correct += int((net(x.to(device)).argmax(-1).cpu() == y).sum())
        total += len(y)
    return correct / max(total, 1)


def _configs(sn: Supernet, cfg: TrainConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    if not cfg.sandwich:
        return []
    return [_fp32(sn.smallest()), *(_fp32(sn.space.sample(rng))
                                    for _ in range(cfg.random_subnets))]


def _fp32(config: Mapping[str, Any]) -> dict[str, Any]:
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
            "rng_numpy": rng.bit_generator.state, "metrics": dict(metrics or {})}
    save_checkpoint(run_dir, sn, optimizer=optimizer, meta=meta)


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
