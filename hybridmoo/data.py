"""Image data for supernet training and evaluation. A data source (the ``data`` key of a
training or pipeline config) is one of:

- ``"digits"`` (the built-in default): scikit-learn's bundled ``load_digits`` (1,797 8x8 grey
  images, 10 classes), split once into fixed stratified train / val / test parts (60 / 20 /
  20 %, seed 0), upsampled (bilinear) to ``image_size``, repeated to 3 channels and normalised
  with mean 0.5, std 0.5 (to [-1, 1]). Held in memory as tensors.
- ``"fashion-mnist"`` or ``{name: fashion-mnist, root: folder}``: Fashion-MNIST (70,000 28x28
  grey images, 10 classes) read from the four IDX files (``.gz`` or not) in ``root``, by
  default ``/usr/share/datasets/fashion-mnist`` (Debian's package ``dataset-fashion-mnist``;
  torchvision's ``FashionMNIST/raw`` folder works too). The 60,000 training images are split
  once into train / val (54,000 / 6,000, 600 per class, seed 0); test is the 10,000 t10k
  images. Resized (bilinear) to ``image_size``, normalised with the dataset's mean / std and
  held in memory as 3-channel tensors (see :func:`fashion_mnist`).
- ``{root: folder}``: an image folder read with timm's dataset factory (``train`` and
  ``val`` / ``validation`` sub-folders, one folder per class; ``test`` when present, else the
  validation part). Every image is decoded once when the data is made: a corrupt or unreadable
  one is a :class:`ConfigError` naming it, or, with ``skip_corrupt: true``, left out with a
  logged warning (timm would otherwise silently substitute another image).
- ``{name: torch/cifar10, root: folder, download: false}``: a map-style dataset of timm's
  factory (``timm.data.create_dataset``): ``torch/`` names (torchvision's cifar10, cifar100,
  mnist, kmnist, fashion_mnist, qmnist, places365, inaturalist, imagenet, image_folder) and
  ``hfds/`` (Hugging Face datasets); the streaming kinds (``hfids/``, ``tfds/``, ``wds/``) give
  no random access and are refused. Its ``train`` split is split once into train / val (10 %
  per class when the dataset lists its labels, else 10 % at random; seed 0) and its
  ``validation`` split (torchvision's test set) is test. ``download: true`` lets timm download
  into ``root``; by default the files must be there.

Every source also takes ``mean`` / ``std`` (the normalisation: one number, or three for the
RGB channels of folders and timm datasets; the built-ins are grey and take one number;
default: the dataset's own, timm's ImageNet mean / std for folders and timm datasets) and
``augment`` (training augmentation). Folders and timm datasets augment by default with timm's
training transform (``create_transform(is_training=True)``: random resized crop, horizontal
flip, colour jitter), the built-ins do not (``augment: true`` crops at random from the image
padded by 1/8 of its size, and flips Fashion-MNIST horizontally; digits are not flipped).
Evaluation, and the BatchNorm / activation calibration of evaluated and exported sub-networks
(:attr:`ImageData.calib`), see the evaluation transform. Built-in augmentation is seeded by
``(seed, epoch, batch)``, so a resumed run sees the same images; timm's transforms draw from
torch's global random state.

Data can also come from Python (:func:`as_image_data`): an :class:`ImageData`, or train / val
/ test ``Dataset``\\ s (or ``DataLoader``\\ s, whose ``.dataset`` is used). A run directory
records such data by :func:`data_record` (sizes and a fingerprint), not by name: resuming or
exporting that run needs the same data passed again.

Batches come in an order fixed by ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import numbers
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset

from hybridmoo.errors import ConfigError, one_line

log = logging.getLogger("hybridmoo")

SPLIT_SEED = 0
FRACTIONS = (0.6, 0.2, 0.2)

#: The built-in data sets, by the name a config gives them.
BUILTIN = ("digits", "fashion-mnist")
#: Prefixes of timm dataset names (``timm.data.create_dataset``) with random access, and of
#: the streaming ones, which training cannot index.
TIMM_PREFIXES = ("torch/", "hfds/")
TIMM_STREAMING = ("hfids/", "tfds/", "wds/")
#: The keys of a data-source mapping, each with what it says (the one list of them).
SOURCE_OPTIONS: dict[str, str] = {
    "name": "a built-in (digits, fashion-mnist) or a timm dataset name (torch/cifar10, ...)",
    "root": "a folder: an image folder, or the files of fashion-mnist or of a timm dataset",
    "skip_corrupt": "image folders: leave corrupt images out instead of failing (bool)",
    "download": "timm datasets: let timm download the data into root (bool)",
    "augment": "training augmentation (bool; default on for folders and timm datasets)",
    "mean": "normalisation mean: a number, or 3 numbers (RGB) for folders and timm datasets",
    "std": "normalisation std (> 0): a number, or 3 numbers for folders and timm datasets",
}
_FLAGS = ("skip_corrupt", "download", "augment")
_NORMS = ("mean", "std")
SOURCE_HELP = ("'digits' or 'fashion-mnist' (built in), {name: fashion-mnist, root: folder}, "
               "{root: path/to/image/folder, skip_corrupt: false} or a timm dataset "
               "{name: torch/cifar10, root: folder, download: false}")

DIGITS_MEAN, DIGITS_STD = 0.5, 0.5
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.28604, 0.35302
FASHION_MNIST_VAL_FRACTION = 0.1  # of each class of the training images: 600 of 6,000
TIMM_VAL_FRACTION = 0.1  # of a timm dataset's training split, held out as val
CROP_PAD_FRACTION = 1 / 8  # built-in augmentation: padding of the random crop (4 px at 32)
SHOWN_CORRUPT = 3  # corrupt images named in an error; the count covers all of them
FINGERPRINT_EXAMPLES = 8  # examples per split a fingerprint of Python data hashes


@dataclass
class ImageData:
    """Train / val / test image datasets yielding ``(image, label)``; ``calib``: the training
    images under the evaluation transform, for BatchNorm / activation calibration (None: the
    training set itself, when it does not augment)."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_chans: int = 3
    calib: Dataset | None = None

    def calibration_set(self) -> Dataset:
        """The dataset calibration batches come from: ``calib``, else ``train``."""
        return self.calib if self.calib is not None else self.train


