"""NAS-Bench-Graph as a black-box problem: a table lookup instead of training a GNN.

The PyPI package ``nas-bench-graph`` (Apache-2.0; ``pip install hybridmoo[bench]``) holds, for each
dataset, 26,206 distinct GNN architectures with their measured test accuracy, inference latency
and parameter count. An architecture is a macro ``link`` (which earlier node each of the 4 layers
reads, one of :data:`nas_bench_graph.link_list`) and one operation per layer (``op0..op3``, from
:data:`nas_bench_graph.gnn_list`). Isomorphic configs share one table entry; configs with no
entry (all four ops ``skip``) are invalid and raise ``KeyError`` (the search records a failure).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import Objective
from hybridmoo.problems import Problem
from hybridmoo.space import Choice, SearchSpace

OBJECTIVES: dict[str, Objective] = {
    "error": Objective("error", "min", ""),  # 1 - test accuracy
    "latency": Objective("latency", "min", "s"),
    "params": Objective("params", "min", "M"),
}
N_LAYERS = 4
EXCLUDED_DATASETS = ("proteins",)  # uses its own, smaller op list: not this space


def _bench() -> Any:
    """The ``nas_bench_graph`` module, imported on first use."""
    try:
        import nas_bench_graph
    except ImportError:
        raise ConfigError("problem 'nas-bench-graph' needs the nas-bench-graph package: "
                          "install hybridmoo[bench] (pip install 'hybridmoo[bench]')") from None
    return nas_bench_graph


@functools.lru_cache(maxsize=1)
def datasets() -> tuple[str, ...]:
    """Datasets whose table ships with the installed package (``light/<name>.bench``)."""
    from importlib.resources import files

    light = files(_bench().__name__) / "light"
    names = (p.name.removesuffix(".bench") for p in light.iterdir() if p.name.endswith(".bench"))
    return tuple(sorted(n for n in names if n not in EXCLUDED_DATASETS))


def _check_dataset(dataset: Any) -> str:
    available = datasets()
    if dataset not in available:
        raise ConfigError(f"nas-bench-graph has no dataset {dataset!r}; "
                          f"available: {', '.join(available)}")
    return dataset


@functools.lru_cache(maxsize=16)  # one table per dataset (a few MB each)
def load_table(dataset: str) -> dict[int, dict[str, float]]:
    """The benchmark table of ``dataset``: ``valid_hash -> {perf, latency, para, valid_perf}``.

    ``light_read`` unpickles ``nas_bench_graph/light/<dataset>.bench``. Only files shipped inside
    the installed nas-bench-graph package itself are unpickled here: the dataset name is first
    checked against the files that package holds, and no user-supplied path is ever read.
    """
    _check_dataset(dataset)
    raw = _bench().light_read(dataset)  # unpickles only the package's own light/<dataset>.bench
    return {int(k): {f: float(v) for f, v in entry.items()} for k, entry in raw.items()}


def space() -> SearchSpace:
    """``link`` (index into ``link_list``) and ``op0..op3`` (names from ``gnn_list``);
    isomorphic configs share one canonical form, so each architecture is evaluated once."""
    nb = _bench()
    dims: dict[str, Choice] = {"link": Choice(range(len(nb.link_list)))}
    for i in range(N_LAYERS):
        dims[f"op{i}"] = Choice(nb.gnn_list)
    return SearchSpace(dims, canonicalize=canonical_config)


def canonical_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The first config, in enumeration order, of the architecture ``config`` encodes."""
    return dict(_representatives()[arch_key(config)])


@functools.lru_cache(maxsize=1)
def _representatives() -> dict[int, dict[str, Any]]:
    """Table key -> its first raw config (all 59,049 enumerated once per process, ~1 s)."""
    nb = _bench()
    first: dict[int, dict[str, Any]] = {}
    for link in range(len(nb.link_list)):
        for ops in itertools.product(nb.gnn_list, repeat=N_LAYERS):
            config = {"link": link, **{f"op{i}": op for i, op in enumerate(ops)}}
            first.setdefault(arch_key(config), config)
    return first


def arch_key(config: Mapping[str, Any]) -> int:
    """The table key of a config (isomorphic architectures share one key)."""
    nb = _bench()
    link = list(nb.link_list[int(config["link"])])
    ops = [str(config[f"op{i}"]) for i in range(N_LAYERS)]
    return int(nb.Arch(link, ops).valid_hash())


def _measures(entry: Mapping[str, float]) -> dict[str, float]:
    return {"error": 1.0 - entry["perf"], "latency": entry["latency"], "params": entry["para"],
            "valid_error": 1.0 - entry["valid_perf"]}


@dataclass(frozen=True)
class NasBenchGraphEvaluate:
    """Picklable evaluate: looks the config up in the dataset's table (loaded once per process)."""

    dataset: str = "cora"

    def __call__(self, config: dict[str, Any]) -> dict[str, float]:
        key = arch_key(config)
        entry = load_table(self.dataset).get(key)
        if entry is None:
            ops = [config[f"op{i}"] for i in range(N_LAYERS)]
            raise KeyError(f"nas-bench-graph has no entry for link={config['link']} ops={ops} "
                           f"(hash {key}): an invalid architecture (e.g. every op 'skip')")
        return _measures(entry)


def _objectives(objectives: Any) -> tuple[Objective, ...]:
    names = (objectives,) if isinstance(objectives, str) else objectives
    if not isinstance(names, Sequence) or not names:
        raise ConfigError(f"nas-bench-graph objectives must be a non-empty list of names "
                          f"from {list(OBJECTIVES)}, got {objectives!r}")
    for n in names:
        if n not in OBJECTIVES:
            raise ConfigError(f"nas-bench-graph has no objective {n!r}; choose from "
                              f"{', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"nas-bench-graph objectives must be unique, got {list(names)}")
    return tuple(OBJECTIVES[n] for n in names)


def nas_bench_graph(*, dataset: str = "cora",
                    objectives: Sequence[str] = ("error", "latency")) -> Problem:
    """The NAS-Bench-Graph problem on ``dataset``; ``objectives`` picks among error (1 - test
    accuracy), latency (s) and params (millions). evaluate also returns ``valid_error``."""
    chosen = _objectives(objectives)
    _check_dataset(dataset)
    return Problem(space(), NasBenchGraphEvaluate(dataset), chosen,
                   f"NAS-Bench-Graph on {dataset}: {', '.join(o.name for o in chosen)}")


@functools.lru_cache(maxsize=32)
def _true_front(dataset: str, objectives: tuple[str, ...]) -> np.ndarray:
    from hybridmoo.archive import non_dominated_mask

    chosen = _objectives(objectives)
    table = load_table(_check_dataset(dataset))
    F = np.array([[o.sign * _measures(e)[o.name] for o in chosen] for e in table.values()])
    F = np.unique(F, axis=0)  # sorted lexicographically: strong points come first, prune fast
    front = F[non_dominated_mask(F)]
    front.setflags(write=False)
    return front


def true_front(dataset: str = "cora",
               objectives: Sequence[str] = ("error", "latency")) -> np.ndarray:
    """The exact Pareto front over every table entry, in minimisation form (one row per
    distinct non-dominated point, columns in ``objectives`` order); e.g. to normalise the
    hypervolume of a search with ``reference={name: (front min, front max)}``."""
    names = (objectives,) if isinstance(objectives, str) else tuple(objectives)
    return _true_front(dataset, names).copy()
