"""Run the full model as a sub-network by masking: forward hooks that compute what the
extracted network computes, on the shared weights, at the full model's cost. The supernet
masks only what slicing (:mod:`.slicing`) cannot serve, or everything in its ``"mask"``
execution mode (the reference the sliced path is checked against). Hooks are registered for
one forward and removed after it.

- Removed channels: every layer whose *output* channels belong to a shrunk group (conv,
  linear, batch norm) has those outputs set to zero, so every consumer sees zeros where the
  extracted network has no channel (activations map 0 to 0; squeeze-excite gates multiply
  a zero). In training mode a masked BatchNorm keeps the running statistics of its removed
  channels unchanged.
- Removed heads: the input of the attention output projection is zero for those heads
  (heads are independent until the projection).
- Removed blocks: the block's output is replaced by its input (the block still runs, its
  BatchNorm statistics are restored in training mode, and no gradient reaches it).
- Quantized inputs: a pre-hook fake-quantizes the layer's input with the calibrated range
  (quantized weights are substituted through ``functional_call``, see :mod:`.execution`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hybridmoo.quant import fake_quant_act, fake_quant_bias, fake_quant_weight, weight_scales
from hybridmoo.supernet.channels import BN, module_device
from hybridmoo.supernet.layout import FP32, Layout, Plan

QParams = tuple[torch.Tensor, torch.Tensor]


class Masker:
    """Registers and removes the hooks that make ``model`` run as one :class:`Plan`."""

    def __init__(self, model: nn.Module, layout: Layout) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.groups = {g.root: g for g in layout.groups}
        self.heads = {h.attn: h for h in layout.heads}
        self.handles: list[RemovableHandle] = []
        self.input_keep: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        """Remove every hook (the model is the plain full network again)."""
        for h in self.handles:
            h.remove()
        self.handles = []

    def apply(self, plan: Plan, qparams: Mapping[str, QParams]) -> None:
        """Replace the current hooks by those of ``plan`` (``qparams``: input scale and zero
        point of each layer whose input is quantized)."""
        self.clear()
        pruned, self.input_keep = self._pruned(plan)
        for name, idxs in pruned.items():
            self._mask_output(self.modules[name], sorted(idxs))
        for attn, heads in plan.heads.items():
            self._mask_heads(attn, heads)
        for block in plan.skip:
            self._skip(self.modules[block])
        for name, (_, a_bits) in plan.quant.items():
            if a_bits < FP32:
                self._quantize_input(self.modules[name], qparams[name])

    def _pruned(self, plan: Plan) -> tuple[dict[str, set[int]], dict[str, torch.Tensor]]:
        """The output channels ``plan`` removes per layer, and the input keep masks of its
        quantized layers (per-channel weight scales come from the kept inputs only)."""
        pruned: dict[str, set[int]] = defaultdict(set)
        pruned_in: dict[str, set[int]] = defaultdict(set)
        for root, root_pruned in plan.channels.items():
            for member in self.groups[root].members:
                (pruned if member.out else pruned_in)[member.name].update(
                    member.pruned(root_pruned))
        for attn, heads in plan.heads.items():
            hd = self.heads[attn].head_dim
            pruned_in[f"{attn}.proj"].update(h * hd + j for h in heads for j in range(hd))
        input_keep = {name: self._keep(self.modules[name].weight.shape[1], idxs,
                                       self.modules[name])
                      for name, idxs in pruned_in.items() if name in plan.quant}
        return pruned, input_keep

    def input_keep_of(self, plan: Plan) -> dict[str, torch.Tensor]:
        """The input keep masks of ``plan``'s quantized layers (see :meth:`apply`)."""
        return self._pruned(plan)[1]

    @staticmethod
    def _keep(size: int, idxs: Any, module: nn.Module) -> torch.Tensor:
        keep = torch.ones(size, device=module_device(module))
        keep[sorted(idxs)] = 0.0
        return keep

    def _hook(self, module: nn.Module, fn: Callable[..., Any], pre: bool = False) -> None:
        register = module.register_forward_pre_hook if pre else module.register_forward_hook
        self.handles.append(register(fn))

    def _mask_output(self, module: nn.Module, idxs: list[int]) -> None:
        size = module.num_features if isinstance(module, BN) else module.weight.shape[0]
        keep = self._keep(size, idxs, module)
        shape = (size,) if isinstance(module, nn.Linear) else (1, size, 1, 1)
        keep = keep.view(shape)
        self._hook(module, lambda _m, _a, out: out * _like(keep, out))
        if isinstance(module, BN) and module.track_running_stats:
            self._keep_bn_stats(module, keep)

    def _keep_bn_stats(self, bn: nn.Module, keep: torch.Tensor) -> None:
        """In training mode, give the removed channels their running statistics back after
        the forward (as new tensors: autograd saved the updated ones)."""
        kept = keep.flatten() > 0
        saved: dict[str, torch.Tensor] = {}

        def stash(m: nn.Module, _args: Any) -> None:
            if m.training:
                saved.update(running_mean=m.running_mean.clone(),
                             running_var=m.running_var.clone())

        def restore(m: nn.Module, _args: Any, out: Any) -> Any:
            for key, old in list(saved.items()):
                new = getattr(m, key).detach()
                setattr(m, key, torch.where(kept.to(new.device), new, old.to(new.device)))
            saved.clear()
            return out

        # The restore hook must run before the output mask: insert it first.
        self.handles.append(bn.register_forward_pre_hook(stash))
        self.handles.append(bn.register_forward_hook(restore, prepend=True))

    def _mask_heads(self, attn: str, heads: tuple[int, ...]) -> None:
        group = self.heads[attn]
        proj = self.modules[f"{attn}.proj"]
        keep = torch.ones(group.num_heads, group.head_dim, device=proj.weight.device)
        keep[list(heads)] = 0.0
        keep = keep.flatten()
        self._hook(proj, lambda _m, args: (args[0] * _like(keep, args[0]), *args[1:]),
                   pre=True)

    def _skip(self, block: nn.Module) -> None:
        bns = [m for m in block.modules() if isinstance(m, BN) and m.track_running_stats]
        saved: list[tuple[nn.Module, dict[str, torch.Tensor]]] = []

        def stash(m: nn.Module, _args: Any) -> None:
            if m.training:
                saved.extend((bn, {k: v.clone() for k, v in bn.named_buffers()}) for bn in bns)

        def bypass(_m: nn.Module, args: tuple[Any, ...], _out: Any) -> Any:
            for bn, buffers in saved:
                for k, v in buffers.items():
                    setattr(bn, k, v)
            saved.clear()
            return args[0]

        self._hook(block, stash, pre=True)
        self._hook(block, bypass)

    def _quantize_input(self, layer: nn.Module, qparams: QParams) -> None:
        scale, zero_point = qparams
        self._hook(layer, lambda _m, args: (fake_quant_act(args[0], scale, zero_point),
                                            *args[1:]), pre=True)


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` on ``ref``'s device and dtype (a no-op when it is there already, so hooks keep
    working after the model moves)."""
    return t.to(device=ref.device, dtype=ref.dtype)


def quantized_params(modules: Mapping[str, nn.Module], plan: Plan,
                     qparams: Mapping[str, QParams], input_keep: Mapping[str, torch.Tensor],
                     base: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Fake-quantized weights (and int32-grid biases) by parameter name, to substitute with
    ``torch.func.functional_call``; ``base``: the (sliced) tensors to quantize instead of the
    layers' own. Weight columns of masked input channels are zeroed first (their inputs are
    zero anyway), so per-channel scales come from the kept weights only, as in the extracted
    layer."""
    base = base or {}
    params: dict[str, torch.Tensor] = {}
    for name, (w_bits, a_bits) in plan.quant.items():
        if w_bits >= FP32:
            continue
        layer = modules[name]
        weight = base.get(f"{name}.weight", layer.weight)
        if name in input_keep:
            keep = input_keep[name]
            weight = weight * _like(keep, weight).view(1, -1, *([1] * (weight.dim() - 2)))
        params[f"{name}.weight"] = fake_quant_weight(weight, w_bits)
        bias = base.get(f"{name}.bias", layer.bias)
        if a_bits < FP32 and bias is not None:
            params[f"{name}.bias"] = fake_quant_bias(
                bias, qparams[name][0], weight_scales(weight, w_bits))
    return params
