"""Data sources, the ``data`` key of a config: their schema (:func:`check_source`, one
canonical form) and :func:`make_data`, which makes a source's :class:`ImageData` with the
maker of its kind (built-in, image folder or timm dataset)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hybridmoo.data.builtin import digits, fashion_mnist
from hybridmoo.data.folders import image_folder, timm_dataset
from hybridmoo.data.python import is_python_record, python_data_message
from hybridmoo.data.splits import ImageData
from hybridmoo.errors import ConfigError

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


def check_source(value: Any, where: str = "data") -> str | dict[str, Any]:
    """``value`` as a data source (see :mod:`hybridmoo.data`), in its one canonical form: a
    built-in's name when that is all it says, else a mapping without ``skip_corrupt`` /
    ``download`` when false, ``mean`` / ``std`` as floats."""
    from hybridmoo.loading import did_you_mean, unknown_key

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
            raise unknown_key(where, key, SOURCE_OPTIONS)
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
    """The data of ``source`` (a built-in name or a mapping; see :mod:`hybridmoo.data`). Data a
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
