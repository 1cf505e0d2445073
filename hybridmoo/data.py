"""Image data for supernet training and evaluation. A data source (the ``data`` key of a
training or pipeline config) is one of:

- ``"digits"`` (the built-in default): scikit-learn's bundled ``load_digits`` (1,797 8x8 grey
  images, 10 classes), split once into fixed stratified train / val / test parts (60 / 20 /
  20 %, seed 0), upsampled (bilinear) to ``image_size``, repeated to 3 channels and scaled to
  [-1, 1]. Held in memory as tensors.
- ``"fashion-mnist"`` or ``{name: fashion-mnist, root: folder}``: Fashion-MNIST (70,000 28x28
  grey images, 10 classes) read from the four IDX files (``.gz`` or not) in ``root``, by
  default ``/usr/share/datasets/fashion-mnist`` (Debian's package ``dataset-fashion-mnist``;
  torchvision's ``FashionMNIST/raw`` folder works too). The 60,000 training images are split
  once into train / val (54,000 / 6,000, 600 per class, seed 0); test is the 10,000 t10k
  images. Resized (bilinear) to ``image_size``, normalised with the dataset's mean / std and
  held in memory as 3-channel tensors (see :func:`fashion_mnist`).
- ``{root: folder}``: an image folder read with timm's dataset factory (``train`` and
  ``val`` / ``validation`` sub-folders, one folder per class; ``test`` when present, else the
  validation part), resized and normalised with timm's eval transform. Every image is decoded
  once when the data is made: a corrupt or unreadable one is a :class:`ConfigError` naming it,
  or, with ``skip_corrupt: true``, left out with a logged warning (timm would otherwise
  silently substitute another image).

Batches come in an order fixed by ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from hybridmoo.errors import ConfigError

log = logging.getLogger("hybridmoo")

SPLIT_SEED = 0
FRACTIONS = (0.6, 0.2, 0.2)

#: The built-in data sets, by the name a config gives them.
BUILTIN = ("digits", "fashion-mnist")
#: The keys of a data-source mapping and their types (the one list of them): ``name`` a
#: built-in, ``root`` a folder (an image folder, or the files of a built-in that reads them),
#: ``skip_corrupt`` leave corrupt images of an image folder out instead of failing.
SOURCE_OPTIONS: dict[str, type] = {"name": str, "root": str, "skip_corrupt": bool}
SOURCE_HELP = ("'digits' or 'fashion-mnist' (built in), {name: fashion-mnist, root: folder} or "
               "{root: path/to/image/folder, skip_corrupt: false}")

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.28604, 0.35302
FASHION_MNIST_VAL_FRACTION = 0.1  # of each class of the training images: 600 of 6,000
SHOWN_CORRUPT = 3  # corrupt images named in an error; the count covers all of them


@dataclass
class ImageData:
    """Train / val / test image datasets yielding ``(image, label)``."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_chans: int = 3


def check_source(value: Any, where: str = "data") -> str | dict[str, Any]:
    """``value`` as a data source (see the module docstring), in its one canonical form: a
    built-in's name when that is all it says, else a mapping without default entries."""
    from hybridmoo.loading import did_you_mean

    if isinstance(value, str) and value in BUILTIN:
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be {SOURCE_HELP}, got {value!r}"
                          f"{did_you_mean(value, BUILTIN) if isinstance(value, str) else ''}")
    out: dict[str, Any] = {}
    for key, option in value.items():
        if key not in SOURCE_OPTIONS:
            raise ConfigError(f"{where}: unknown key {key!r}"
                              f"{did_you_mean(str(key), list(SOURCE_OPTIONS))}; valid keys: "
                              f"{', '.join(SOURCE_OPTIONS)}")
        kind = SOURCE_OPTIONS[key]
        if not isinstance(option, kind) or (kind is str and not option):
            raise ConfigError(f"{where}: {key} must be "
                              f"{'true or false' if kind is bool else 'a non-empty string'}, "
                              f"got {option!r}")
        out[key] = option
    name = out.get("name")
    if name is None:
        if "root" not in out:
            raise ConfigError(f"{where} needs 'root' (an image folder) or 'name' (one of "
                              f"{', '.join(BUILTIN)}), got {dict(value)!r}")
        if not out.get("skip_corrupt", False):
            out.pop("skip_corrupt", None)
        return out
    if name not in BUILTIN:
        raise ConfigError(f"{where}: unknown name {name!r}{did_you_mean(name, BUILTIN)}; "
                          f"built-in data: {', '.join(BUILTIN)}")
    if "skip_corrupt" in out:
        raise ConfigError(f"{where}: skip_corrupt is for image folders, not {name!r}")
    if name == "digits" and "root" in out:
        raise ConfigError(f"{where}: 'digits' is bundled with scikit-learn and takes no root")
    return name if set(out) == {"name"} else out