def check_source(value: Any, where: str = "data") -> str | dict[str, Any]:
    """``value`` as a data source (see the module docstring), in its one canonical form: a
    built-in's name when that is all it says, else a mapping without ``skip_corrupt`` /
    ``download`` when false, ``mean`` / ``std`` as floats."""
    from hybridmoo.loading import did_you_mean

    if isinstance(value, str) and value in BUILTIN:
        return value
    if not isinstance(value, Mapping):
        hint = ""
        if isinstance(value, str):
            hint = (f" (a timm dataset is a mapping: {{name: {value}, root: folder}})"
                    if "/" in value else did_you_mean(value, BUILTIN))
        raise ConfigError(f"{where} must be {SOURCE_HELP}, got {value!r}{hint}")
    if is_python_record(value):
        raise ConfigError(python_data_message(value, where))
    out: dict[str, Any] = {}
    for key, option in value.items():
        if key not in SOURCE_OPTIONS:
            raise ConfigError(f"{where}: unknown key {key!r}"
                              f"{did_you_mean(str(key), list(SOURCE_OPTIONS))}; valid keys: "
                              f"{', '.join(SOURCE_OPTIONS)}")
        out[key] = _check_option(key, option, where)
    name = out.get("name")
    kind = _kind(name, where)
    for key, allowed in (("skip_corrupt", "folder"), ("download", "timm")):
        if key in out and kind != allowed:
            raise ConfigError(f"{where}: {key} is for "
                              f"{'image folders' if allowed == 'folder' else 'timm datasets'}, "
                              f"not {name or 'an image folder'!r}")
        if not out.get(key, True):
            del out[key]
    if kind == "builtin":
        for key in _NORMS:
            if isinstance(out.get(key), list):
                raise ConfigError(f"{where}: {name} is grey: {key} takes one number, got "
                                  f"{out[key]}")
        if name == "digits" and "root" in out:
            raise ConfigError(f"{where}: 'digits' is bundled with scikit-learn and takes no "
                              "root")
        return name if set(out) == {"name"} else out
    if "root" not in out:
        what = "an image folder" if name is None else f"the folder of {name}"
        raise ConfigError(f"{where} needs 'root' ({what}) or 'name' (one of "
                          f"{', '.join(BUILTIN)} or a timm dataset), got {dict(value)!r}")
    return out


