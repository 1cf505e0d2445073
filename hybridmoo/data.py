"""Image data for supernet training and evaluation. A data source (the ``data`` key of a
training or pipeline config) is one of:

- ``"digits"`` (the built-in default): scikit-learn's bundled ``load_digits`` (1,797 8x8 grey
  images, 10 classes), split once into fixed stratified train / val / test parts (60 / 20 /
  20 %, seed 0), upsampled (bilinear) to ``image_size``, repeated to 3 channels and scaled to
  [-1, 1]. Held in memory as tensors.
- ``{root: folder}``: an image folder read with timm's dataset factory (``train`` and
  ``val`` / ``validation`` sub-folders, one folder per class; ``test`` when present, else the
  validation part), resized and normalised with timm's eval transform. Every image is decoded
  once when the data is made: a corrupt or unreadable one is a :class:`ConfigError` naming it,
  or, with ``skip_corrupt: true``, left out with a logged warning (timm would otherwise
  silently substitute another image).

Batches come in an order fixed by ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import logging
import os
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
BUILTIN = ("digits",)
#: The keys of a data-source mapping and their types (the one list of them): ``root`` an image
#: folder, ``skip_corrupt`` leave its corrupt images out instead of failing.
SOURCE_OPTIONS: dict[str, type] = {"root": str, "skip_corrupt": bool}
SOURCE_HELP = "'digits' or {root: path/to/image/folder, skip_corrupt: false}"

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
    if "root" not in out:
        raise ConfigError(f"{where} needs 'root' (an image folder), got {dict(value)!r}")
    if not out.get("skip_corrupt", False):
        out.pop("skip_corrupt", None)
    return out


def make_data(source: str | Mapping[str, Any], image_size: int) -> ImageData:
    """The data of ``source`` (a built-in name or a mapping; see the module docstring)."""
    source = check_source(source)
    if source == "digits":
        return digits(image_size)
    assert isinstance(source, dict)
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
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False)
