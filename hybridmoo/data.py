"""Image data for supernet training and evaluation.

- ``"digits"`` (the built-in default): scikit-learn's bundled ``load_digits`` (1,797 8x8 grey
  images, 10 classes), split once into fixed stratified train / val / test parts (60 / 20 /
  20 %, seed 0), upsampled (bilinear) to ``image_size``, repeated to 3 channels and scaled to
  [-1, 1]. Held in memory as tensors.
- ``{"root": folder}``: an image folder read with timm's dataset factory (``train`` and
  ``val`` / ``validation`` sub-folders, one folder per class; ``test`` when present, else the
  validation part), resized and normalised with timm's eval transform.

Batches come in an order fixed by ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from hybridmoo.errors import ConfigError

SPLIT_SEED = 0
FRACTIONS = (0.6, 0.2, 0.2)


@dataclass
class ImageData:
    """Train / val / test image datasets yielding ``(image, label)``."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_chans: int = 3


def make_data(source: str | Mapping[str, Any], image_size: int) -> ImageData:
    """``"digits"`` or ``{"root": path}`` (see the module docstring)."""
    if source == "digits":
        return digits(image_size)
    if isinstance(source, Mapping) and set(source) == {"root"}:
        return image_folder(source["root"], image_size)
    raise ConfigError(f"data must be 'digits' or {{root: path/to/image/folder}}, got {source!r}")


def digits(image_size: int = 32) -> ImageData:
    """The built-in digits split, upsampled to ``image_size`` x ``image_size``."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    idx = np.arange(len(y))
    train, rest = train_test_split(idx, train_size=FRACTIONS[0], stratify=y,
                                   random_state=SPLIT_SEED)
    val, test = train_test_split(rest, test_size=FRACTIONS[2] / sum(FRACTIONS[1:]),
                                 stratify=y[rest], random_state=SPLIT_SEED)
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size),
                                             mode="bilinear", align_corners=False)
    images = (images.repeat(1, 3, 1, 1) - 0.5) / 0.5
    labels = torch.tensor(y, dtype=torch.long)

    def part(i: Any) -> TensorDataset:
        index = torch.as_tensor(i)
        return TensorDataset(images[index], labels[index])

    return ImageData(part(train), part(val), part(test), num_classes=10)


def image_folder(root: str | Path, image_size: int) -> ImageData:
    """An ImageFolder-style tree read with ``timm.data.create_dataset``."""
    from timm.data import create_dataset, create_transform

    root = Path(root)
    if not (root / "train").is_dir():
        raise ConfigError(f"image folder {str(root)!r} needs a 'train' sub-folder "
                          "(and 'val' or 'validation')")
    transform = create_transform(input_size=image_size, is_training=False, crop_pct=1.0)

    def split(name: str) -> Dataset:
        return create_dataset("", root=str(root), split=name, transform=transform)

    train, val = split("train"), split("validation")
    test = split("test") if (root / "test").is_dir() else val
    classes = len(getattr(train.reader, "class_to_idx", {})) or None
    if classes is None:
        raise ConfigError(f"image folder {str(root)!r}: no class sub-folders in train/")
    return ImageData(train, val, test, num_classes=classes)


def epoch_batches(dataset: Dataset, batch_size: int, seed: int, epoch: int,
                  skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled full batches of one epoch (order fixed by ``seed`` and ``epoch``), starting
    after the first ``skip`` batches; the last incomplete batch is dropped."""
    n = len(dataset)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen)[skip * batch_size:]
    if isinstance(dataset, TensorDataset):
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            yield tuple(t[index] for t in dataset.tensors)  # type: ignore[misc]
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
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False)
