"""The relaxed-config contract every supernet keeps (part of
:class:`hybridmoo.testing.spaces.SupernetConformance`): at a one-hot vertex, the relaxed
forward is the sub-network and the relaxed costs are the extracted network's; the cost's
gradient in one dimension's weights is what switching that dimension costs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hybridmoo.evaluate.latency import ORT_FP32, ORT_INT8
from hybridmoo.evaluate.latency_model import INT8, LatencyModel, Table, layer_costs
from hybridmoo.evaluate.size import size_bytes
from hybridmoo.paretoset.costs import RelaxedCosts, one_hot
from hybridmoo.paretoset.relaxed import RelaxedSupernet, frozen

SIZE_TOLERANCE = 2e-3  # a removed block's input and output tensors are counted apart


def random_latency_model(seed: int = 0) -> LatencyModel:
    """An onnxruntime CPU latency model with random positive coefficients for every layer
    kind, int8 or not (so the int8 runtime switch and every term are exercised)."""
    rng = np.random.default_rng(seed)
    kinds = [k + s for k in ("conv", "dwconv", "linear", "attention", "norm") for s in ("", INT8)]

    def table() -> Table:
        return Table(float(rng.random()), *({k: float(rng.random()) for k in kinds}
                                            for _ in range(3)))

    return LatencyModel("test", "cpu", "cpu", 1, "onnxruntime",
                        {ORT_FP32: table(), ORT_INT8: table()})


class RelaxationChecks:
    """Mixed into the supernet conformance suite (which provides ``supernet``, ``images``
    and ``configs``)."""

    def _calibrated(self, supernet: Any) -> torch.Tensor:
        x = self.images(supernet, n=8)
        supernet.calibrate([x])
        supernet.eval()
        return x

    def test_relaxed_forward_at_a_vertex_is_the_sub_network(self, supernet: Any) -> None:
        x = self._calibrated(supernet)
        relaxed = RelaxedSupernet(supernet)
        supernet.execution = "mask"
        for config in self.configs(supernet):
            with torch.no_grad():
                expected = supernet(x, config)
                got = relaxed(x, one_hot(supernet.space, config))
            scale = float(expected.abs().max()) + 1e-6
            assert float((got - expected).abs().max()) <= 1e-5 * scale, config

    def test_relaxed_forward_has_gradients_and_leaves_the_supernet_alone(
            self, supernet: Any) -> None:
        x = self._calibrated(supernet)
        relaxed = RelaxedSupernet(supernet)
        before = {k: v.clone() for k, v in supernet.state_dict().items()}
        supernet.train()
        supernet.execution = "mask"
        for config in self.configs(supernet)[:3]:  # batch statistics, detached: same output
            with torch.no_grad(), frozen(supernet.model):
                expected = supernet(x, config)
                got = relaxed(x, one_hot(supernet.space, config))
            scale = float(expected.abs().max()) + 1e-6
            assert float((got - expected).abs().max()) <= 1e-4 * scale, config
        weights = {k: (v * 0.9 + 0.1 / len(v)).requires_grad_(True)
                   for k, v in one_hot(supernet.space, supernet.largest()).items()}
        with frozen(supernet.model):
            relaxed(x, weights).pow(2).mean().backward()
        moved = [k for k, w in weights.items() if w.grad is not None and
                 float(w.grad.abs().sum()) > 0]
        assert len(moved) >= len(weights) // 2, moved
        assert all(p.grad is None for p in supernet.parameters())
        assert all(p.requires_grad for p in supernet.parameters())
        after = supernet.state_dict()
        assert all(torch.equal(v, after[k]) for k, v in before.items())

    def test_relaxed_costs_at_a_vertex_are_the_extracted_network_costs(
            self, supernet: Any) -> None:
        x = self._calibrated(supernet)
        model = random_latency_model()
        costs = RelaxedCosts(supernet, x, model)
        for config in self.configs(supernet):
            net = supernet.extract(config)
            got = costs.of_config(config)
            macs = sum(c.macs for c in layer_costs(net, x[:1]).values()
                       if not c.kind.startswith("norm"))
            assert abs(got["macs"] - macs) <= 1e-6 * macs, config
            expected = model.predict(net, x[:1])
            assert abs(got["latency_ms"] - expected) <= 1e-5 * expected, config
            expected = size_bytes(net, x)
            assert abs(got["size_bytes"] - expected) <= SIZE_TOLERANCE * expected, config

    def test_relaxed_cost_gradient_points_to_what_switching_a_dimension_costs(
            self, supernet: Any) -> None:
        """At a vertex, moving weight from a dimension's value to another changes the MACs
        as switching does: exactly where the layers it shrinks depend on it linearly, by
        the tangent where a layer's input and output both do (a quadratic term); the same
        sign and within a factor of 4 either way."""
        x = self._calibrated(supernet)
        costs = RelaxedCosts(supernet, x)
        config = self.configs(supernet)[2]
        weights = {k: v.requires_grad_(True) for k, v in one_hot(supernet.space,
                                                                  config).items()}
        costs(weights)["macs"].backward()
        base = costs.of_config(config)["macs"]
        checked = 0
        for name, d in supernet.space.dims.items():
            grad = weights[name].grad
            grad = torch.zeros(d.size) if grad is None else grad
            here = d.index(config[name])
            for i in range(d.size):
                switched = costs.of_config({**config, name: d.value(i)})["macs"] - base
                tangent = float(grad[i] - grad[here])
                if abs(switched) <= 1e-6 * base:
                    assert abs(tangent) <= 1e-4 * base, (name, i, tangent)
                    continue
                checked += 1
                assert 0.25 <= tangent / switched <= 4.0, (name, i, tangent, switched)
        assert checked > 0
