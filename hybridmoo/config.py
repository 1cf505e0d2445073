"""Run configs: what to search and how, from a YAML file (``hybridmoo search --config``) or a dict.

A run config is a mapping with these keys (only ``space`` is always required)::

    space: nas-bench-graph          # a registered problem name (``hybridmoo problems``), or
                                    # "module:attribute" naming a SearchSpace or a Problem, or
                                    # an inline mapping of dimensions:
                                    #   {op: {choice: [a, b]}, depth: {int_range: [1, 4]}}
                                    #   (a plain list is short for {choice: [...]})
    problem_options: {dataset: cora}  # keyword options of a registered problem
    evaluate: my_module:evaluate    # "module:attribute"; required unless space gives a Problem
                                    # (when both are given, this one replaces the problem's)
    objectives:                     # optional when the problem has its own: then it may
      - {name: error, direction: min, unit: ""}   # also be a list of names to pick among them
    constraints:                    # values returned by evaluate that must stay within bounds
      - {name: latency, max: 0.01}
    algorithm: nsga2                # a registered engine (``hybridmoo algorithms``)
    algorithm_options: {pop_size: 20}
    max_evals: 100                  # unique configs to evaluate
    seed: 0
    run_dir: runs/my-run            # where the journal goes; relative to the YAML file
    backend: local                  # or ray: evaluator actors on a Ray cluster
    workers: 1
    ray: {address: auto, num_cpus: 1, num_gpus: 0.25, timeout_s: 600, max_retries: 2}
                                    # Ray backend options, all optional: address empty =
                                    # RAY_ADDRESS if set, else a private local cluster on
                                    # 127.0.0.1; num_cpus/num_gpus per evaluator actor
    reference: {error: [0.0, 1.0]}  # fixed [best, worst] per objective for the hypervolume

Modules named by ``module:attribute`` are imported with the YAML file's directory placed first
on ``sys.path`` (only while the config is resolved), so a ``my_module.py`` next to the YAML file
is found; a module of the same name imported earlier from elsewhere is replaced by that file.

Every mistake raises :class:`~hybridmoo.errors.ConfigError` with one line that names the file
and the key, e.g. ``run.yaml: unknown key 'max_eval' (did you mean 'max_evals'?)``.
This module imports no heavy library; the search itself is imported by :meth:`RunConfig.run`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hybridmoo.errors import ConfigError, one_line
from hybridmoo.loading import did_you_mean, read_yaml_file, resolve, unknown_name
from hybridmoo.objectives import DIRECTIONS, Constraint, Objective
from hybridmoo.space import SearchSpace

if TYPE_CHECKING:
    from hybridmoo.problems import Problem
    from hybridmoo.search import SearchResult

__all__ = ["KEYS", "RunConfig", "load_run_config", "read_config_file"]

KEYS = ("space", "problem_options", "evaluate", "objectives", "constraints", "algorithm",
        "algorithm_options", "max_evals", "seed", "run_dir", "backend", "workers", "reference",
        "ray")
OBJECTIVE_KEYS = ("name", "direction", "unit")
CONSTRAINT_KEYS = ("name", "max", "min")


def _default_algorithm() -> str:
    from hybridmoo.proposers import DEFAULT_ALGORITHM

    return DEFAULT_ALGORITHM


@dataclass
class RunConfig:
    """A resolved, validated run: everything :func:`hybridmoo.search` needs."""

    space: SearchSpace
    evaluate: Callable[[dict[str, Any]], Mapping[str, Any]]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()
    algorithm: str = field(default_factory=_default_algorithm)
    algorithm_options: dict[str, Any] = field(default_factory=dict)
    max_evals: int = 100
    seed: int = 0
    run_dir: Path | None = None
    backend: str = "local"
    workers: int = 1
    reference: dict[str, tuple[float, float]] | None = None
    problem: str | None = None  # the registered name or "module:attribute" the space came from
    source: str = "config"  # where the config was read from (for messages)
    ray: dict[str, Any] = field(default_factory=dict)  # RayBackend options (backend: ray)

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: str | os.PathLike[str] | None = None,
                  source: str = "config") -> RunConfig:
        """Validate and resolve a config mapping. ``base_dir`` anchors relative ``run_dir``
        paths and is searched first for ``module:attribute`` imports (default: the current
        directory for paths, ``sys.path`` only for imports); ``source`` prefixes messages."""
        return ConfigReader(source, Path(base_dir) if base_dir is not None else None).read(data)

    def search_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`hybridmoo.search` for this run."""
        return {"space": self.space, "evaluate": self.evaluate, "objectives": self.objectives,
                "constraints": self.constraints, "algorithm": self.algorithm,
                "algorithm_options": dict(self.algorithm_options), "max_evals": self.max_evals,
                "seed": self.seed, "run_dir": self.run_dir, "backend": self.make_backend(),
                "workers": self.workers, "reference": self.reference}

    def make_backend(self) -> Any:
        """The backend name, or for ``ray`` a RayBackend built with the ``ray`` options."""
        from hybridmoo.backends import backend_for

        return backend_for(self.backend, self.workers, self.ray)

    def run(self, *, resume: bool = False, progress: bool | None = None) -> SearchResult:
        """Run the search this config describes."""
        from hybridmoo.search import search

        return search(**self.search_kwargs(), resume=resume, progress=progress)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping a YAML config file holds; file and YAML problems become one-line errors."""
    source = str(path)
    data = read_yaml_file(path)
    if data is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping with at least 'space'")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys ({', '.join(KEYS[:4])}, ...), "
                          f"got a {type(data).__name__}")
    return data


def load_run_config(path: str | os.PathLike[str],
                    overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config. ``overrides`` (e.g. command-line flags; ``None`` values are
    ignored) replace the file's keys; a relative ``run_dir`` in them is taken as given, one in
    the file is relative to the file's directory; a ``ray`` override is merged into the
    file's ``ray`` options. An ``algorithm`` override that names another
    engine than the file's also drops the file's ``algorithm_options`` (written for that one)."""
    data = read_config_file(path)
    algorithm = (overrides or {}).get("algorithm")
    if algorithm is not None and algorithm != data.get("algorithm", _default_algorithm()):
        data.pop("algorithm_options", None)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "ray" and isinstance(data.get("ray"), Mapping):
            value = {**data["ray"], **value}  # e.g. --ray-address keeps the file's num_gpus
        data[key] = Path(value).absolute() if key == "run_dir" else value
    return RunConfig.from_dict(data, base_dir=Path(path).parent, source=str(path))


