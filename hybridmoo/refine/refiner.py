"""The refiner the search loop calls: survivors in, refined, re-measured candidates out."""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridmoo.data import ImageData
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency_model import LatencyModel
from hybridmoo.objectives import EvalResult, Objective, minimization_matrix
from hybridmoo.preference import axes_preference, axis_of, refinement_preference
from hybridmoo.refine.front import tune_front
from hybridmoo.refine.loop import (
    RefineOutcome,
    calibration_batches,
    refine_network,
    teacher_logits,
)
from hybridmoo.refine.record import changes, hardened_config, space_config
from hybridmoo.refine.settings import RefineSettings
from hybridmoo.space import FRONT_TUNED, REFINED, Candidate
from hybridmoo.supernet.supernet import Supernet
from hybridmoo.supernet.training import prepare_subnet
from hybridmoo.tasks import FrontJob, Refined, RefineJob

Measure = Callable[[nn.Module], Mapping[str, Any]]


class Refiner:
    """Refines survivors of the search: each one's sub-network is extracted (BatchNorm and
    activation ranges recalibrated, as ``evaluate_subnet`` does), refined under the
    preference its position on the survivors' front gives (:mod:`hybridmoo.preference`),
    hardened, and measured again with ``measure`` (the search's own measurement, returning the
    objective values by name). ``teacher`` is the distillation teacher (any module with the
    same inputs and classes; default the supernet's largest sub-network). ``device``: where
    refinement runs (the supernet and the teacher are moved there when a job starts; None:
    where the supernet is)."""

    def __init__(self, supernet: Supernet, data: ImageData,
                 settings: RefineSettings | Mapping[str, Any], *, measure: Measure,
                 latency_model: LatencyModel | None = None,
                 teacher: nn.Module | None = None, device: str | None = None) -> None:
        if not isinstance(supernet, Supernet):
            raise ConfigError(f"Refiner needs a Supernet, got {type(supernet).__name__}")
        if not callable(measure):
            raise ConfigError("Refiner needs a measure(network) -> dict callable")
        self.supernet = supernet
        self.data = data
        self.settings = (settings if isinstance(settings, RefineSettings)
                         else RefineSettings.from_dict(settings))
        self.measure = measure
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
        self.latency_model = latency_model
        self._teacher: nn.Module | None = (None if teacher is None
                                           else teacher.eval().requires_grad_(False))
        self._teacher_logits: torch.Tensor | None = None
        self.device = device

    def _place(self) -> None:
        """Move the supernet and the teacher to ``device`` (on the worker that refines)."""
        if self.device is None:
            return
        from hybridmoo.evaluate.measure import resolve_device

        target = resolve_device(self.device)
        self.supernet.to(target)
        if self._teacher is not None:
            self._teacher.to(target)

    def refine(self, survivors: Sequence[EvalResult], objectives: Sequence[Objective]
               ) -> list[tuple[EvalResult, nn.Module | None]]:
        """One result per usable survivor: ``EvalResult(Candidate(config, origin="refine",
        parents=(survivor.key,)), measured values, info)`` and its hardened network, whose
        ``config`` is the search-space config nearest to its hardened widths, which are in
        ``info["hardened_config"]`` (:mod:`hybridmoo.refine.record`).
        A failed, rolled-back (``info["rolled_back"]``: it did not improve on its parent on
        val) or unmeasurable refinement is ``ok=False`` with the reason (also in
        ``info["reason"]``) and no network, so nothing of it can be saved."""
        usable = [s for s in survivors if s.ok]
        if not usable:
            return []
        self._place()
        F = minimization_matrix(usable, objectives)
        prefs = np.array([refinement_preference(F, i, objectives) for i in range(len(usable))])
        teacher = self.distillation_target() if self.settings.distill else None
        return [self._one(s, prefs, i, objectives, teacher) for i, s in enumerate(usable)]

    def refine_job(self, job: RefineJob | FrontJob, objectives: Sequence[Objective]
                   ) -> Refined | list[Refined]:
        """One survivor's refinement as backend work (:class:`hybridmoo.tasks.SearchTask`):
        under the preference the driver chose for it among its round's survivors, measured
        with ``measure`` where it runs; for a :class:`FrontJob`, :meth:`tune_front`."""
        self._place()
        if isinstance(job, FrontJob):
            return self.tune_front(job, objectives)
        if not job.survivor.ok:
            return job.failed("the survivor's evaluation failed")
        prefs = np.array([axes_preference(p, objectives) for p in job.preferences])
        teacher = self.distillation_target() if self.settings.distill else None
        result, network = self._one(job.survivor, prefs, job.index, objectives, teacher)
        return Refined(result, network)

    def tune_front(self, job: FrontJob, objectives: Sequence[Objective]) -> list[Refined]:
        """A front round (:mod:`hybridmoo.refine.front`): the shared weights tuned on every
        survivor's config within ``job.budget_s`` (less the survivors' own evaluation time,
        which measuring them again takes), then one record per survivor, in order, its network
        taken from the tuned weights and measured; rolled back (``ok=False``, no network) when
        none of its task objectives beats its parent's."""
        start = time.perf_counter()
        usable = [s for s in job.survivors if s.ok]
        tuned, steps = None, 0
        if usable:
            # the teacher runs on each batch: a few hundred steps see fewer images than
            # caching its logits on the whole training set would take
            teacher = self.teacher() if self.settings.distill else None
            budget = (None if job.budget_s is None
                      else max(job.budget_s - sum(s.elapsed_s for s in usable), 0.0))
            tuned, steps = tune_front(self.supernet, [s.config for s in usable], self.data,
                                      self.settings, teacher, budget_s=budget)
        info = {"method": FRONT_TUNED, "front_steps": steps, "front_configs": len(usable),
                "tune_s": time.perf_counter() - start}
        calib = calibration_batches(self.data, self.settings)
        return [self._front_record(tuned, s, calib, objectives, info) if s.ok
                else FrontJob((s,), job.round).failed("the survivor's evaluation failed")[0]
                for s in job.survivors]

    def _front_record(self, tuned: Supernet, survivor: EvalResult, calib: list[Any],
                      objectives: Sequence[Objective], info: Mapping[str, Any]) -> Refined:
        start = time.perf_counter()
        candidate = Candidate(dict(survivor.config), REFINED, (survivor.key,), FRONT_TUNED)
        info = {**info, "hardened_config": dict(survivor.config), "reason": None,
                "changed": changes(survivor.config, survivor.config, info["front_steps"])}

        def failed(reason: str, **extra: Any) -> Refined:
            return Refined(EvalResult(candidate, ok=False, reason=reason,
                                      info={**info, **extra, "reason": reason},
                                      elapsed_s=time.perf_counter() - start))

        try:
            network = prepare_subnet(tuned, survivor.config, calib)
            values = _values(self.measure(network), objectives)
        except Exception as exc:  # a failing measurement is a result, not a crash
            return failed(f"measurement failed: {type(exc).__name__}: {exc}")
        if isinstance(values, str):
            return failed(values)
        if not _task_improved(values, survivor, objectives):
            return failed(f"rolled back: front tuning did not improve "
                          f"{_task_names(objectives)} on the search's split", rolled_back=True)
        # the parent's structure and policy: its costs are the parent's (see _beside_parent)
        values.update({o.name: survivor.values[o.name] for o in objectives
                       if axis_of(o) in ("latency", "size")})
        return Refined(EvalResult(candidate, values, ok=True, info=info,
                                  elapsed_s=time.perf_counter() - start), network)

    def teacher(self) -> nn.Module:
        """The teacher given, or the supernet's largest sub-network (FP32), extracted once,
        BatchNorm recalibrated."""
        if self._teacher is None:
            self._teacher = self.extract(self.supernet.largest()).requires_grad_(False)
        return self._teacher

    def distillation_target(self) -> nn.Module | torch.Tensor:
        """The teacher's logits on the training set (computed once: each refinement step then
        runs the student only), or the teacher itself when the data is not in memory."""
        if self._teacher_logits is None:
            self._teacher_logits = teacher_logits(self.teacher(), self.data)
        return self._teacher_logits if self._teacher_logits is not None else self.teacher()

    def extract(self, config: Mapping[str, Any]) -> nn.Module:
        """Sub-network ``config`` as ``evaluate_subnet`` prepares it."""
        return prepare_subnet(self.supernet, config, calibration_batches(self.data, self.settings))

    def _one(self, survivor: EvalResult, prefs: np.ndarray, index: int,
             objectives: Sequence[Objective], teacher: nn.Module | torch.Tensor | None
             ) -> tuple[EvalResult, nn.Module | None]:
        start = time.perf_counter()
        candidate = Candidate(dict(survivor.config), origin="refine", parents=(survivor.key,))
        info: dict[str, Any] = {"solver": self.settings.solver, "steps": 0,
                                "preference": [round(float(v), 6) for v in prefs[index]],
                                "reason": None}

        def failed(reason: str) -> tuple[EvalResult, None]:
            info["reason"] = reason
            return EvalResult(candidate, ok=False, reason=reason, info=info,
                              elapsed_s=time.perf_counter() - start), None

        try:
            outcome = refine_network(
                self.extract(survivor.config), data=self.data, settings=self.settings,
                preference=prefs[index], teacher=teacher, latency_model=self.latency_model,
                references=prefs, index=index)
        except Exception as exc:  # one survivor's failure must not end the search
            return failed(f"refinement failed: {type(exc).__name__}: {exc}")
        info.update(_summary(outcome))
        if not outcome.ok:
            return failed(outcome.reason or "refinement failed")
        hardened = hardened_config(self.supernet, survivor.config, outcome.network)
        info["hardened_config"] = hardened
        info["changed"] = changes(survivor.config, hardened, len(outcome.losses))
        candidate = Candidate(space_config(self.supernet.space, hardened), origin="refine",
                              parents=(survivor.key,))
        try:
            values = self._beside_parent(outcome.network, survivor, objectives,
                                         bool(info["changed"]["structure"]))
        except Exception as exc:  # a failing measurement is a result, not a crash
            return failed(f"measurement failed: {type(exc).__name__}: {exc}")
        if isinstance(values, str):
            return failed(values)
        if not info["changed"]["structure"] and not _task_improved(values, survivor,
                                                                   objectives):
            info["rolled_back"] = True
            return failed("rolled back: the parent's structure and policy, and no better "
                          f"{_task_names(objectives)} on the search's split")
        return EvalResult(candidate, values, ok=True, info=info,
                          elapsed_s=time.perf_counter() - start), outcome.network

    def _beside_parent(self, network: nn.Module, parent: EvalResult,
                       objectives: Sequence[Objective], restructured: bool
                       ) -> dict[str, float] | str:
        """``network``'s objective values, its costs comparable with its parent's: with the
        parent's structure and policy its costs are the parent's (measuring again adds only
        noise); with a new structure the parent is measured again right after it, and the
        network's latency is the parent's recorded latency times the ratio of the two
        measurements taken side by side (noise that drifts over a run cancels)."""
        values = _values(self.measure(network), objectives)
        if isinstance(values, str):
            return values
        costs = [o for o in objectives if axis_of(o) in ("latency", "size")]
        if not restructured:
            return {**values, **{o.name: parent.values[o.name] for o in costs}}
        latency = [o for o in costs if axis_of(o) == "latency" and values[o.name] > 0]
        if latency:
            again = _values(self.measure(self.extract(parent.config)), objectives)
            if isinstance(again, str):
                return again
            for o in latency:
                if again[o.name] > 0:
                    values[o.name] = parent.values[o.name] * values[o.name] / again[o.name]
        return values


