"""Batches: an epoch's shuffled batches fixed by ``(seed, epoch)`` (:func:`epoch_batches`),
every example in order (:func:`eval_batches`), and in-memory training images augmented by
random crops and flips seeded per batch (:class:`AugmentedTensors`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset


class AugmentedTensors(Dataset):
    """In-memory training images (``base``: a TensorDataset of (N, C, H, W) images and labels)
    augmented as they are read: a random H x W crop of the image padded by ``pad`` pixels of
    ``fill`` (the normalised black) on every side and, with ``flip``, a horizontal flip half
    of the time. :func:`epoch_batches` augments a whole batch at once, seeded by (seed, epoch,
    batch); indexing one example draws from torch's global random state."""

    def __init__(self, base: TensorDataset, *, pad: int, flip: bool, fill: float) -> None:
        self.base, self.pad, self.flip, self.fill = base, int(pad), bool(flip), float(fill)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[index]
        return self.augment(x.unsqueeze(0))[0], y

    def batch(self, index: torch.Tensor, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at ``index``, augmented with ``generator``."""
        x, y = self.base.tensors
        return self.augment(x[index], generator), y[index]

    def augment(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """A batch of images ``x`` (N, C, H, W) cropped (and flipped) at random."""
        n, _, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p), value=self.fill)
        top = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        left = torch.randint(0, 2 * p + 1, (n,), generator=generator).tolist()
        out = torch.stack([padded[k, :, top[k]:top[k] + h, left[k]:left[k] + w]
                           for k in range(n)])
        if self.flip:
            mirror = torch.rand(n, generator=generator) < 0.5
            out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
        return out


def epoch_batches(dataset: Dataset, batch_size: int, seed: int, epoch: int,
                  skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled full batches of one epoch (order fixed by ``seed`` and ``epoch``), starting
    after the first ``skip`` batches; the last incomplete batch is dropped. An
    :class:`AugmentedTensors` set's batch ``b`` is augmented with a generator seeded by
    ``(seed, epoch, b)``."""
    n = len(dataset)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen)[skip * batch_size:]
    if isinstance(dataset, TensorDataset):
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            yield tuple(t[index] for t in dataset.tensors)  # type: ignore[misc]
        return
    if isinstance(dataset, AugmentedTensors):
        for batch, start in enumerate(range(0, len(order) - batch_size + 1, batch_size), skip):
            seed_words = np.random.SeedSequence([seed, epoch, batch]).generate_state(2)
            gen = torch.Generator().manual_seed(int(seed_words[0]) << 32 | int(seed_words[1]))
            yield dataset.batch(order[start:start + batch_size], gen)
        return
    yield from DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size,
                          shuffle=False, drop_last=True)


def batches_per_epoch(dataset: Dataset, batch_size: int) -> int:
    """Number of full batches in one epoch."""
    return len(dataset) // batch_size  # type: ignore[arg-type]


def eval_batches(dataset: Dataset, batch_size: int = 256
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every example once, in order."""
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        for start in range(0, len(x), batch_size):  # contiguous: x may be an expanded view
            yield x[start:start + batch_size].contiguous(), y[start:start + batch_size]
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False)