class ConfigReader:
    """Checks one config mapping key by key; every failure is one line naming the key.
    :mod:`hybridmoo.pipeline_config` extends it for supernet pipelines."""

    def __init__(self, source: str, base_dir: Path | None) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {one_line(message)}")

    def read(self, data: Any) -> RunConfig:
        if not isinstance(data, Mapping):
            self.fail(f"expected a mapping of keys ({', '.join(KEYS[:4])}, ...), "
                      f"got {type(data).__name__}")
        for key in data:
            if key not in KEYS:
                self.fail(f"unknown key {key!r}{did_you_mean(str(key), KEYS)}; "
                          f"valid keys: {', '.join(KEYS)}")
        max_evals = self.integer(data, "max_evals", 100, minimum=1)
        seed = self.integer(data, "seed", 0, minimum=0)
        workers = self.integer(data, "workers", 1, minimum=1)
        backend = self.backend(data.get("backend", "local"))
        ray = self.ray_options(data.get("ray"), workers)
        algorithm = self.algorithm(data.get("algorithm", _default_algorithm()))
        algorithm_options = self.options(data, "algorithm_options")
        run_dir = self.run_dir(data.get("run_dir"))
        if "space" not in data:
            self.fail("missing required key 'space' (a problem name, 'module:attribute' or a "
                      "mapping of dimensions)")
        space, problem, origin = self.space(data["space"], data)
        evaluate = self.evaluate(data.get("evaluate"), problem)
        objectives = self.objectives(data.get("objectives"), problem)
        constraints = self.constraints(data.get("constraints"))
        reference = self.reference(data.get("reference"), objectives)
        return RunConfig(space, evaluate, objectives, constraints, algorithm, algorithm_options,
                         max_evals, seed, run_dir, backend, workers, reference, origin,
                         self.source, ray)

    # -- scalars ---------------------------------------------------------------------------

    def integer(self, data: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{key} must be an int, got {_show(value)}")
        if value < minimum:
            kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
            self.fail(f"{key} must be {kind}, got {value}")
        return value

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            self.fail(f"{key} must be a non-empty string, got {_show(value)}")
        return value

    def backend(self, value: Any) -> str:
        from hybridmoo.backends import BACKENDS

        value = self.string("backend", value)
        if value not in BACKENDS:
            self.fail(f"backend: unknown backend {value!r}{did_you_mean(value, BACKENDS)}; "
                      f"choose one of: {', '.join(BACKENDS)}")
        if value == "ray":
            from hybridmoo.backends.ray_cluster import require_ray

            require_ray(f"{self.source}: backend: ray")
        return value

    def ray_options(self, value: Any, workers: int) -> dict[str, Any]:
        from hybridmoo.backends import RAY_OPTIONS
        from hybridmoo.backends.ray_backend import check_options

        if value is None:
            return {}
        options = dict(self.record("ray", value, RAY_OPTIONS))
        try:
            check_options(workers=workers, **options)
        except ConfigError as exc:
            self.fail(str(exc))
        return options

    def algorithm(self, value: Any) -> str:
        from hybridmoo.proposers import available

        value = self.string("algorithm", value)
        names = [spec.name for spec in available()]
        if value not in names:
            self.fail(f"algorithm: {unknown_name('algorithm', value, names)}")
        return value

    def options(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(f"{key} must be a mapping of option: value, got {_show(value)}")
        for name in value:
            if not isinstance(name, str) or not name.isidentifier():
                self.fail(f"{key}: option names must be identifiers, got {name!r}")
        return dict(value)

    def run_dir(self, value: Any) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str | os.PathLike) or not str(value):
            self.fail(f"run_dir must be a path, got {_show(value)}")
        path = Path(value).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    # -- what to search --------------------------------------------------------------------

    def space(self, value: Any, data: Mapping[str, Any]
              ) -> tuple[SearchSpace, Problem | None, str | None]:
        from hybridmoo.problems import Problem, available_problems, make_problem

        options = data.get("problem_options")
        names = [spec.name for spec in available_problems()]
        registered = isinstance(value, str) and ":" not in value
        if options is not None and not registered:
            self.fail("problem_options only go with a registered problem name in 'space' "
                      f"({', '.join(names)})")
        if registered:
            if value not in names:
                self.fail(f"space: unknown problem {value!r}{did_you_mean(value, names)}; "
                          f"registered problems: {', '.join(names)} (or give 'module:attribute' "
                          "or a mapping of dimensions)")
            options = self.options(data, "problem_options")
            try:
                problem = make_problem(value, **options)
            except ConfigError as exc:
                self.fail(f"{'problem_options' if options else 'space'}: {exc}")
            return problem.space, problem, value
        if isinstance(value, str):
            obj = self.resolve_target("space", value)
            if isinstance(obj, Problem):
                return obj.space, obj, value
            if isinstance(obj, SearchSpace):
                return obj, None, value
            if isinstance(obj, Mapping):
                return self.inline_space(obj), None, value
            self.fail(f"space: {value!r} is {_show(obj)}, expected a SearchSpace, a Problem "
                      "or a mapping of dimensions")
        if isinstance(value, Mapping):
            return self.inline_space(value), None, None
        if isinstance(value, Problem):  # from_dict called from Python with the objects
            return value.space, value, None
        if isinstance(value, SearchSpace):
            return value, None, None
        self.fail(f"space must be a problem name, 'module:attribute' or a mapping of "
                  f"dimensions, got {_show(value)}")

    def resolve_target(self, key: str, target: str) -> Any:
        """The object ``"module:attribute"`` names; the YAML file's directory is searched first."""
        try:
            return resolve(target, self.base_dir)
        except ConfigError as exc:
            self.fail(f"{key}: {exc}")

    def inline_space(self, dims: Mapping[str, Any]) -> SearchSpace:
        dims = {name: {"choice": spec} if isinstance(spec, list) else spec
                for name, spec in dims.items()}
        try:
            return SearchSpace(dims)
        except ConfigError as exc:
            self.fail(f"space: {exc}")

    def evaluate(self, value: Any, problem: Problem | None
                 ) -> Callable[[dict[str, Any]], Mapping[str, Any]]:
        if value is None:
            if problem is None:
                self.fail("missing required key 'evaluate' ('module:function'; only a Problem "
                          "brings its own)")
            return problem.evaluate
        if callable(value):  # from_dict called from Python with the function itself
            return value
        if not isinstance(value, str):
            self.fail(f"evaluate must be 'module:function', got {_show(value)}")
        fn = self.resolve_target("evaluate", value)
        if not callable(fn):
            self.fail(f"evaluate: {value!r} is {_show(fn)}, not a function")
        return fn

    def objectives(self, value: Any, problem: Problem | None) -> tuple[Objective, ...]:
        own = {o.name: o for o in problem.objectives} if problem is not None else {}
        if value is None:
            if problem is None:
                self.fail("missing required key 'objectives' (a list of {name, direction, unit})")
            return problem.objectives
        if not isinstance(value, list) or not value:
            self.fail(f"objectives must be a non-empty list, got {_show(value)}")
        objectives = []
        for i, item in enumerate(value):
            key = f"objectives[{i}]"
            if isinstance(item, Objective):
                objectives.append(item)
                continue
            if isinstance(item, str):
                if item not in own:
                    if problem is None:
                        self.fail(f"{key}: a bare name ({item!r}) only picks among a problem's "
                                  "objectives; write {name: ..., direction: min|max}")
                    self.fail(f"{key}: the problem has no objective {item!r}"
                              f"{did_you_mean(item, own)}; it has {', '.join(own)}")
                objectives.append(own[item])
                continue
            fields = self.record(key, item, OBJECTIVE_KEYS)
            name = self.string(f"{key}.name", fields.get("name"))
            base = own.get(name, Objective(name))
            direction = fields.get("direction", base.direction)
            if direction not in DIRECTIONS:
                self.fail(f"{key}.direction must be 'min' or 'max', got {_show(direction)}")
            unit = fields.get("unit", base.unit)
            if not isinstance(unit, str):
                self.fail(f"{key}.unit must be a string, got {_show(unit)}")
            objectives.append(Objective(name, direction, unit))
        self.unique("objectives", [o.name for o in objectives])
        return tuple(objectives)

    def constraints(self, value: Any) -> tuple[Constraint, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(f"constraints must be a list of {{name, max, min}}, got {_show(value)}")
        constraints = []
        for i, item in enumerate(value):
            key = f"constraints[{i}]"
            if isinstance(item, Constraint):
                constraints.append(item)
                continue
            fields = self.record(key, item, CONSTRAINT_KEYS)
            name = self.string(f"{key}.name", fields.get("name"))
            bounds = {b: self.number(f"{key}.{b}", fields[b])
                      for b in ("max", "min") if fields.get(b) is not None}
            constraints.append(Constraint(name, **bounds))
        self.unique("constraints", [c.name for c in constraints])
        return tuple(constraints)

    def reference(self, value: Any, objectives: tuple[Objective, ...]
                  ) -> dict[str, tuple[float, float]] | None:
        if value is None:
            return None
        names = [o.name for o in objectives]
        if not isinstance(value, Mapping):
            self.fail(f"reference must map each objective to [best, worst], got {_show(value)}")
        for name in value:
            if name not in names:
                self.fail(f"reference: {name!r} is not an objective{did_you_mean(name, names)}; "
                          f"objectives: {', '.join(names)}")
        missing = [n for n in names if n not in value]
        if missing:
            self.fail(f"reference misses objective(s) {', '.join(missing)}: give [best, worst] "
                      "for every objective")
        reference = {}
        for name in names:
            pair = value[name]
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                self.fail(f"reference.{name} must be [best, worst], got {_show(pair)}")
            best, worst = (self.number(f"reference.{name}", v) for v in pair)
            if best == worst:
                self.fail(f"reference.{name}: best and worst must differ, got {best} twice")
            reference[name] = (best, worst)
        return reference

    # -- helpers ---------------------------------------------------------------------------

    def record(self, key: str, item: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(item, Mapping):
            self.fail(f"{key} must be a mapping with keys {', '.join(allowed)}, got {_show(item)}")
        for k in item:
            if k not in allowed:
                self.fail(f"{key}: unknown key {k!r}{did_you_mean(str(k), allowed)}; "
                          f"valid keys: {', '.join(allowed)}")
        return item

    def number(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            hint = ""
            if isinstance(value, str):
                try:
                    float(value)
                    hint = " (YAML reads numbers like 1e-3 as text: write 1.0e-3)"
                except ValueError:
                    pass
            self.fail(f"{key} must be a number, got {_show(value)}{hint}")
        if not math.isfinite(value):
            self.fail(f"{key} must be a finite number, got {value}")
        return float(value)

    def unique(self, key: str, names: list[str]) -> None:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            self.fail(f"{key}: names must be unique, {', '.join(map(repr, repeated))} repeats")

def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
