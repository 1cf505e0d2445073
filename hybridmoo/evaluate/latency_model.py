"""Latency models: per-layer costs of a network and a linear predictor fitted to measurements.

A network's cost is a list of :class:`LayerCost` (kind, MACs per image, parameters, and how
much the layer is ``active``). :class:`LatencyModel` predicts milliseconds as

    intercept[rt] + sum over layers of  active * (per_layer[rt][kind]
                                                  + per_mmac[rt][kind] * MMACs
                                                  + per_mparam[rt][kind] * Mparams)

with one table per runtime ``rt`` (torch, onnxruntime-fp32, onnxruntime-int8: a network runs on
one of them, see :mod:`hybridmoo.evaluate.latency`) and every coefficient >= 0 (non-negative
least squares on the *relative* error, so that small and large networks count alike, which is
what ranking them needs). The parameter term is the weight traffic of a run: a layer's time is
not its MACs alone (narrow layers stream their weights at a worse MAC rate, and onnxruntime's
QDQ graph dequantizes the weights of an int8 layer it does not fuse into a QLinearConv on every
run). The model is linear in MACs, parameters and ``active``, so with tensors for those fields
:meth:`LatencyModel.predict_from_layers` is a differentiable latency surrogate.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency import LATENCY_KINDS, ORT_FP32, ORT_INT8, TORCH, check_runtime
from hybridmoo.files import write_atomic
from hybridmoo.quant import FakeQuant

FORMAT = 2  # 2 added per_mparam; format 1 files load with it 0
INT8 = "-int8"
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass
class LayerCost:
    """One compute layer: ``kind`` (conv, dwconv, linear, attention, norm; "-int8" when it
    runs as an int8 kernel), MACs per image, parameters, and ``active`` (1 = runs, 0 = gone,
    in between for a soft gate). Numbers or tensors."""

    kind: str
    macs: float | torch.Tensor
    params: float | torch.Tensor
    active: float | torch.Tensor = 1.0


def layer_costs(net: nn.Module, example: torch.Tensor) -> dict[str, LayerCost]:
    """The cost of each compute layer that runs in ``net(example)``, by module name."""
    wrappers = {id(m.layer): m for m in net.modules() if isinstance(m, FakeQuant)}
    costs: dict[str, LayerCost] = {}
    batch = max(int(example.shape[0]), 1)
    hooks = []

    def record(name: str, module: nn.Module, out: torch.Tensor, inp: torch.Tensor) -> None:
        kind, macs = _kind_and_macs(module, inp, out)
        fq = wrappers.get(id(module))
        if fq is not None and fq.a_bits == 8:
            kind += INT8
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if name in costs:  # a module called twice: add up its work
            costs[name].macs = float(costs[name].macs) + macs / batch
        else:
            costs[name] = LayerCost(kind, macs / batch, float(params))

    for name, module in net.named_modules():
        if id(module) in wrappers:
            name = name.removesuffix(".layer")  # named as the FakeQuant that wraps it
        if isinstance(module, (nn.Conv2d, nn.Linear, *_NORMS)) or _is_attention(module):
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: record(name, m, out, args[0])))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return costs


def _is_attention(module: nn.Module) -> bool:
    return hasattr(module, "num_heads") and hasattr(module, "qkv") and hasattr(module, "proj")


def _kind_and_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple[str, float]:
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        macs = out.numel() * (module.in_channels // module.groups) * k
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return ("dwconv" if depthwise else "conv"), float(macs)
    if isinstance(module, nn.Linear):
        return "linear", float(out.numel() * module.in_features)
    if isinstance(module, _NORMS):
        return "norm", float(out.numel())
    # attention: the q @ k^T and attn @ v products (its qkv/proj Linears count on their own)
    b, n = int(inp.shape[0]), int(inp.shape[1])
    head_dim = int(getattr(module, "head_dim", 0)) or int(inp.shape[-1]) // module.num_heads
    return "attention", float(2 * b * module.num_heads * n * n * head_dim)


def supernet_fingerprint(supernet: Any) -> str:
    """``architecture:hash`` of what latency depends on: the model, its spec and search space,
    the input size and number of classes (not the weights)."""
    from hybridmoo.supernet.models import architecture_of

    arch = architecture_of(supernet.model) or type(supernet.model).__name__
    data = {"architecture": arch, "spec": supernet.spec.to_dict(),
            "space": supernet.space.to_json(), "image_size": supernet.image_size,
            "in_chans": supernet.in_chans,
            "num_classes": getattr(supernet.model, "num_classes", None)}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return f"{arch}:{digest[:16]}"


@dataclass
class Table:
    """Coefficients of one runtime: ms per network, and per layer, per MMAC and per million
    parameters of a layer kind (a kind missing from ``per_mparam`` costs nothing per
    parameter)."""

    intercept: float = 0.0
    per_layer: dict[str, float] = field(default_factory=dict)
    per_mmac: dict[str, float] = field(default_factory=dict)
    per_mparam: dict[str, float] = field(default_factory=dict)


@dataclass
class LatencyModel:
    """A fitted latency predictor for one supernet on one device (see the module docstring)."""

    fingerprint: str
    device: str
    device_type: str
    batch_size: int
    runtime: str
    tables: dict[str, Table]
    threads: int = 1
    quality: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, samples: Sequence[tuple[Mapping[str, LayerCost], str, float]], *,
            fingerprint: str, device: str, device_type: str = "cpu", batch_size: int = 1,
            runtime: str = "auto", threads: int = 1) -> LatencyModel:
        """Fit one table per latency kind from ``(costs, kind, measured ms)`` samples
        (non-negative least squares of the relative error; measurements must be > 0 ms)."""
        from scipy.optimize import nnls

        check_runtime(runtime)
        tables: dict[str, Table] = {}
        for kind in LATENCY_KINDS:
            rows = [(c, ms) for c, k, ms in samples if k == kind]
            if not rows:
                continue
            kinds = sorted({lc.kind for c, _ in rows for lc in c.values()})
            x = np.array([_features(c, kinds) for c, _ in rows], dtype=float)
            y = np.array([ms for _, ms in rows], dtype=float)
            if not np.all(np.isfinite(y)) or np.any(y <= 0):
                raise ConfigError(f"latency measurements must be finite and > 0 ms ({kind})")
            scale = np.where(x.max(axis=0) > 0, x.max(axis=0), 1.0)
            # relative error: row i divided by y_i (the ranking of fast and slow networks alike)
            coef, _ = nnls(x / scale / y[:, None], np.ones_like(y))
            coef = coef / scale
            n = len(kinds)
            tables[kind] = Table(float(coef[-1]),
                                 {k: float(coef[n + i]) for i, k in enumerate(kinds)},
                                 {k: float(coef[i]) for i, k in enumerate(kinds)},
                                 {k: float(coef[2 * n + i]) for i, k in enumerate(kinds)})
        if not tables:
            raise ConfigError("fitting a latency model needs at least one measured network")
        return cls(fingerprint, device, device_type, int(batch_size), runtime, tables,
                   int(threads))

    def kind_for(self, costs: Mapping[str, LayerCost]) -> str:
        """The runtime (table) a network with these layers is measured on."""
        int8 = any(c.kind.endswith(INT8) for c in costs.values())
        if self.device_type != "cpu" or self.runtime == "torch":
            return TORCH
        if int8:
            return ORT_INT8
        return ORT_FP32 if self.runtime == "onnxruntime" else TORCH

    def predict_from_layers(self, costs: Mapping[str, LayerCost],
                            kind: str | None = None) -> float | torch.Tensor:
        """Predicted milliseconds; a tensor (differentiable) when any cost field is one."""
        kind = kind or self.kind_for(costs)
        table = self.tables.get(kind)
        if table is None:
            raise ConfigError(f"the latency model has no measurements of {kind} networks "
                              f"(it has {', '.join(sorted(self.tables))})")
        total: float | torch.Tensor = table.intercept
        for name, c in costs.items():
            if c.kind not in table.per_layer:
                raise ConfigError(f"the latency model has no {c.kind!r} layers for {kind} "
                                  f"(layer {name!r})")
            total = total + c.active * (table.per_layer[c.kind]
                                        + table.per_mmac[c.kind] * (c.macs / 1e6)
                                        + table.per_mparam.get(c.kind, 0.0) * (c.params / 1e6))
        return total

    def predict(self, net: nn.Module, example: torch.Tensor) -> float:
        """Predicted milliseconds of ``net`` (``example``: one input batch of its shape)."""
        return float(self.predict_from_layers(layer_costs(net, example)))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "fingerprint": self.fingerprint, "device": self.device,
                "device_type": self.device_type, "batch_size": self.batch_size,
                "runtime": self.runtime, "threads": self.threads, "quality": self.quality,
                "tables": {k: {"intercept": t.intercept, "per_layer": t.per_layer,
                               "per_mmac": t.per_mmac, "per_mparam": t.per_mparam}
                           for k, t in self.tables.items()}}

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (to a temporary file, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path, *, model_fingerprint: str | None = None) -> LatencyModel:
        """Read a saved model; ConfigError when it is malformed or was built for another model
        than ``model_fingerprint`` (see :func:`supernet_fingerprint`)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"latency model {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a latency model: {exc}") from None
        model = cls.from_dict(data, source=str(path))
        model.check(model_fingerprint, source=str(path))
        return model

    def check(self, fingerprint: str | None, source: str = "the latency model") -> None:
        """ConfigError unless the model was built for ``fingerprint`` (None: no check)."""
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise ConfigError(f"{source} was built for {self.fingerprint}, not for this model "
                              f"({fingerprint}): profile this model with 'hybridmoo profile'")

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency model") -> LatencyModel:
        """Rebuild a model from :meth:`to_dict` output, checking every field."""
        def bad(what: str) -> ConfigError:
            return ConfigError(f"{source}: malformed latency model: {what}")

        if not isinstance(data, Mapping) or data.get("format") not in (1, FORMAT):
            raise bad(f"expected format 1 or {FORMAT}")
        for key, kind in (("fingerprint", str), ("device", str), ("device_type", str),
                          ("runtime", str), ("batch_size", int), ("threads", int)):
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise bad(f"{key} must be a {kind.__name__}")
        if data["runtime"] not in ("auto", "torch", "onnxruntime"):
            raise bad(f"unknown runtime {data['runtime']!r}")
        tables = data.get("tables")
        if not isinstance(tables, Mapping) or not tables:
            raise bad("no tables")
        parsed = {}
        for kind, t in tables.items():
            if kind not in LATENCY_KINDS or not isinstance(t, Mapping):
                raise bad(f"unknown table {kind!r}")
            try:
                per_mparam = t.get("per_mparam", {}) if data["format"] >= 2 else {}
                parsed[kind] = Table(_number(t["intercept"]),
                                     {str(k): _number(v) for k, v in t["per_layer"].items()},
                                     {str(k): _number(v) for k, v in t["per_mmac"].items()},
                                     {str(k): _number(v) for k, v in per_mparam.items()})
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise bad(f"table {kind!r}: {exc}") from None
            if set(parsed[kind].per_layer) != set(parsed[kind].per_mmac):
                raise bad(f"table {kind!r}: per_layer and per_mmac name different layer kinds")
            if not set(parsed[kind].per_mparam) <= set(parsed[kind].per_layer):
                raise bad(f"table {kind!r}: per_mparam names layer kinds per_layer lacks")
        quality = data.get("quality", {})
        if not isinstance(quality, Mapping):
            raise bad("quality must be a mapping")
        return cls(data["fingerprint"], data["device"], data["device_type"],
                   data["batch_size"], data["runtime"], parsed, data["threads"],
                   {str(k): v for k, v in quality.items()})


def _features(costs: Mapping[str, LayerCost], kinds: list[str]) -> list[float]:
    mmacs = dict.fromkeys(kinds, 0.0)
    count = dict.fromkeys(kinds, 0.0)
    mparams = dict.fromkeys(kinds, 0.0)
    for c in costs.values():
        mmacs[c.kind] += float(c.active) * float(c.macs) / 1e6
        count[c.kind] += float(c.active)
        mparams[c.kind] += float(c.active) * float(c.params) / 1e6
    return [*(mmacs[k] for k in kinds), *(count[k] for k in kinds),
            *(mparams[k] for k in kinds), 1.0]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)