def _check_option(key: str, value: Any, where: str) -> Any:
    """One option of a data-source mapping, checked (and numbers made floats)."""
    if key in _FLAGS:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if key in _NORMS:
        many = isinstance(value, list | tuple)
        values = list(value) if many else [value]
        if (many and len(values) != 3) or not all(
                not isinstance(v, bool) and isinstance(v, int | float) and np.isfinite(v)
                and (key == "mean" or v > 0) for v in values):
            raise ConfigError(f"{where}: {key} must be a {'positive ' if key == 'std' else ''}"
                              f"number or a list of 3 of them (RGB), got {value!r}")
        return [float(v) for v in values] if many else float(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _kind(name: str | None, where: str) -> str:
    """The kind of source ``name`` names: "folder" (no name), "builtin" or "timm"."""
    from hybridmoo.loading import did_you_mean

    if name is None:
        return "folder"
    if name in BUILTIN:
        return "builtin"
    if name.lower().startswith(TIMM_STREAMING):
        raise ConfigError(f"{where}: {name!r} is a streaming timm dataset: training needs "
                          f"random access ({', '.join(p + '...' for p in TIMM_PREFIXES)}, an "
                          "image folder, or Python Datasets)")
    if name.lower().startswith(TIMM_PREFIXES):
        return "timm"
    raise ConfigError(f"{where}: unknown name {name!r}{did_you_mean(name, BUILTIN)}; built-in "
                      f"data: {', '.join(BUILTIN)}; timm datasets: "
                      f"{', '.join(p + '...' for p in TIMM_PREFIXES)} (e.g. torch/cifar10)")


def make_data(source: str | Mapping[str, Any], image_size: int) -> ImageData:
    """The data of ``source`` (a built-in name or a mapping; see the module docstring). Data a
    run recorded from Python (:func:`data_record`) is a ConfigError saying to pass it again."""
    source = check_source(source)
    # the options check_source let through for this kind are exactly its maker's keywords
    options = {} if isinstance(source, str) else dict(source)
    name = source if isinstance(source, str) else options.pop("name", None)
    if name == "digits":
        return digits(image_size, **options)
    if name == "fashion-mnist":
        return fashion_mnist(image_size, **options)
    root = options.pop("root")
    if name is None:
        return image_folder(root, image_size, **options)
    return timm_dataset(name, root, image_size, **options)


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
    split and resized as the module docstring says, normalised with ``mean`` / ``std``;
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


def _holdout(labels: Any, n: int, fraction: float) -> np.ndarray:
    """Indices of a fixed ``fraction`` (seed :data:`SPLIT_SEED`) of ``n`` examples: that share
    of each class when ``labels`` (n class indices) are given, else of all at random."""
    rng = np.random.default_rng(SPLIT_SEED)
    if labels is None:
        return rng.permutation(n)[:round(n * fraction)]
    labels = np.asarray(labels)
    return np.concatenate([
        rng.permutation(members)[:round(len(members) * fraction)]
        for members in (np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1))])


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


