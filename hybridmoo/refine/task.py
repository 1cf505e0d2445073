"""The task side of refinement: batches of the training set, the distillation targets, the
task loss, and validation accuracy for decisions.

``data.train`` feeds the refinement steps and BatchNorm / activation calibration,
``data.val`` every decision (checkpoint choice, roll-back); ``data.test`` is never read here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from hybridmoo.data import ImageData, batches_per_epoch, epoch_batches, eval_batches
from hybridmoo.errors import ConfigError
from hybridmoo.quant.calibration import module_device
from hybridmoo.refine.settings import RefineSettings


def task_loss(logits: torch.Tensor, y: torch.Tensor, teacher: nn.Module | None,
              x: torch.Tensor, settings: RefineSettings,
              target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy, mixed with ``distill_weight`` x T^2 KL(teacher || student) at
    temperature T when distilling from ``teacher`` (or from its precomputed logits
    ``target`` on ``x``)."""
    loss = F.cross_entropy(logits, y)
    if (teacher is None and target is None) or not settings.distill \
            or settings.distill_weight == 0:
        return loss
    if target is None:
        with torch.no_grad():
            target = teacher(x)
    t = settings.distill_temperature
    kd = F.kl_div(F.log_softmax(logits / t, dim=-1), F.softmax(target / t, dim=-1),
                  reduction="batchmean") * t * t
    return (1 - settings.distill_weight) * loss + settings.distill_weight * kd


def train_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` with its BatchNorm layers in training mode (batch statistics, running ones
    updated) and back in eval mode afterwards; the rest of the network stays as it is."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.train(True)
    try:
        return net(x)
    finally:
        for m in norms:
            m.train(False)


def unpack(batch: Sequence[torch.Tensor], device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, y, teacher logits or None) on ``device``."""
    x, y = batch[0].to(device), batch[1].to(device)
    return x, y, batch[2].to(device) if len(batch) > 2 else None


def distill_set(data: ImageData, teacher: nn.Module | torch.Tensor | None) -> Dataset:
    """The training set, with the teacher's logits as a third tensor when they are given."""
    if not isinstance(teacher, torch.Tensor):
        return data.train
    if not isinstance(data.train, TensorDataset) or len(teacher) != len(data.train):
        raise ConfigError(f"teacher logits need an in-memory training set of the same length "
                          f"({len(teacher)} logits for {len(data.train)} examples)")
    return TensorDataset(*data.train.tensors, teacher)


def teacher_logits(teacher: nn.Module, data: ImageData, batch_size: int = 256
                   ) -> torch.Tensor | None:
    """The teacher's logits on every training example, in order (None unless the training set
    is in memory, a TensorDataset): computed once, reused by every refinement."""
    if not isinstance(data.train, TensorDataset):
        return None
    device = module_device(teacher)
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            return torch.cat([teacher(x.to(device)).cpu()
                              for x, _ in eval_batches(data.train, batch_size)])
    finally:
        teacher.train(was_training)


def mean_task_loss(net: nn.Module, batches: list[Any], teacher: nn.Module | None,
                   settings: RefineSettings) -> float:
    """The task loss averaged over ``batches`` (no gradient)."""
    device = module_device(net)
    values = []
    with torch.no_grad():
        for batch in batches:
            x, y, target = unpack(batch, device)
            values.append(float(task_loss(net(x), y, teacher, x, settings, target)))
    return float(sum(values) / max(len(values), 1))


def calibration_batches(data: ImageData, settings: RefineSettings) -> list[Any]:
    """The training batches BatchNorm and activation ranges are recalibrated on (never
    augmented: :meth:`~hybridmoo.data.ImageData.calibration_set`)."""
    batches = first_batches(data.calibration_set(), settings)
    if not batches:
        raise ConfigError(f"refine batch_size {settings.batch_size} exceeds the "
                          f"{len(data.train)} training examples")
    return batches


def first_batches(train: Dataset, settings: RefineSettings) -> list[Any]:
    """The calibration batches' examples from ``train`` (with its every tensor)."""
    return list(itertools.islice(
        epoch_batches(train, settings.batch_size, settings.seed + 1, 0), settings.calib_batches))


def training_batches(train: Dataset, settings: RefineSettings
                     ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled batches of ``train``, epoch after epoch."""
    if batches_per_epoch(train, settings.batch_size) == 0:
        raise ConfigError(f"refine batch_size {settings.batch_size} exceeds the "
                          f"{len(train)} training examples")
    for epoch in itertools.count():
        yield from epoch_batches(train, settings.batch_size, settings.seed, epoch)


def decision_set(data: ImageData, settings: RefineSettings) -> Dataset:
    """The validation examples decisions are made on: the first ``val_examples`` (all when 0
    or when there are fewer)."""
    n = len(data.val)  # type: ignore[arg-type]
    if settings.val_examples == 0 or settings.val_examples >= n:
        return data.val
    if isinstance(data.val, TensorDataset):
        return TensorDataset(*(t[:settings.val_examples] for t in data.val.tensors))
    return Subset(data.val, range(settings.val_examples))


@torch.no_grad()
def val_accuracy(net: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy (a fraction) of ``net`` in eval mode; its mode is restored."""
    device = module_device(net)
    was_training = net.training
    net.eval()
    correct = total = 0
    try:
        for x, y in eval_batches(dataset, batch_size):
            pred = net(x.to(device)).argmax(-1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
    finally:
        net.train(was_training)
    return correct / max(total, 1)
