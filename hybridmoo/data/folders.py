"""Image folders and timm's map-style datasets (``timm.data.create_dataset``, imported when
used), with timm's transforms (training augmentation and evaluation), and the check that
every image of a folder decodes (:func:`corrupt_images`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, IterableDataset, Subset

from hybridmoo.data.splits import ImageData, _holdout, class_count
from hybridmoo.errors import ConfigError, one_line

log = logging.getLogger("hybridmoo")

TIMM_VAL_FRACTION = 0.1  # of a timm dataset's training split, held out as val
SHOWN_CORRUPT = 3  # corrupt images named in an error; the count covers all of them


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