def image_folder(root: str | Path, image_size: int, *, skip_corrupt: bool = False,
                 augment: bool = True, mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None) -> ImageData:
    """An ImageFolder-style tree read with ``timm.data.create_dataset``; every image is
    decoded once first (:func:`corrupt_images`): a corrupt one is a :class:`ConfigError`, or
    with ``skip_corrupt`` left out of its split with a logged warning. Transforms as
    :func:`timm_transforms` makes them."""
    from timm.data import create_dataset

    root = Path(root)
    if not (root / "train").is_dir():
        raise ConfigError(f"image folder {str(root)!r} needs a 'train' sub-folder "
                          "(and 'val' or 'validation')")

    def split(name: str) -> Dataset:
        return create_dataset("", root=str(root), split=name)

    train, val = split("train"), split("validation")
    test = split("test") if (root / "test").is_dir() else val
    classes = len(getattr(train.reader, "class_to_idx", {})) or None
    if classes is None:
        raise ConfigError(f"image folder {str(root)!r}: no class sub-folders in train/")
    parts = {id(d): d for d in (train, val, test)}
    paths = {key: [Path(p) for p in d.filenames(absolute=True)] for key, d in parts.items()}
    bad = corrupt_images([p for ps in paths.values() for p in ps])
    if bad and not skip_corrupt:
        shown = "; ".join(f"{_relative(p, root)} ({why})" for p, why in bad[:SHOWN_CORRUPT])
        more = f"; and {len(bad) - SHOWN_CORRUPT} more" if len(bad) > SHOWN_CORRUPT else ""
        raise ConfigError(f"image folder {str(root)!r}: {len(bad)} corrupt or unreadable "
                          f"image{'s' if len(bad) > 1 else ''}: {shown}{more}; replace or "
                          "remove them, or set data: {root: ..., skip_corrupt: true} to leave "
                          "them out")
    if bad:
        log.warning("image folder %s: left out %d corrupt or unreadable image%s (skip_corrupt), "
                    "first %s", root, len(bad), "s" if len(bad) > 1 else "",
                    _relative(bad[0][0], root))
        drop = {p for p, _ in bad}
        for key, d in parts.items():
            keep = [i for i, p in enumerate(paths[key]) if p not in drop]
            if not keep:
                raise ConfigError(f"image folder {str(root)!r}: a split has no readable image")
            parts[key] = Subset(d, keep) if len(keep) < len(d) else d
        train, val, test = (parts[id(d)] for d in (train, val, test))
    return _transformed(train, val, test, classes,
                        *timm_transforms(image_size, augment=augment, mean=mean, std=std))


def timm_dataset(name: str, root: str | Path, image_size: int, *, download: bool = False,
                 augment: bool = True, mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None) -> ImageData:
    """The map-style timm dataset ``name`` (``timm.data.create_dataset``, e.g.
    ``torch/cifar10``) in ``root``: its ``train`` split without a fixed
    :data:`TIMM_VAL_FRACTION` as train, that share as val, its ``validation`` split as test.
    ``download``: let timm download it into ``root``. Transforms as :func:`timm_transforms`
    makes them."""
    from timm.data import create_dataset

    def split(which: str) -> Dataset:
        try:
            ds = create_dataset(name, root=str(root), split=which, download=download)
        except (AssertionError, ImportError, OSError, RuntimeError, ValueError) as exc:
            fix = ("; set download: true to let timm download it into root"
                   if isinstance(exc, RuntimeError) and not download else "")
            raise ConfigError(f"data {name!r} in {str(root)!r}: timm cannot make its {which} "
                              f"split: {type(exc).__name__}: {one_line(str(exc))}{fix}"
                              ) from None
        if not hasattr(ds, "__len__") or isinstance(ds, IterableDataset):
            raise ConfigError(f"data {name!r}: timm made a streaming dataset, which training "
                              "cannot index")
        return ds

    whole, test = split("train"), split("validation")
    classes = class_count(whole)
    if classes is None:
        raise ConfigError(f"data {name!r}: cannot tell its number of classes (no classes, "
                          "class_to_idx or targets): pass it from Python with num_classes")
    val = _holdout(getattr(whole, "targets", None), len(whole), TIMM_VAL_FRACTION)
    is_val = np.zeros(len(whole), dtype=bool)
    is_val[val] = True
    train = Subset(whole, np.flatnonzero(~is_val).tolist())
    return _transformed(train, Subset(whole, np.sort(val).tolist()), test, classes,
                        *timm_transforms(image_size, augment=augment, mean=mean, std=std))


