"""Declarative supernet specs (``search_spaces/supernets/*.yaml``): which models a family
serves, where its stages are, and which elastic and quantization choices it offers."""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmoo.errors import ConfigError
from hybridmoo.loading import did_you_mean, load_yaml

GRANULARITIES = ("block", "stage")


@dataclass(frozen=True)
class WidthSpec:
    """Channel-width ratios of the coupled channel groups torch-pruning finds."""

    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    granularity: str = "block"  # inner groups: one ratio per block, or one per stage
    divisor: int = 1  # kept channel counts are multiples of this (or all channels)
    name: str = "width"  # dimension suffix of inner groups ("mlp" for transformer MLPs)
    stream: bool = True  # a ratio per stage for channels shared across blocks (the stream)
    stem: bool = False  # groups before the first stage
    head: bool = False  # groups after the last stage


@dataclass(frozen=True)
class DepthSpec:
    """Per stage, how many of its skippable blocks (the first ones) to keep."""

    min_keep: int = 0


@dataclass(frozen=True)
class HeadsSpec:
    """Attention heads kept, from ceil(min_ratio * heads) to all, per block or globally."""

    min_ratio: float = 0.5
    granularity: str = "block"  # or "global"


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths of weights and of layer inputs, per block or per stage."""

    w_bits: tuple[int, ...] = (4, 8, 32)
    a_bits: tuple[int, ...] = (8, 32)
    granularity: str = "block"


@dataclass(frozen=True)
class SupernetSpec:
    """One model family's elastic space (see ``search_spaces/supernets/README``)."""

    family: str
    models: tuple[str, ...]
    stages: str  # regex (full match) on module names of the stage containers
    attention: str | None = None  # regex of timm Attention modules (head elasticity)
    image_size_arg: bool = False  # timm.create_model takes img_size= for this family
    width: WidthSpec | None = None
    depth: DepthSpec | None = None
    heads: HeadsSpec | None = None
    quant: QuantSpec | None = None
    source: str = "<inline>"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<inline>") -> SupernetSpec:
        """Build and check a spec from plain data (unknown keys are errors)."""
        data = _mapping(data, source)
        _known(data, ("family", "models", "stages", "attention", "image_size_arg", "width",
                      "depth", "heads", "quant"), source)
        for key in ("family", "models", "stages"):
            if key not in data:
                raise ConfigError(f"{source}: missing required key {key!r}")
        models = data["models"]
        if not isinstance(models, list) or not models or not all(
                isinstance(m, str) for m in models):
            raise ConfigError(f"{source}: models must be a non-empty list of names")
        for key in ("stages", "attention"):
            if data.get(key) is not None:
                _regex(data[key], f"{source}: {key}")
        spec = cls(family=str(data["family"]), models=tuple(models), stages=data["stages"],
                   attention=data.get("attention"),
                   image_size_arg=_bool(data.get("image_size_arg", False), source),
                   width=_section(WidthSpec, data.get("width"), f"{source}: width"),
                   depth=_section(DepthSpec, data.get("depth"), f"{source}: depth"),
                   heads=_section(HeadsSpec, data.get("heads"), f"{source}: heads"),
                   quant=_section(QuantSpec, data.get("quant"), f"{source}: quant"),
                   source=source)
        _check(spec)
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` reads back (checkpoints store it)."""
        out: dict[str, Any] = {"family": self.family, "models": list(self.models),
                               "stages": self.stages, "image_size_arg": self.image_size_arg}
        if self.attention is not None:
            out["attention"] = self.attention
        for key in ("width", "depth", "heads", "quant"):
            section = getattr(self, key)
            if section is not None:
                out[key] = {k: list(v) if isinstance(v, tuple) else v
                            for k, v in section.__dict__.items()}
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> SupernetSpec:
        """Load a spec from a YAML file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"supernet spec file {str(path)!r} does not exist")
        return cls.from_dict(load_yaml(path.read_text()), source=str(path))


def spec_files() -> list[Path]:
    """The bundled spec files (package data ``hybridmoo.search_spaces/supernets``, or the
    checkout's ``search_spaces/supernets`` when hybridmoo runs from a source tree)."""
    try:
        root = importlib.resources.files("hybridmoo.search_spaces") / "supernets"
        files = [Path(str(f)) for f in root.iterdir() if f.name.endswith(".yaml")]
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        checkout = Path(__file__).resolve().parents[2] / "search_spaces" / "supernets"
        files = list(checkout.glob("*.yaml"))
    return sorted(files)


def bundled_specs() -> dict[str, SupernetSpec]:
    """Every bundled spec by family name; a model served by two families is an error."""
    specs: dict[str, SupernetSpec] = {}
    owner: dict[str, str] = {}
    for path in spec_files():
        spec = SupernetSpec.from_file(path)
        if spec.family in specs:
            raise ConfigError(f"family {spec.family!r} is defined twice ({path})")
        for model in spec.models:
            if model in owner:
                raise ConfigError(f"model {model!r} is served by both {owner[model]!r} and "
                                  f"{spec.family!r}")
            owner[model] = spec.family
        specs[spec.family] = spec
    return specs


def spec_for_model(name: str | None) -> SupernetSpec:
    """The bundled spec serving the timm model ``name``; a clear error for an unknown one."""
    specs = bundled_specs()
    served = sorted(m for s in specs.values() for m in s.models)
    if name is None:
        raise ConfigError("cannot tell which model family this module belongs to (it carries "
                          "no timm pretrained_cfg); pass spec='path/to/spec.yaml'")
    for spec in specs.values():
        if name in spec.models:
            return spec
    raise ConfigError(f"no supernet spec serves model {name!r}{did_you_mean(name, served)}; "
                      f"known models: {', '.join(served)} (or pass spec='path/to/spec.yaml')")


def _check(spec: SupernetSpec) -> None:
    where = spec.source
    if spec.width is not None:
        w = spec.width
        if not w.ratios or any(not 0 < r <= 1 for r in w.ratios) or 1.0 not in w.ratios:
            raise ConfigError(f"{where}: width.ratios must lie in (0, 1] and include 1.0, "
                              f"got {list(w.ratios)}")
        if w.granularity not in GRANULARITIES:
            raise ConfigError(f"{where}: width.granularity must be one of {GRANULARITIES}")
        if w.divisor < 1:
            raise ConfigError(f"{where}: width.divisor must be >= 1, got {w.divisor}")
    if spec.depth is not None and spec.depth.min_keep < 0:
        raise ConfigError(f"{where}: depth.min_keep must be >= 0, got {spec.depth.min_keep}")
    if spec.heads is not None:
        if not 0 < spec.heads.min_ratio <= 1:
            raise ConfigError(f"{where}: heads.min_ratio must lie in (0, 1]")
        if spec.heads.granularity not in ("block", "global"):
            raise ConfigError(f"{where}: heads.granularity must be 'block' or 'global'")
        if spec.attention is None:
            raise ConfigError(f"{where}: heads needs an 'attention' module pattern")
    if spec.quant is not None:
        q = spec.quant
        if not q.w_bits or not set(q.w_bits) <= {4, 8, 32} or 32 not in q.w_bits:
            raise ConfigError(f"{where}: quant.w_bits must be a subset of [4, 8, 32] with 32")
        if not q.a_bits or not set(q.a_bits) <= {8, 32} or 32 not in q.a_bits:
            raise ConfigError(f"{where}: quant.a_bits must be a subset of [8, 32] with 32")
        if q.granularity not in GRANULARITIES:
            raise ConfigError(f"{where}: quant.granularity must be one of {GRANULARITIES}")


_KINDS = {"ratios": "floats", "w_bits": "ints", "a_bits": "ints", "divisor": "int",
          "min_keep": "int", "min_ratio": "float", "stream": "bool", "stem": "bool",
          "head": "bool", "granularity": "str", "name": "str"}


def _section(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return None
    data = _mapping(data, where)
    _known(data, tuple(cls.__dataclass_fields__), where)
    return cls(**{key: _convert(_KINDS[key], value, f"{where}.{key}")
                  for key, value in data.items()})


def _convert(kind: str, value: Any, where: str) -> Any:
    if kind in ("floats", "ints"):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: expected a non-empty list, got {value!r}")
        items = [_convert(kind[:-1], v, where) for v in value]
        if len(set(items)) != len(items):
            raise ConfigError(f"{where}: values must be unique, got {value!r}")
        return tuple(sorted(items))
    if kind == "bool":
        return _bool(value, where)
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            kind == "int" and not isinstance(value, int)):
        raise ConfigError(f"{where}: expected {'an integer' if kind == 'int' else 'a number'}, "
                          f"got {value!r}")
    return int(value) if kind == "int" else float(value)


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    return data


def _known(data: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(str(key), keys)}")


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _regex(pattern: Any, where: str) -> None:
    if not isinstance(pattern, str):
        raise ConfigError(f"{where}: expected a regular expression string, got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None
