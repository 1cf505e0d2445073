"""The built-in data sets, held in memory as tensors: scikit-learn's digits and Fashion-MNIST
(read from its IDX files, :func:`read_idx`); see :mod:`hybridmoo.data` for their splits."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hybridmoo.data.batches import AugmentedTensors
from hybridmoo.data.splits import SPLIT_SEED, ImageData, _holdout
from hybridmoo.errors import ConfigError

FRACTIONS = (0.6, 0.2, 0.2)
DIGITS_MEAN, DIGITS_STD = 0.5, 0.5
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.28604, 0.35302
FASHION_MNIST_VAL_FRACTION = 0.1  # of each class of the training images: 600 of 6,000
CROP_PAD_FRACTION = 1 / 8  # built-in augmentation: padding of the random crop (4 px at 32)


def digits(image_size: int = 32, *, mean: float = DIGITS_MEAN, std: float = DIGITS_STD,
           augment: bool = False) -> ImageData:
    """The built-in digits split, upsampled to ``image_size`` x ``image_size``, normalised
    with ``mean`` / ``std``; ``augment``: random crops (no flips) of the training images."""
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
    images = (images.repeat(1, 3, 1, 1) - mean) / std
    labels = torch.tensor(y, dtype=torch.long)

    def part(i: Any) -> TensorDataset:
        index = torch.as_tensor(i)
        return TensorDataset(images[index], labels[index])

    return _in_memory(part(train), part(val), part(test), 10, augment=augment, flip=False,
                      fill=-mean / std)


def fashion_mnist(image_size: int = 32, root: str | Path | None = None, *,
                  mean: float = FASHION_MNIST_MEAN, std: float = FASHION_MNIST_STD,
                  augment: bool = False) -> ImageData:
    """Fashion-MNIST from the IDX files in ``root`` (default :data:`FASHION_MNIST_ROOT`),
    split and resized as :mod:`hybridmoo.data` says, normalised with ``mean`` / ``std``;
    ``augment``: random crops and horizontal flips of the training images.

    Memory: each split is held as one float32 grey channel at ``image_size`` and shown as 3
    channels by a stride-0 view (``expand``), so the three splits take 70,000 x size^2 x 4
    bytes (287 MB at 32 px, 220 MB at 28 px) instead of 3x that; a batch (indexed or sliced
    by :func:`epoch_batches` / :func:`eval_batches`) is an ordinary 3-channel tensor."""
    root = Path(root) if root is not None else Path(FASHION_MNIST_ROOT)
    (x_train, y_train), (x_test, y_test) = (
        _idx_pair(root, *FASHION_MNIST_FILES[split]) for split in ("train", "test"))
    classes = int(max(y_train.max(), y_test.max())) + 1
    val = _holdout(y_train, len(y_train), FASHION_MNIST_VAL_FRACTION)
    is_val = np.zeros(len(y_train), dtype=bool)
    is_val[val] = True

    def part(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        images = _grey_to_tensor(x, image_size, mean, std)
        return TensorDataset(images.expand(-1, 3, -1, -1), torch.from_numpy(y.astype(np.int64)))

    return _in_memory(part(x_train[~is_val], y_train[~is_val]),
                      part(x_train[is_val], y_train[is_val]), part(x_test, y_test), classes,
                      augment=augment, flip=True, fill=-mean / std)


def _in_memory(train: TensorDataset, val: TensorDataset, test: TensorDataset, classes: int, *,
               augment: bool, flip: bool, fill: float) -> ImageData:
    """ImageData of in-memory splits; with ``augment`` the training set augments
    (:class:`AugmentedTensors`) and calibration uses it plain."""
    if not augment:
        return ImageData(train, val, test, num_classes=classes)
    size = int(train.tensors[0].shape[-1])
    pad = max(1, round(size * CROP_PAD_FRACTION))
    return ImageData(AugmentedTensors(train, pad=pad, flip=flip, fill=fill), val, test,
                     num_classes=classes, calib=train)


def read_idx(path: str | Path) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped when its name ends in ``.gz``): a 4-byte magic
    (0, 0, dtype code 0x08, number of dimensions), big-endian uint32 sizes, then the bytes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(f"{path}: cannot read the IDX file: {exc}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise ConfigError(f"{path}: not an IDX file of unsigned bytes (magic "
                          f"{raw[:4].hex() or 'missing'}, expected 000008 then 01..04)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ConfigError(f"{path}: the IDX header is cut short ({len(raw)} bytes)")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ConfigError(f"{path}: the IDX sizes {shape} need {size} bytes of data, the file "
                          f"holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_pair(root: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The (N, H, W) images and (N,) labels of one Fashion-MNIST split in ``root``."""
    images, labels = (read_idx(_idx_file(root, name)) for name in (images_name, labels_name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ConfigError(f"{root}: {images_name} holds {images.shape} and {labels_name} "
                          f"{labels.shape}: expected N images and N labels")
    return images, labels


def _idx_file(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"fashion-mnist: no {name}(.gz) in {root}: install Debian's package "
                      f"{FASHION_MNIST_PACKAGE} (apt-get install {FASHION_MNIST_PACKAGE}) or "
                      "set data: {name: fashion-mnist, root: DIR} to a folder holding the four "
                      "IDX files")


def _grey_to_tensor(images: np.ndarray, size: int, mean: float, std: float,
                    chunk: int = 8192) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, size, size) float32, bilinear-resized and normalised, made
    ``chunk`` images at a time (little memory beyond the result)."""
    n, height, width = images.shape
    out = torch.empty(n, 1, size, size)
    for start in range(0, n, chunk):
        part = torch.from_numpy(images[start:start + chunk].astype(np.float32)).unsqueeze(1)
        part = part.div_(255.0)
        if (height, width) != (size, size):
            part = torch.nn.functional.interpolate(part, size=(size, size), mode="bilinear",
                                                   align_corners=False,
                                                   antialias=size < min(height, width))
        out[start:start + chunk] = part
    return out.sub_(mean).div_(std)
