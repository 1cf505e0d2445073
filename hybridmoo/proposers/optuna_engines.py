"""Optuna's multi-objective samplers (NSGA-II, TPE) behind ask/tell, optionally persisted.

Each candidate is one Optuna trial made by ``study.ask(distributions)``: a ``Choice`` becomes a
``CategoricalDistribution`` of its values, an ``IntRange`` an ``IntDistribution``. Results go
back with ``study.tell``: objective values in the study's directions, constraint values (<= 0
feasible, in the order of ``constraints``) on the trial, a failed evaluation as a FAIL trial.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import Trial, TrialState

from hybridmoo.errors import ConfigError
from hybridmoo.objectives import Constraint, EvalResult, Objective
from hybridmoo.proposers.base import Genome, Proposer, random_unseen
from hybridmoo.space import Candidate, Choice, SearchSpace, config_key

SAMPLERS = ("nsga2", "tpe")
DEFAULT_POPULATION = 20
TPE_STARTUP_TRIALS = 10
REDRAWS = 8  # extra sampler draws per ask() that may repeat known configs before random fill

# Optuna >= 5 keeps constraints on the trial (``Trial.set_constraint``); older versions read
# them through the sampler's ``constraints_func``.
_SET_CONSTRAINT = hasattr(Trial, "set_constraint")



class OptunaProposer(Proposer):
    """Optuna's ``NSGAIISampler`` or multi-objective ``TPESampler`` (``sampler``).

    ``storage=None`` keeps the study in memory. A storage URL (an Optuna RDB URL such as
    ``sqlite:///path/study.db``) persists it under ``study_name`` (default
    ``hybridmoo-{sampler}-seed{seed}``). A study of that name already in the storage is deleted
    first: the study always starts fresh, and a resumed hybridmoo run replays its journal into
    it, so the stored study mirrors the journal. Never point two live runs at the same name.

    The sampler may propose a config it has already been told about; that trial is answered at
    once with the known result (user attribute ``repeat_of``) and the sampler is asked again, a
    few times per ``ask``, before random unseen configs fill the rest, so every candidate
    handed out is new. ``population_size`` applies to ``optuna-nsga2`` only.
    """

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective],
                 constraints: Sequence[Constraint] = (), seed: int = 0, *,
                 sampler: str = "nsga2", storage: str | None = None,
                 study_name: str | None = None,
                 population_size: int = DEFAULT_POPULATION) -> None:
        super().__init__(space, objectives, constraints, seed)
        if sampler not in SAMPLERS:
            raise ConfigError(f"optuna sampler must be one of {SAMPLERS}, got {sampler!r}")
        if (isinstance(population_size, bool) or not isinstance(population_size, int)
                or population_size < 2):
            raise ConfigError(f"population_size must be an int >= 2, got {population_size!r}")
        if sampler != "nsga2" and population_size != DEFAULT_POPULATION:
            raise ConfigError(f"population_size applies to optuna-nsga2 only, not optuna-{sampler}")
        if storage is not None and not isinstance(storage, str):
            raise ConfigError(f"storage must be a database URL string, got {storage!r}")
        if study_name is not None and (not isinstance(study_name, str) or not study_name):
            raise ConfigError(f"study_name must be a non-empty string, got {study_name!r}")
        self.name = f"optuna-{sampler}"
        self.sampler = sampler
        self.study_name = study_name or f"hybridmoo-{sampler}-seed{self.seed}"
        self._coders = [_Coder(d) for d in space.dims.values()]
        self._distributions = {n: c.distribution for n, c in zip(space.names, self._coders,
                                                                 strict=True)}
        self._startup = min(population_size, space.size) if sampler == "nsga2" \
            else TPE_STARTUP_TRIALS
        self._pending: dict[str, list[Trial]] = {}  # handed-out key -> trials awaiting it
        self._told: dict[str, EvalResult] = {}
        self._seen: set[Genome] = set()
        self._n_ok = 0
        with _quiet():
            self.study = optuna.create_study(
                storage=_open_storage(storage, self.study_name),
                sampler=self._make_sampler(population_size),
                study_name=self.study_name,
                directions=["minimize" if o.direction == "min" else "maximize"
                            for o in self.objectives],
            )

    def _make_sampler(self, population_size: int) -> optuna.samplers.BaseSampler:
        constraints_func = None
        if self.constraints and not _SET_CONSTRAINT:
            constraints_func = _constraints_from_user_attrs
        with warnings.catch_warnings():  # options that older Optuna marks experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.sampler == "nsga2":
                return optuna.samplers.NSGAIISampler(
                    seed=self.seed, population_size=min(population_size, max(2, self.space.size)),
                    constraints_func=constraints_func)
            return optuna.samplers.TPESampler(
                seed=self.seed, multivariate=True, constant_liar=True,
                n_startup_trials=TPE_STARTUP_TRIALS, constraints_func=constraints_func)

    # -- ask / tell -----------------------------------------------------------------------

    def _ask(self, n: int) -> list[Candidate]:
        out: list[Candidate] = []
        redraws = 0
        with _quiet():
            while len(out) < n and len(self._seen) < self.space.size:
                origin = "init" if self._n_ok < self._startup else "evo"
                if redraws >= REDRAWS:
                    x = random_unseen(self.space, self.rng, self._seen)
                    if x is None:
                        break
                    self.study.enqueue_trial(self._params(self.space.decode(np.array(x))))
                    origin = "random"
                trial = self.study.ask(self._distributions)
                config = {name: coder.value(trial.params[name]) for name, coder
                          in zip(self.space.names, self._coders, strict=True)}
                key = config_key(config)
                if key in self._told or key in self._pending:
                    trial.set_user_attr("repeat_of", key)
                    redraws += 1
                    if key in self._told:  # answer a repeat with what is known
                        self._finish(trial, self._told[key])
                    else:  # being evaluated: answered when that result comes
                        self._pending[key].append(trial)
                else:
                    self._pending[key] = [trial]
                    self._seen.add(self._genome(config))
                    out.append(Candidate(config, origin=origin))
        return out

    def _tell(self, results: list[EvalResult]) -> None:
        with _quiet():
            for r in results:
                trials = self._pending.pop(r.key, None)
                if trials is None:  # a config nobody asked this study for
                    self._add(r)
                else:
                    for trial in trials:
                        self._finish(trial, r)
                if r.key not in self._told and r.ok:
                    self._n_ok += 1
                self._told[r.key] = r
                self._seen.add(self._genome(r.config))

    def _finish(self, trial: Trial, r: EvalResult) -> None:
        if not r.ok:
            trial.set_user_attr("failure", r.reason or "failed")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        if self.constraints:
            values = self._constraint_values(r)
            trial.set_user_attr("constraints", values)
            if _SET_CONSTRAINT:
                for c, v in zip(self.constraints, values, strict=True):
                    trial.set_constraint(c.name, v)
        self.study.tell(trial, values=self._objective_values(r))

    def _add(self, r: EvalResult) -> None:
        """Record a result for a config this study never asked for, as a finished trial."""
        kwargs: dict[str, Any] = {"params": self._params(r.config),
                                  "distributions": self._distributions}
        if not r.ok:
            kwargs.update(state=TrialState.FAIL, user_attrs={"failure": r.reason or "failed"})
        else:
            kwargs["values"] = self._objective_values(r)
            if self.constraints:
                values = self._constraint_values(r)
                kwargs["user_attrs"] = {"constraints": values}
                if _SET_CONSTRAINT:
                    kwargs["constraints"] = {c.name: v for c, v
                                             in zip(self.constraints, values, strict=True)}
                else:
                    kwargs["system_attrs"] = {"constraints": values}
        self.study.add_trial(optuna.trial.create_trial(**kwargs))

    # -- conversions ----------------------------------------------------------------------

    def _objective_values(self, r: EvalResult) -> list[float]:
        return [float(r.values[o.name]) for o in self.objectives]

    def _constraint_values(self, r: EvalResult) -> list[float]:
        return [float(r.constraints[c.name]) for c in self.constraints]

    def _params(self, config: dict[str, Any]) -> dict[str, Any]:
        return {name: coder.param(config[name]) for name, coder
                in zip(self.space.names, self._coders, strict=True)}

    def _genome(self, config: dict[str, Any]) -> Genome:
        return tuple(int(v) for v in self.space.encode(config))


class _Coder:
    """One dimension as an Optuna distribution. A ``Choice`` whose values Python's ``==``
    cannot tell apart (``1``, ``1.0``, ``True``) is coded by index, since Optuna looks
    categorical values up with ``list.index``."""

    def __init__(self, dim: Any) -> None:
        self.dim = dim
        self.by_index = False
        if isinstance(dim, Choice):
            values = list(dim.values)
            self.by_index = any(a == b for i, a in enumerate(values) for b in values[i + 1:])
            choices = list(range(len(values))) if self.by_index else values
            self.distribution: BaseDistribution = CategoricalDistribution(choices)
        else:
            self.distribution = IntDistribution(int(dim.lo), int(dim.hi))

    def value(self, param: Any) -> Any:
        return self.dim.value(int(param)) if self.by_index else param

    def param(self, value: Any) -> Any:
        return self.dim.index(value) if self.by_index else value


def _open_storage(url: str | None, study_name: str) -> optuna.storages.BaseStorage | None:
    """``None`` (in memory) or the storage behind ``url``, without a study named
    ``study_name`` (an old one is deleted: the proposer always starts a fresh study)."""
    if url is None:
        return None
    try:
        storage = optuna.storages.get_storage(url)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"optuna storage {url!r} cannot be opened "
                          f"({type(exc).__name__}: {first})") from None
    with suppress(KeyError):  # no such study yet
        optuna.delete_study(study_name=study_name, storage=storage)
    return storage


def _constraints_from_user_attrs(trial: optuna.trial.FrozenTrial) -> list[float]:
    """``constraints_func`` for Optuna < 5: the values stored before ``tell``."""
    return list(trial.user_attrs["constraints"])


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna logs every trial at INFO; its verbosity is one global setting, so it is lowered
    to WARNING only while this adapter calls Optuna, and put back afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
