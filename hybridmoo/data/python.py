"""Data from Python: train / val / test Datasets (or DataLoaders, or an ImageData) checked as
:class:`ImageData` (:func:`as_image_data`), and how a run records such data, which has no
name (:func:`data_record`: sizes and a fingerprint)."""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from hybridmoo.data.splits import ImageData, class_count
from hybridmoo.errors import ConfigError, one_line

FINGERPRINT_EXAMPLES = 8  # examples per split a fingerprint of Python data hashes
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