def make_data(source: str | Mapping[str, Any], image_size: int) -> ImageData:
    """The data of ``source`` (a built-in name or a mapping; see the module docstring)."""
    source = check_source(source)
    if source == "digits":
        return digits(image_size)
    if source == "fashion-mnist":
        return fashion_mnist(image_size)
    assert isinstance(source, dict)
    if source.get("name") == "fashion-mnist":
        return fashion_mnist(image_size, source["root"])
    return image_folder(source["root"], image_size,
                        skip_corrupt=source.get("skip_corrupt", False))


def digits(image_size: int = 32) -> ImageData:
    """The built-in digits split, upsampled to ``image_size`` x ``image_size``."""
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


def fashion_mnist(image_size: int = 32, root: str | Path | None = None) -> ImageData:
    """Fashion-MNIST from the IDX files in ``root`` (default :data:`FASHION_MNIST_ROOT`),
    split and resized as the module docstring says.

    Memory: each split is held as one float32 grey channel at ``image_size`` and shown as 3
    channels by a stride-0 view (``expand``), so the three splits take 70,000 x size^2 x 4
    bytes (287 MB at 32 px, 220 MB at 28 px) instead of 3x that; a batch (indexed or sliced
    by :func:`epoch_batches` / :func:`eval_batches`) is an ordinary 3-channel tensor."""
    root = Path(root) if root is not None else Path(FASHION_MNIST_ROOT)
    (x_train, y_train), (x_test, y_test) = (
        _idx_pair(root, *FASHION_MNIST_FILES[split]) for split in ("train", "test"))
    classes = int(max(y_train.max(), y_test.max())) + 1
    rng = np.random.default_rng(SPLIT_SEED)
    val = np.concatenate([
        rng.permutation(members)[:round(len(members) * FASHION_MNIST_VAL_FRACTION)]
        for members in (np.flatnonzero(y_train == c) for c in range(classes))])
    is_val = np.zeros(len(y_train), dtype=bool)
    is_val[val] = True

    def part(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        images = _grey_to_tensor(x, image_size, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        return TensorDataset(images.expand(-1, 3, -1, -1), torch.from_numpy(y.astype(np.int64)))

    return ImageData(part(x_train[~is_val], y_train[~is_val]),
                     part(x_train[is_val], y_train[is_val]), part(x_test, y_test),
                     num_classes=classes)


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


def image_folder(root: str | Path, image_size: int, *, skip_corrupt: bool = False
                 ) -> ImageData:
    """An ImageFolder-style tree read with ``timm.data.create_dataset``; every image is
    decoded once first (:func:`corrupt_images`): a corrupt one is a :class:`ConfigError`, or
    with ``skip_corrupt`` left out of its split with a logged warning."""
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
    return ImageData(train, val, test, num_classes=classes)


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
        for start in range(0, len(x), batch_size):  # contiguous: x may be an expanded view
            yield x[start:start + batch_size].contiguous(), y[start:start + batch_size]
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False)