def _task_improved(values: Mapping[str, float], parent: EvalResult,
                   objectives: Sequence[Objective]) -> bool:
    """Whether ``values`` beat the parent's on at least one task objective."""
    return any(values[o.name] > parent.values[o.name] if o.direction == "max"
               else values[o.name] < parent.values[o.name]
               for o in objectives if axis_of(o) == "task")


def _task_names(objectives: Sequence[Objective]) -> str:
    return ", ".join(o.name for o in objectives if axis_of(o) == "task") or "a task objective"


def _values(measured: Any, objectives: Sequence[Objective]) -> dict[str, float] | str:
    """The objective values of a measurement, or the reason it has none for one of them."""
    values = {}
    for o in objectives:
        v = measured.get(o.name) if isinstance(measured, Mapping) else None
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return f"measure returned no finite {o.name!r}: {v!r}"
        values[o.name] = float(v)
    return values


def _summary(outcome: RefineOutcome) -> dict[str, Any]:
    return {"steps": len(outcome.losses), "recovery_steps": len(outcome.recovery_losses),
            "rolled_back": outcome.rolled_back,
            "channels": {k: list(v) for k, v in outcome.channels.items()},
            "final_losses": outcome.losses[-1] if outcome.losses else None,
            "target_cost": outcome.target,
            "hardened_cost": outcome.hard_costs[-1] if outcome.hard_costs else 1.0,
            "val_accuracy": [_rounded(100 * v, 4) for v in outcome.val_accuracy],
            "gains": [_rounded(v, 6) for v in outcome.gains],
            "score": _rounded(outcome.score, 6),
            "initial_costs": outcome.initial_costs, "final_costs": outcome.final_costs}


def _rounded(value: float, digits: int) -> float | None:
    """``value`` rounded, None when it is not finite (not measured): journals are JSON."""
    return round(float(value), digits) if math.isfinite(value) else None
