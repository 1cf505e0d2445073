"""Search engines behind one ask/tell interface, and the registry that names them."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridmoo.loading import check_options, unknown_name
from hybridmoo.objectives import Constraint, Objective
from hybridmoo.proposers.base import BatchProposer, Proposer
from hybridmoo.space import SearchSpace

__all__ = ["DEFAULT_ALGORITHM", "BatchProposer", "EngineSpec", "Proposer", "available",
           "engine_spec", "make_proposer", "register_engine"]


@dataclass(frozen=True)
class EngineSpec:
    """One registered engine: its name, the class that implements it (imported lazily, so an
    unused engine's library is never imported) and the fixed options that select it."""

    name: str
    target: str  # "module:Class"
    library: str
    summary: str
    fixed: dict[str, Any] = field(default_factory=dict)
    black_box: bool = True  # works on any problem (False: needs a model trained for it)

    def load(self) -> type[Proposer]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


_ENGINES: dict[str, EngineSpec] = {}


def register_engine(spec: EngineSpec) -> EngineSpec:
    """Add an engine to the registry (names are unique)."""
    if spec.name in _ENGINES:
        raise ValueError(f"engine {spec.name!r} is already registered")
    _ENGINES[spec.name] = spec
    return spec


def available() -> list[EngineSpec]:
    """Every registered engine, in registration order."""
    return list(_ENGINES.values())


def engine_spec(algorithm: str) -> EngineSpec:
    """The record registered as ``algorithm``."""
    spec = _ENGINES.get(algorithm) if isinstance(algorithm, str) else None
    if spec is None:
        raise unknown_name("algorithm", algorithm, _ENGINES)
    return spec


def make_proposer(algorithm: str, space: SearchSpace, objectives: Sequence[Objective],
                  constraints: Sequence[Constraint] = (), seed: int = 0,
                  **options: Any) -> Proposer:
    """Build the engine registered as ``algorithm`` (see :func:`available`)."""
    spec = engine_spec(algorithm)
    cls = spec.load()
    check_options(f"algorithm {algorithm!r}", options, _option_names(cls) - set(spec.fixed))
    return cls(space, objectives, constraints, seed, **spec.fixed, **options)


def _option_names(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    return {n for n, p in params.items() if p.kind == p.KEYWORD_ONLY}


_P = "hybridmoo.proposers."
for _spec in [
    EngineSpec("random", _P + "random_search:RandomProposer", "numpy",
               "uniform random sampling of unseen configs"),
    EngineSpec("nsga2", _P + "pymoo_engines:PymooProposer", "pymoo", "NSGA-II",
               {"algorithm": "nsga2"}),
    EngineSpec("nsga3", _P + "pymoo_engines:PymooProposer", "pymoo",
               "NSGA-III (reference directions)", {"algorithm": "nsga3"}),
    EngineSpec("agemoea2", _P + "pymoo_engines:PymooProposer", "pymoo", "AGE-MOEA2",
               {"algorithm": "agemoea2"}),
    EngineSpec("smsemoa", _P + "pymoo_engines:PymooProposer", "pymoo",
               "SMS-EMOA (hypervolume selection)", {"algorithm": "smsemoa"}),
    EngineSpec("deap-nsga2", _P + "deap_engines:DeapProposer", "deap", "NSGA-II in DEAP",
               {"selection": "nsga2"}),
    EngineSpec("deap-spea2", _P + "deap_engines:DeapProposer", "deap", "SPEA2 in DEAP",
               {"selection": "spea2"}),
    EngineSpec("optuna-nsga2", _P + "optuna_engines:OptunaProposer", "optuna",
               "Optuna's NSGAIISampler (optional storage URL)", {"sampler": "nsga2"}),
    EngineSpec("optuna-tpe", _P + "optuna_engines:OptunaProposer", "optuna",
               "Optuna's multi-objective TPE (optional storage URL)", {"sampler": "tpe"}),
    EngineSpec("surrogate", _P + "surrogate:SurrogateProposer", "scikit-learn + pymoo",
               "predictor-assisted: surrogates + inner NSGA-II pick each batch"),
    EngineSpec("paretoset", _P + "paretoset_engine:ParetoSetProposer", "torch",
               "the configs a trained Pareto set model gives for random preferences "
               "(option model: its directory)", black_box=False),
]:
    register_engine(_spec)

DEFAULT_ALGORITHM = "surrogate"
