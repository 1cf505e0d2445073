"""The preference-conditioned model ``h(preference) -> logits per search dimension``, the
queries it answers, and its files (safetensors + JSON, no pickle).

A preference is a point of the simplex over :data:`OBJECTIVES` (task loss, latency, size):
how much each counts. ``config_for(preference)`` is the config of each dimension's largest
logit; ``config_for(latency_ms=...)`` / ``config_for(size_bytes=...)`` turn a cost limit into
the preference that meets it: along the preferences from "task only" to "this cost only",
bisection on the model's own predicted cost of its config finds the first that is within the
limit (the most accurate config the model gives under it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.files import sha256_file, write_atomic
from hybridmoo.pick import NoPointQualifies
from hybridmoo.space import SearchSpace, config_key

OBJECTIVES = ("task", "latency", "size")  # the preference's axes, in this order
COST_OF = {"latency_ms": "latency", "size_bytes": "size"}  # query keyword -> objective
WEIGHTS_FILE, META_FILE = "paretoset.safetensors", "paretoset.json"
FORMAT = 1
BISECTION_STEPS = 20


class PreferenceModel(nn.Module):
    """A small MLP from a preference (m,) to the concatenated logits of every dimension
    (``sizes``: the number of values of each dimension, in the space's order), plus a linear
    map of the preference itself. The linear path gets a gradient that differs with the
    preference from the first step (the MLP's hidden layers only once its output layer has
    grown), so the logits follow the preference before the shared bias saturates them."""

    def __init__(self, sizes: Sequence[int], n_objectives: int = len(OBJECTIVES),
                 hidden: int = 64) -> None:
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        self.n_objectives, self.hidden = int(n_objectives), int(hidden)
        self.body = nn.Sequential(nn.Linear(self.n_objectives, self.hidden), nn.SiLU(),
                                  nn.Linear(self.hidden, self.hidden), nn.SiLU())
        self.head = nn.Linear(self.hidden, sum(self.sizes))
        self.direct = nn.Linear(self.n_objectives, sum(self.sizes), bias=False)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        nn.init.zeros_(self.direct.weight)

    def forward(self, preference: torch.Tensor) -> list[torch.Tensor]:
        """Logits per dimension, each ``(batch, size)``, for preferences ``(batch, m)``."""
        logits = self.head(self.body(preference)) + self.direct(preference)
        return list(torch.split(logits, self.sizes, dim=-1))


class ParetoSet:
    """A trained :class:`PreferenceModel` over a search space, with the cost predictor its
    constraint queries bisect on (``costs``: a function config -> {"latency_ms",
    "size_bytes"}, e.g. :meth:`RelaxedCosts.of_config`; None answers preference queries
    only). ``info``: how it was trained (settings, steps, scales)."""

    def __init__(self, model: PreferenceModel, space: SearchSpace, *,
                 costs: Any = None, info: Mapping[str, Any] | None = None) -> None:
        if model.sizes != [d.size for d in space.dims.values()]:
            raise ConfigError("the preference model does not match the search space")
        self.model = model.eval()
        self.space = space
        self.costs = costs
        self.info = dict(info or {})
        self._cost_cache: dict[str, dict[str, float]] = {}

    def configs_for(self, preferences: Any) -> list[dict[str, Any]]:
        """The config for each row of ``preferences`` ``(n, m)`` (one batched forward)."""
        p = check_preferences(preferences, self.model.n_objectives)
        with torch.no_grad():
            logits = self.model(torch.as_tensor(p, dtype=torch.float32))
        index = torch.stack([lg.argmax(dim=-1) for lg in logits], dim=1).numpy()
        return [self.space.decode(row) for row in index]

    def config_for(self, preference: Any = None, *, latency_ms: float | None = None,
                   size_bytes: float | None = None) -> dict[str, Any]:
        """The config for one preference, or the most accurate one the model gives within
        one cost limit (``latency_ms`` or ``size_bytes``)."""
        limits = {k: v for k, v in (("latency_ms", latency_ms), ("size_bytes", size_bytes))
                  if v is not None}
        if (preference is None) == (not limits) or len(limits) > 1:
            raise ConfigError("ask for a preference, or for one limit: latency_ms=... or "
                              "size_bytes=...")
        if preference is not None:
            return self.configs_for([preference])[0]
        (key, limit), = limits.items()
        return self._within(key, float(limit))

    def predicted(self, config: Mapping[str, Any]) -> dict[str, float]:
        """The cost predictor's latency and size of ``config`` (cached)."""
        if self.costs is None:
            raise ConfigError("this Pareto set has no cost predictor: load it with its "
                              "supernet to answer latency_ms / size_bytes queries")
        key = config_key(config)
        if key not in self._cost_cache:
            self._cost_cache[key] = dict(self.costs(config))
        return self._cost_cache[key]

    def _within(self, key: str, limit: float) -> dict[str, Any]:
        if not np.isfinite(limit) or limit <= 0:
            raise ConfigError(f"{key} must be a positive number, got {limit}")
        axis = OBJECTIVES.index(COST_OF[key])

        def config_at(t: float) -> dict[str, Any]:
            p = np.zeros(self.model.n_objectives)
            p[0], p[axis] = 1.0 - t, t
            return self.config_for(p)

        def cost(t: float) -> float:
            return self.predicted(config_at(t))[key]

        if cost(0.0) <= limit:
            return config_at(0.0)
        if cost(1.0) > limit:
            raise NoPointQualifies(f"no config the model gives has {key} <= {limit:g} (the "
                              f"cheapest it gives: {cost(1.0):g})")
        lo, hi = 0.0, 1.0  # cost(lo) > limit >= cost(hi)
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cost(mid) > limit else (lo, mid)
        return config_at(hi)

    # -- files ----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``paretoset.safetensors`` and ``paretoset.json`` into ``directory``."""
        return save_files(directory, self.model, self.space, self.info)

    @classmethod
    def load(cls, directory: str | Path, costs: Any = None) -> ParetoSet:
        """Read a saved Pareto set (``costs``: the cost predictor for limit queries)."""
        tensors, meta = read_files(directory)
        space = saved_space(meta)
        model = PreferenceModel([d.size for d in space.dims.values()],
                                meta["n_objectives"], meta["hidden"])
        model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items()
                               if k.startswith("model.")})
        return cls(model, space, costs=costs, info=meta.get("info", {}))