def timm_transforms(image_size: int, *, augment: bool = True,
                    mean: float | Sequence[float] | None = None,
                    std: float | Sequence[float] | None = None) -> tuple[Any, Any]:
    """timm's (training transform, evaluation transform) at ``image_size``, normalised with
    ``mean`` / ``std`` (a number or 3; default timm's ImageNet ones). The training transform
    is ``create_transform(is_training=True)`` (random resized crop, flip, colour jitter) with
    ``augment``, else None (training sees the evaluation transform: resize and centre crop)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

    def rgb(value: float | Sequence[float] | None, default: Sequence[float]) -> tuple[float, ...]:
        if value is None:
            return tuple(default)
        return tuple(float(v) for v in value) if isinstance(value, Sequence) else (
            float(value),) * 3

    norm = {"mean": rgb(mean, IMAGENET_DEFAULT_MEAN), "std": rgb(std, IMAGENET_DEFAULT_STD)}
    evaluation = create_transform(input_size=image_size, is_training=False, crop_pct=1.0,
                                  **norm)
    training = create_transform(input_size=image_size, is_training=True, **norm) if augment \
        else None
    return training, evaluation


def _transformed(train: Dataset, val: Dataset, test: Dataset, classes: int,
                 training: Any, evaluation: Any) -> ImageData:
    """ImageData of untransformed splits (PIL images): ``training`` (None: ``evaluation``)
    for train, ``evaluation`` for the rest and for calibration; a test split that is the val
    split stays the same object (it has no test of its own)."""
    plain = Transformed(train, evaluation)
    val_t = Transformed(val, evaluation)
    test_t = val_t if test is val else Transformed(test, evaluation)
    if training is None:
        return ImageData(plain, val_t, test_t, num_classes=classes)
    return ImageData(Transformed(train, training), val_t, test_t, num_classes=classes,
                     calib=plain)


class Transformed(Dataset):
    """``base``'s examples with ``transform`` applied to the image (a PIL image, converted to
    RGB first) and the label as an int."""

    def __init__(self, base: Dataset, transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index][:2]
        if getattr(image, "mode", "RGB") != "RGB":
            image = image.convert("RGB")
        return self.transform(image), int(label)


def class_count(dataset: Any) -> int | None:
    """The number of classes ``dataset`` declares (``classes``, ``class_to_idx``, a timm
    reader's ``class_to_idx``, the largest of ``targets`` or of a TensorDataset's labels, plus
    one), or None."""
    for names in (getattr(dataset, "classes", None), getattr(dataset, "class_to_idx", None),
                  getattr(getattr(dataset, "reader", None), "class_to_idx", None)):
        if isinstance(names, Sequence | Mapping) and len(names) > 0:
            return len(names)
    labels = getattr(dataset, "targets", None)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        labels = dataset.tensors[1]
    if labels is None or len(labels) == 0:
        return None
    try:
        return int(np.asarray(labels).max()) + 1
    except (TypeError, ValueError):
        return None


#: What data from Python may be (:func:`as_image_data`), and its split names.
PYTHON_DATA_HELP = ("an ImageData, a mapping {'train': ..., 'val': ..., 'test': ...} or a tuple "
                    "(train, val[, test]) of map-style Datasets (or DataLoaders of them)")
SPLIT_NAMES = ("train", "val", "test")


def as_image_data(value: Any, *, num_classes: int | None = None,
                  image_size: int | None = None) -> ImageData:
    """Data from Python as checked :class:`ImageData`. ``value``: an ImageData, a mapping with
    keys ``train``, ``val`` and optionally ``test``, or a tuple ``(train, val[, test])`` of
    map-style Datasets whose examples are ``(image, label)``: a float32 C x H x W tensor
    (C = 3, normalised as the model expects) and an int (Python, NumPy, or a 0-d int64
    tensor). A DataLoader stands for its ``.dataset``: its batch size, sampler, collate_fn
    and workers are not used (batches are drawn as for every source). Without ``test`` the
    val split doubles as test (the export then measures no test accuracy of its own).
    ``num_classes``: the model's classes (default: the ImageData's, else what the train set
    declares, see :func:`class_count`); labels must lie below it. ``image_size``: the size
    (H = W) every image must have; a mismatch is a ConfigError, nothing is resized. The first
    example of each split (and every label of a TensorDataset) is checked."""
    if isinstance(value, ImageData):
        splits = {"train": value.train, "val": value.val, "test": value.test}
        classes, in_chans, calib = value.num_classes, value.in_chans, value.calib
    else:
        splits, classes, in_chans, calib = _python_splits(value), None, 3, None
    splits = {name: _map_style(name, d) for name, d in splits.items()}
    splits.setdefault("test", splits["val"])
    if calib is not None:
        calib = _map_style("calib", calib)
    if classes is None:
        classes = num_classes or class_count(splits["train"])
        if classes is None:
            raise ConfigError("data: cannot tell the number of classes of the train split (it "
                              "has no classes, class_to_idx or targets): set num_classes "
                              "(supernet.num_classes in a config) or pass an ImageData")
    checked = {id(d): d for d in (*splits.values(), calib) if d is not None}
    names = {id(d): name for name, d in (("calib", calib), *reversed(splits.items()))}
    for key, d in checked.items():
        _check_examples(names[key], d, image_size, num_classes or classes, in_chans)
    return ImageData(splits["train"], splits["val"], splits["test"], num_classes=classes,
                     in_chans=in_chans, calib=calib)


def _python_splits(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in SPLIT_NAMES]
        missing = [k for k in SPLIT_NAMES[:2] if k not in value]
        if unknown or missing:
            what = (f"unknown split {unknown[0]!r}" if unknown
                    else f"no {' and no '.join(missing)} split")
            raise ConfigError(f"data: {what}; splits: train, val and optionally test")
        return dict(value)
    if isinstance(value, tuple | list) and len(value) in (2, 3):
        return dict(zip(SPLIT_NAMES, value, strict=False))
    got = f"a {type(value).__name__} of {len(value)}" if isinstance(value, tuple | list) else (
        type(value).__name__)
    raise ConfigError(f"data must be {PYTHON_DATA_HELP}, got {got}")


def _map_style(name: str, dataset: Any) -> Any:
    """``dataset`` (a DataLoader's ``.dataset``), checked to be a non-empty map-style one."""
    if isinstance(dataset, DataLoader):
        dataset = dataset.dataset
    if isinstance(dataset, IterableDataset) or not (
            hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ConfigError(f"data: the {name} split must be a map-style Dataset (with __len__ and "
                          f"__getitem__) or a DataLoader of one, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ConfigError(f"data: the {name} split is empty")
    return dataset


def _check_examples(name: str, dataset: Any, image_size: int | None, classes: int,
                    in_chans: int) -> None:
    """ConfigError unless the first example of ``dataset`` (split ``name``) is an image the
    model takes and a label below ``classes``; a TensorDataset's labels are checked whole."""
    where = f"data: the {name} split"
    try:
        example = dataset[0]
    except Exception as exc:  # the user's code: any failure is a bad dataset
        raise ConfigError(f"{where}: its first example cannot be read: {type(exc).__name__}: "
                          f"{one_line(exc)}") from None
    if not isinstance(example, tuple | list) or len(example) != 2:
        got = (f"a {type(example).__name__} of {len(example)}"
               if isinstance(example, tuple | list) else type(example).__name__)
        raise ConfigError(f"{where}: examples must be (image, label) pairs, got {got}")
    image, label = example
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        got = f"shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else (
            type(image).__name__)
        raise ConfigError(f"{where}: an image must be a C x H x W tensor, got {got} (convert "
                          "images with e.g. torchvision's ToTensor and Normalize)")
    if image.dtype != torch.float32:
        raise ConfigError(f"{where}: images must be float32 tensors (normalised), got "
                          f"{image.dtype}")
    c, h, w = image.shape
    if c != in_chans:
        raise ConfigError(f"{where}: images have {c} channel{'s' if c != 1 else ''}, the model "
                          f"takes {in_chans} (repeat grey images: image.expand(3, -1, -1))")
    if image_size is not None and (h, w) != (image_size, image_size):
        fix = f"set image_size: {h}, or resize" if h == w else "resize"
        raise ConfigError(f"{where}: images are {h}x{w} but image_size is {image_size}: {fix} "
                          "them in the Dataset (e.g. torchvision's Resize); data from Python "
                          "is not resized")
    whole = isinstance(dataset, TensorDataset)  # its labels are all at hand: check them all
    labels = dataset.tensors[1] if whole else label
    if isinstance(labels, torch.Tensor):
        if labels.dtype != torch.long or labels.dim() != (1 if whole else 0):
            raise ConfigError(f"{where}: labels must be ints or int64 (torch.long) tensors, "
                              f"got a {labels.dtype} tensor of shape {tuple(labels.shape)}")
        low, high = int(labels.min()), int(labels.max())
    elif isinstance(labels, numbers.Integral) and not isinstance(labels, bool):
        low = high = int(labels)
    else:
        raise ConfigError(f"{where}: labels must be ints (Python, NumPy or a 0-d int64 "
                          f"tensor), got {type(labels).__name__}")
    if low < 0 or high >= classes:
        raise ConfigError(f"{where}: label {low if low < 0 else high} lies outside "
                          f"0..{classes - 1} ({classes} classes; set num_classes)")


def data_record(data: ImageData) -> dict[str, Any]:
    """How a run directory records data from Python, which has no name: ``{"python": true,
    "sizes": [train, val, test], "fingerprint": 16 hex digits}``. The fingerprint (sha256)
    hashes the sizes, the labels of :data:`FINGERPRINT_EXAMPLES` evenly spaced training
    examples (their images may be augmented at random) and the images (to 3 decimals) and
    labels of as many val and test examples."""
    digest = hashlib.sha256()
    sizes = [len(d) for d in (data.train, data.val, data.test)]  # type: ignore[arg-type]
    digest.update(json.dumps(sizes).encode())
    for name, dataset, n in zip(SPLIT_NAMES, (data.train, data.val, data.test), sizes,
                                strict=True):
        for i in sorted(set(np.linspace(0, n - 1, FINGERPRINT_EXAMPLES).round().astype(int))):
            image, label = dataset[int(i)][:2]
            digest.update(f"{name}:{int(label)};".encode())
            if name != "train":
                pixels = torch.as_tensor(image).detach().cpu().double().numpy()
                digest.update((np.round(pixels, 3) + 0.0).tobytes())  # + 0.0: no -0.0
    return {"python": True, "sizes": sizes, "fingerprint": digest.hexdigest()[:16]}


def is_python_record(value: Any) -> bool:
    """True for a :func:`data_record` (data that came from Python)."""
    return isinstance(value, Mapping) and value.get("python") is True


def check_resumed_source(recorded: Any, current: Any) -> None:
    """ConfigError saying to pass the data again when a run recorded data from Python
    (``recorded``) and its resume names other data (``current``, e.g. the config's source):
    a plain comparison would only say the data changed."""
    if is_python_record(recorded) and not is_python_record(current):
        raise ConfigError(python_data_message(recorded))


def python_data_message(record: Mapping[str, Any], where: str = "data") -> str:
    """Why data recorded from Python cannot be rebuilt, and what to do."""
    sizes = record.get("sizes")
    shown = " / ".join(str(n) for n in sizes) if isinstance(sizes, list) else "?"
    return (f"{where}: this run's data came from Python (train / val / test: {shown} examples, "
            f"fingerprint {record.get('fingerprint')}) and cannot be rebuilt from a record: "
            "pass the same data again (run_pipeline(cfg, data=...), train_supernet(cfg, "
            "data=...), export_run(run_dir, data=...))")


def corrupt_images(paths: Sequence[str | Path], threads: int | None = None
                   ) -> list[tuple[Path, str]]:
    """The images among ``paths`` that PIL cannot open and fully decode, each with the
    reason, in the order given. Decoded in ``threads`` threads (PIL decodes outside the GIL;
    default: the CPU count, at most 8); JPEGs at 1/8 scale, which still reads every byte."""
    threads = threads or min(8, os.cpu_count() or 1)
    items = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = list(pool.map(_decode_error, items, chunksize=64))
    return [(p, why) for p, why in zip(items, reasons, strict=True) if why is not None]


def _decode_error(path: Path) -> str | None:
    """Why ``path`` cannot be decoded as timm would (``Image.open(f).convert("RGB")``), or
    ``None`` when it can."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (1, 1))
            image.convert("RGB")
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises SyntaxError for bad headers
        text = str(exc).replace(f"'{path}'", "").replace(str(path), "").strip(" :")
        return text or type(exc).__name__
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


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
