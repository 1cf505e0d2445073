"""The weight-sharing supernet: one model, a search space over its sub-networks, a forward
that runs any of them, and extraction of a standalone smaller network."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.quant import act_qparams, batch_inputs
from hybridmoo.quant.layers import observe_range
from hybridmoo.space import SearchSpace
from hybridmoo.supernet.execution import Executor, check_mode
from hybridmoo.supernet.extract import extract as extract_plan
from hybridmoo.supernet.layout import FP32, Layout, Plan
from hybridmoo.supernet.slicing import ExecutionPlan
from hybridmoo.supernet.spec import SupernetSpec


class Supernet(nn.Module):
    """A model whose sub-networks (width, depth, heads and quantization policy, as described
    by :attr:`space`) share its weights. Build one with :func:`make_supernet`.

    ``forward(x, config)`` runs the sub-network ``config`` (``set_active(config)`` makes it
    stick for later ``forward(x)`` calls) on slices of the shared weights, so it costs about
    what the sub-network costs (:attr:`execution` ``"mask"`` runs every sub-network at the
    full model's cost instead, the reference; :meth:`execution_plan` says how a config runs);
    ``extract(config)`` returns it as a standalone, physically smaller module."""

    def __init__(self, model: nn.Module, spec: SupernetSpec, layout: Layout, *,
                 image_size: int, in_chans: int, min_size: int = 1,
                 fixed_size: bool = False) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.layout = layout
        self.image_size = int(image_size)
        self.in_chans = int(in_chans)
        self.min_size = int(min_size)
        self.fixed_size = bool(fixed_size)
        self.act_ranges: dict[str, tuple[float, float]] = {}
        self._executor = Executor(model, layout)
        self._modules_by_name = dict(model.named_modules())
        self._active = self.largest()
        self._plan = Plan()
        self._qparams: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def space(self) -> SearchSpace:
        """The search space: one dimension per elastic choice and quantization choice."""
        return self.layout.space

    def largest(self) -> dict[str, Any]:
        """Every dimension at its largest value (full width and depth, 32-bit)."""
        return self.layout.extreme(largest=True)

    def smallest(self) -> dict[str, Any]:
        """Every dimension at its smallest value (including the fewest bits)."""
        return self.layout.extreme(largest=False)

    @property
    def execution(self) -> str:
        """``"slice"`` (default: sub-networks run on weight slices, masking only what slicing
        cannot serve) or ``"mask"`` (every removed channel is zeroed in the full model)."""
        return self._executor.mode

    @execution.setter
    def execution(self, mode: str) -> None:
        self._executor.mode = check_mode(mode)

    def execution_plan(self, config: Mapping[str, Any]) -> ExecutionPlan:
        """Which layers of sub-network ``config`` run on weight slices, which are masked (and
        why), which blocks are not run."""
        return self._executor.execution_plan(self.plan(config))

    @property
    def active(self) -> dict[str, Any]:
        """The config the next ``forward(x)`` runs."""
        return dict(self._active)

    def use_orders(self, orders: Mapping[str, Any]) -> None:
        """Adopt channel and head orders saved from ``layout.orders()`` (a trained supernet
        keeps the orders it was trained with); the active config becomes the largest."""
        try:
            layout = self.layout.with_orders(orders)
        except ValueError as exc:
            raise ConfigError(f"cannot use the saved orders: {exc}") from None
        self.layout = layout
        self._executor = Executor(self.model, layout, self.execution)
        self._active, self._plan, self._qparams = self.largest(), Plan(), {}

    def plan(self, config: Mapping[str, Any]) -> Plan:
        """What ``config`` removes and quantizes (raises ConfigError outside the space)."""
        self.space.validate(config)
        return self.layout.plan(config)

    def set_active(self, config: Mapping[str, Any]) -> None:
        """Make ``forward(x)`` run the sub-network ``config``."""
        if isinstance(config, Mapping) and dict(config) == self._active:
            return  # the active config is valid already
        self.space.validate(config)
        plan = self.layout.plan(config)
        qparams = self._input_qparams(plan)
        self._active, self._plan, self._qparams = dict(config), plan, qparams

    def forward(self, x: torch.Tensor, config: Mapping[str, Any] | None = None) -> torch.Tensor:
        """The output of sub-network ``config`` (default: the active one) for images ``x``."""
        if config is not None:
            self.set_active(config)
        self.check_input(x)
        return self._executor.run(x, self._plan, self._qparams)

    def extract(self, config: Mapping[str, Any]) -> nn.Module:
        """Sub-network ``config`` as a standalone module in eval mode: fewer parameters and
        MACs, the same outputs as ``forward(x, config)`` (its own copy of the weights; plain
        torch/timm modules, plus ``hybridmoo.quant.FakeQuant`` around quantized layers)."""
        plan = self.plan(config)
        if any(a < FP32 for _, a in plan.quant.values()):
            self._input_qparams(plan)  # a clear error when calibration is missing
        return extract_plan(self.model, self.layout, plan, self.act_ranges).eval()

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Any], config: Mapping[str, Any] | None = None) -> int:
        """Record the input range of every quantizable layer over ``batches`` with the
        sub-network ``config`` (default: the largest) running in FP32 and eval mode, the
        ranges every quantized config then uses. Returns the number of batches used."""
        config = dict(config) if config is not None else self.largest()
        plan = self.plan(config)
        fp32 = Plan(plan.channels, plan.heads, plan.skip, {})
        ranges = {name: torch.full((2,), float("nan"))
                  for unit in self.layout.quant for name in unit.layers}
        was_training = self.training
        self.eval()
        hooks = [self._modules_by_name[name].register_forward_pre_hook(
            lambda _m, args, r=r: observe_range(r, args[0])) for name, r in ranges.items()]
        n = 0
        try:
            for x in batch_inputs(batches, next(self.model.parameters()).device):
                self.check_input(x)
                self._executor.run(x, fp32, {})
                n += 1
        finally:
            for h in hooks:
                h.remove()
            self.train(was_training)
        if n == 0:
            raise ConfigError("calibration got no batches")
        self.act_ranges = {name: (float(r[0]), float(r[1])) for name, r in ranges.items()
                           if not torch.isnan(r).any()}
        self._qparams = self._input_qparams(self._plan)
        return n

    def check_input(self, x: Any) -> None:
        """Raise :class:`ConfigError` unless ``x`` is a batch of images this model takes."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"expected images of shape (batch, {self.in_chans}, H, W), "
                              f"got {shape}")
        if x.shape[1] != self.in_chans:
            raise ConfigError(f"images have {x.shape[1]} channels, the model takes "
                              f"{self.in_chans}")
        h, w = int(x.shape[2]), int(x.shape[3])
        if self.fixed_size and (h, w) != (self.image_size, self.image_size):
            raise ConfigError(f"this model takes {self.image_size}x{self.image_size} images, "
                              f"got {h}x{w} (make the supernet with image_size={h})")
        if min(h, w) < self.min_size:
            raise ConfigError(f"images must be at least {self.min_size}x{self.min_size} for "
                              f"this model (its total stride), got {h}x{w}")

    def _input_qparams(self, plan: Plan) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        layers = [name for name, (_, a_bits) in plan.quant.items() if a_bits < FP32]
        missing = [name for name in layers if name not in self.act_ranges]
        if missing:
            raise ConfigError(f"this config quantizes activations but the supernet has no "
                              f"calibrated range for {missing[0]!r}: call "
                              f"supernet.calibrate(batches) first")
        out = {}
        for name in layers:
            device = self._modules_by_name[name].weight.device
            scale, zero_point = act_qparams(*self.act_ranges[name])
            out[name] = (scale.to(device), zero_point.to(device))
        return out

    def extra_repr(self) -> str:
        return (f"family={self.spec.family!r}, dims={len(self.space)}, "
                f"image_size={self.image_size}")