def saved_space(meta: Mapping[str, Any]) -> SearchSpace:
    """The search space a saved model's logits follow, its dimensions in their saved order
    (the JSON's keys are sorted)."""
    try:
        dims = meta["space"]
        return SearchSpace({name: dims[name] for name in meta["dim_order"]})
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"a saved Pareto set model has a malformed space: {exc}") from None


def check_preferences(preferences: Any, m: int) -> np.ndarray:
    """Preferences as an ``(n, m)`` array of non-negative rows summing to 1 (a row is scaled
    to sum 1); ConfigError for anything else."""
    p = np.asarray(preferences, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != m or len(p) == 0:
        raise ConfigError(f"a preference has {m} entries ({', '.join(OBJECTIVES[:m])}), "
                          f"got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.sum(axis=1) <= 0):
        raise ConfigError("a preference must be non-negative and not all zero")
    return p / p.sum(axis=1, keepdims=True)


def save_files(directory: str | Path, model: PreferenceModel, space: SearchSpace,
               info: Mapping[str, Any], extra: Mapping[str, torch.Tensor] | None = None
               ) -> Path:
    """The model's tensors (and ``extra`` ones: optimizer state) and a JSON beside them
    holding the space, the model's shape, ``info`` and the tensors' digest; each file is
    written atomically, the JSON last."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    weights = directory / WEIGHTS_FILE
    write_atomic(weights, save(tensors))
    meta = {"format": FORMAT, "space": space.to_json(), "dim_order": list(space.names),
            "n_objectives": model.n_objectives,
            "hidden": model.hidden, "objectives": list(OBJECTIVES[:model.n_objectives]),
            "info": dict(info), "sha256": sha256_file(weights)}
    path = directory / META_FILE
    write_atomic(path, json.dumps(meta, indent=1, sort_keys=True))
    return path


def read_files(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and JSON of a saved Pareto set, checked against each other."""
    from safetensors.torch import load_file

    directory = Path(directory)
    path, weights = directory / META_FILE, directory / WEIGHTS_FILE
    if not path.is_file() or not weights.is_file():
        raise ConfigError(f"{directory}: no Pareto set model ({META_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a Pareto set model: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: unknown Pareto set format {meta.get('format')!r}"
                          if isinstance(meta, dict) else f"{path}: not a Pareto set model")
    if meta.get("sha256") != sha256_file(weights):
        raise ConfigError(f"{weights} does not match {path} (a save was cut short)")
    return load_file(str(weights)), meta
