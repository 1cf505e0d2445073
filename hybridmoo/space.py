"""Search spaces: dimensions, configs, and candidates.

A *config* is a plain ``dict[str, value]``. A :class:`SearchSpace` maps each config to an
integer vector (one index per dimension) and back, which is what the evolutionary engines
operate on. A :class:`Candidate` is a config with a stable key and where it came from.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridmoo.errors import ConfigError

Scalar = str | int | float | bool


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


class Dim(ABC):
    """One dimension of a space: a finite, ordered set of values addressed by index."""

    size: int

    @abstractmethod
    def value(self, index: int) -> Scalar: ...

    @abstractmethod
    def index(self, value: Any) -> int: ...

    def contains(self, value: Any) -> bool:
        try:
            self.index(value)
        except (ValueError, TypeError):
            return False
        return True

    @abstractmethod
    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Choice(Dim):
    """A categorical dimension: one of ``values`` (str, int, float or bool, no duplicates)."""

    values: tuple[Scalar, ...]

    def __init__(self, values: Any) -> None:
        if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
            raise ConfigError(f"Choice needs a list of values, got {values!r}")
        values = tuple(values)
        if not values:
            raise ConfigError("Choice needs at least one value, got an empty list")
        for v in values:
            if not _is_scalar(v):
                raise ConfigError(
                    f"Choice values must be str, int, float or bool, got {v!r} ({type(v).__name__})"
                )
        keys = [_canonical(v) for v in values]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"Choice values must be unique, got {list(values)!r}")
        object.__setattr__(self, "values", values)

    @property
    def size(self) -> int:  # type: ignore[override]
        return len(self.values)

    def value(self, index: int) -> Scalar:
        return self.values[int(index)]

    def index(self, value: Any) -> int:
        key = _canonical(value)
        for i, v in enumerate(self.values):
            if _canonical(v) == key:
                return i
        raise ValueError(f"{value!r} is not one of {list(self.values)!r}")

    def to_json(self) -> dict[str, Any]:
        return {"choice": list(self.values)}


@dataclass(frozen=True)
class IntRange(Dim):
    """An integer dimension ``lo..hi`` with both ends included."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        for name in ("lo", "hi"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ConfigError(f"IntRange {name} must be an int, got {v!r}")
        if self.lo > self.hi:
            raise ConfigError(f"IntRange needs lo <= hi, got lo={self.lo}, hi={self.hi}")
        if self.lo < -(2**63) or self.hi >= 2**63 or int(self.hi) - int(self.lo) + 1 >= 2**63:
            raise ConfigError(f"IntRange needs 64-bit bounds and fewer than 2**63 values, got "
                              f"lo={self.lo}, hi={self.hi}")

    @property
    def size(self) -> int:  # type: ignore[override]
        return int(self.hi) - int(self.lo) + 1

    def value(self, index: int) -> int:
        return int(self.lo) + int(index)

    def index(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{value!r} is not an int")
        if not self.lo <= value <= self.hi:
            raise ValueError(f"{value} is outside {self.lo}..{self.hi}")
        return int(value) - int(self.lo)

    def to_json(self) -> dict[str, Any]:
        return {"int_range": [int(self.lo), int(self.hi)]}


def dim_from_json(spec: Any, name: str = "?") -> Dim:
    """Build a dimension from ``{"choice": [...]}`` or ``{"int_range": [lo, hi]}``."""
    if isinstance(spec, Dim):
        return spec
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(
            f"dimension {name!r}: expected {{choice: [...]}} or {{int_range: [lo, hi]}}, "
            f"got {spec!r}"
        )
    (kind, arg), = spec.items()
    if kind == "choice":
        return Choice(arg)
    if kind == "int_range":
        if not isinstance(arg, list | tuple) or len(arg) != 2:
            raise ConfigError(f"dimension {name!r}: int_range needs [lo, hi], got {arg!r}")
        return IntRange(arg[0], arg[1])
    raise ConfigError(f"dimension {name!r}: unknown kind {kind!r} (use choice or int_range)")


class SearchSpace:
    """A named product of dimensions. Configs are dicts with exactly one value per dimension.

    ``canonicalize`` (optional) maps a config to the representative of the configs that are
    the same network (isomorphic architectures, values of a skipped block's dimensions); the
    search never evaluates two configs with the same canonical form.
    """

    def __init__(self, dims: Mapping[str, Dim | Mapping[str, Any]],
                 canonicalize: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None
                 ) -> None:
        if not isinstance(dims, Mapping):
            raise ConfigError(f"SearchSpace needs a mapping name -> dimension, got {dims!r}")
        if not dims:
            raise ConfigError("the search space is empty: give at least one dimension")
        self.dims: dict[str, Dim] = {}
        for name, dim in dims.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"dimension names must be non-empty strings, got {name!r}")
            self.dims[name] = dim_from_json(dim, name)
        self.names: tuple[str, ...] = tuple(self.dims)
        self._canonicalize = canonicalize
        self.sizes = np.array([d.size for d in self.dims.values()], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dims)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n!r}: {d!r}" for n, d in self.dims.items())
        return f"SearchSpace({{{inner}}})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    @property
    def size(self) -> int:
        """Number of distinct configs (a Python int, exact)."""
        return math.prod(int(s) for s in self.sizes)

    def canonical_key(self, config: Mapping[str, Any]) -> str:
        """Key shared by every config that is the same network as ``config``."""
        if self._canonicalize is None:
            return config_key(config)
        return config_key(self._canonicalize(dict(config)))

    def sample(self, rng: np.random.Generator) -> dict[str, Scalar]:
        """One config drawn uniformly at random."""
        return self.decode(rng.integers(0, self.sizes))

    def sample_spread(self, rng: np.random.Generator) -> dict[str, Scalar]:
        """One config from anywhere between the first and last values: a level ``p ~ U(0, 1)``,
        then each dimension's index ``~ Binomial(size - 1, p)``. Uniform draws of many
        dimensions land near the middle; these cover the whole range (of sizes, when a space
        orders its values by size, as supernet spaces do)."""
        return self.decode(rng.binomial(self.sizes - 1, rng.uniform()))

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """Config -> integer vector (index of each value in its dimension)."""
        self.validate(config)
        return np.array([d.index(config[n]) for n, d in self.dims.items()], dtype=np.int64)

    def decode(self, x: Any) -> dict[str, Scalar]:
        """Integer vector -> config (indices are clipped into range, floats rounded)."""
        x = np.asarray(x)
        if x.shape != (len(self.dims),):
            raise ValueError(f"expected a vector of {len(self.dims)} indices, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.integer):
            x = np.rint(x)  # integer indices stay exact (float64 has 53 bits)
        idx = np.clip(x.astype(np.int64), 0, self.sizes - 1)
        return {n: d.value(int(i)) for (n, d), i in zip(self.dims.items(), idx, strict=True)}

    def contains(self, config: Any) -> bool:
        try:
            self.validate(config)
        except ConfigError:
            return False
        return True

    def validate(self, config: Any) -> None:
        """Raise :class:`ConfigError` naming the first way ``config`` is not in this space."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"a config must be a dict, got {type(config).__name__}")
        missing = [n for n in self.names if n not in config]
        extra = [k for k in config if k not in self.dims]
        if missing:
            raise ConfigError(f"config misses dimension(s) {missing}")
        if extra:
            raise ConfigError(
                f"config has unknown key(s) {extra}; the space has {list(self.names)}")
        for n, d in self.dims.items():
            if not d.contains(config[n]):
                raise ConfigError(f"config[{n!r}] = {config[n]!r} is not in {d.to_json()}")

    def to_json(self) -> dict[str, Any]:
        return {n: d.to_json() for n, d in self.dims.items()}

    @classmethod
    def from_json(cls, spec: Mapping[str, Any]) -> SearchSpace:
        return cls(spec)


def _canonical(value: Any) -> str:
    """JSON text that tells 1, 1.0 and True apart (so Choice([1, True]) stays two values)."""
    return f"{type(value).__name__}:{json.dumps(value)}"


def config_key(config: Mapping[str, Any]) -> str:
    """Stable short hash of a config's canonical JSON."""
    text = json.dumps(
        {k: _to_builtin(v) for k, v in config.items()}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _to_builtin(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


REFINED = "refine"  # origin of a network made by gradient refinement of a survivor
FRONT_TUNED = "front"  # the method of a refined network taken from the front-tuned supernet


@dataclass(frozen=True)
class Candidate:
    """A config to evaluate, with its stable ``key``, its ``origin`` and its parents' keys;
    a refined one also names its refinement ``method`` when it is not the per-survivor one
    (``FRONT_TUNED``: the same config as its parent, with front-tuned weights)."""

    config: dict[str, Any]
    origin: str = "init"
    parents: tuple[str, ...] = ()
    method: str = ""
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        config = {k: _to_builtin(v) for k, v in self.config.items()}
        object.__setattr__(self, "config", config)
        if self.origin == REFINED:
            # a refined network has its own weights: it is not the config's supernet subnet
            ident = {"config": config, "refined_from": list(self.parents)}
            key = config_key({**ident, "method": self.method} if self.method else ident)
        else:
            key = config_key(config)
        object.__setattr__(self, "key", key)

    def __hash__(self) -> int:
        return hash(self.key)

    def to_json(self) -> dict[str, Any]:
        out = {"config": self.config, "origin": self.origin, "parents": list(self.parents)}
        return {**out, "method": self.method} if self.method else out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(dict(data["config"]), data.get("origin", "init"), tuple(data.get("parents", ())),
                   str(data.get("method", "")))
