"""Run one :class:`Plan` of a supernet's model: sliced where slicing serves (the default),
masked where it cannot, quantized layers with fake-quantized weights and inputs."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from hybridmoo.errors import ConfigError
from hybridmoo.supernet.layout import Layout, Plan
from hybridmoo.supernet.masking import Masker, QParams, quantized_params
from hybridmoo.supernet.slicing import ExecutionPlan, LayerSlice, SlicedRun, Slicer

MODES = ("slice", "mask")
RECENT_PLANS = 8
SlicedPlan = tuple[dict[str, LayerSlice], dict[str, int], Plan]


class Executor:
    """Runs ``model`` as any plan of ``layout``; ``mode`` ``"slice"`` (sub-networks cost what
    they are) or ``"mask"`` (every sub-network costs the full model: the reference)."""

    def __init__(self, model: nn.Module, layout: Layout, mode: str = "slice") -> None:
        self.model = model
        self.layout = layout
        self.modules = dict(model.named_modules())
        self.masker = Masker(model, layout)
        self.slicer = Slicer(model, layout)
        self.heads = {h.attn: h.num_heads for h in layout.heads}
        self.mode = check_mode(mode)
        self._recent: dict[tuple, SlicedPlan] = {}

    def execution_plan(self, plan: Plan) -> ExecutionPlan:
        """Which layers of ``plan`` run sliced and which masked."""
        return self.slicer.execution_plan(plan, mask_all=self.mode == "mask")

    def run(self, x: torch.Tensor, plan: Plan, qparams: Mapping[str, QParams]) -> torch.Tensor:
        """The output of ``plan``'s sub-network for ``x`` (``qparams``: input scale and zero
        point of each layer whose input is quantized)."""
        if plan.is_full:
            return self.model(x)
        if self.mode == "mask":
            sliced = SlicedRun(self.modules, {}, {}, ())
            masked = plan
        else:
            layers, kept, masked = self._sliced_plan(plan)
            sliced = SlicedRun(self.modules, layers, kept, plan.skip)
        self.masker.apply(masked, qparams)
        try:
            tensors = dict(sliced.tensors)
            tensors.update(quantized_params(self.modules, plan, qparams,
                                            self.masker.input_keep, base=sliced.tensors))
            with sliced.structure():
                out = (functional_call(self.model, tensors, (x,), tie_weights=False)
                       if tensors else self.model(x))
        finally:
            self.masker.clear()
        sliced.write_back()
        return out


    def _sliced_plan(self, plan: Plan) -> SlicedPlan:
        """The layer slices, kept head counts and masked part of ``plan``, kept for the
        last few plans (a sandwich step runs the largest and smallest every time)."""
        key = (tuple(sorted((r, len(p)) for r, p in plan.channels.items())),
               tuple(sorted((a, len(h)) for a, h in plan.heads.items())), tuple(plan.quant.items()))
        found = self._recent.pop(key, None)
        if found is None:
            sliced_plan, masked = self.slicer.split(plan)
            kept = {a: self.heads[a] - len(h) for a, h in sliced_plan.heads.items()}
            found = (self.slicer.layer_slices(sliced_plan), kept, masked)
        self._recent[key] = found
        while len(self._recent) > RECENT_PLANS:
            self._recent.pop(next(iter(self._recent)))
        return found


def check_mode(mode: str) -> str:
    """``mode`` when it is an execution mode, else a clear error."""
    if mode not in MODES:
        raise ConfigError(f"execution must be one of {MODES}, got {mode!r}")
    return mode
