"""The contract every supernet keeps (subclass :class:`SupernetConformance` in a test).

A subclass provides the fixture ``supernet`` (a fresh :class:`hybridmoo.supernet.Supernet`
made at a small ``image_size``, e.g. 32). Use :func:`randomize_` on the model first: timm's
initialisation leaves some layers inert (zero classifier, layer scales of 1e-6, zero-init
BatchNorm), which would let a wrong sub-network pass the equality checks. Example::

    class TestTinyResNet(SupernetConformance):
        @pytest.fixture
        def supernet(self):
            model = randomize_(timm.create_model("test_resnet", num_classes=10))
            return make_supernet(model, image_size=32)
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hybridmoo.errors import ConfigError
from hybridmoo.quant import FakeQuant
from hybridmoo.space import Choice, IntRange, SearchSpace
from hybridmoo.supernet import Supernet
from hybridmoo.supernet.training import fp32
from hybridmoo.testing.relaxation import RelaxationChecks

FP32_TOLERANCE = 1e-4  # extracted vs supernet output, FP32, eval mode


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every constant-initialised tensor (norm scales and shifts, biases, layer scales,
    zero classifiers, BatchNorm statistics) random values, in place, so that every layer
    matters to the output. Returns ``model``."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.numel() > 1 and float(p.detach().float().std()) > 1e-3:
            continue
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p)
        scale_like = p.dim() == 1 and name.rsplit(".", 1)[-1] in ("weight", "gamma")
        p.copy_((1.0 + 0.2 * noise) if scale_like else 0.1 * noise)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


class SupernetConformance(RelaxationChecks):
    """Tests every supernet must pass (with the relaxed-config checks of
    :mod:`hybridmoo.testing.relaxation`)."""

    n_samples: ClassVar[int] = 5
    seed: ClassVar[int] = 0

    @pytest.fixture
    def supernet(self) -> Supernet:
        raise NotImplementedError("subclasses provide the `supernet` fixture")

    def images(self, sn: Supernet, n: int = 4, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, sn.in_chans, sn.image_size, sn.image_size, generator=gen)

    def configs(self, sn: Supernet) -> list[dict[str, Any]]:
        rng = np.random.default_rng(self.seed)
        return [sn.largest(), sn.smallest(),
                *(sn.space.sample(rng) for _ in range(self.n_samples))]

    def test_space_has_largest_and_smallest(self, supernet: Supernet) -> None:
        space = supernet.space
        assert isinstance(space, SearchSpace) and len(space) > 0
        assert all(isinstance(d, Choice | IntRange) for d in space.dims.values())
        assert space.contains(supernet.largest()) and space.contains(supernet.smallest())
        assert supernet.plan(supernet.largest()).is_full
        assert supernet.largest() != supernet.smallest()
        hooked = [n for n, m in supernet.model.named_modules()
                  if m._forward_hooks or m._forward_pre_hooks]
        assert not hooked, f"the largest FP32 config must run the plain model: {hooked}"

    def test_encode_decode_round_trip(self, supernet: Supernet) -> None:
        for config in self.configs(supernet):
            assert supernet.space.decode(supernet.space.encode(config)) == config

    def test_extracted_output_equals_supernet_output(self, supernet: Supernet) -> None:
        supernet.eval()
        x = self.images(supernet)
        full = count_params(supernet)
        for config in map(fp32, self.configs(supernet)):
            net = supernet.extract(config)
            with torch.no_grad():
                expected = supernet(x, config)
                got = net(x)
            assert got.shape == expected.shape
            diff = float((got - expected).abs().max())
            assert diff <= FP32_TOLERANCE, (config, diff)
            assert count_params(net) <= full
        smallest = supernet.extract(fp32(supernet.smallest()))
        assert count_params(smallest) < full
        with torch.no_grad():
            assert not torch.allclose(supernet(x, fp32(supernet.smallest())),
                                      supernet(x, supernet.largest()), atol=1e-3)

    def test_extracted_module_is_plain_torch(self, supernet: Supernet) -> None:
        supernet.eval()
        x = self.images(supernet, n=2)
        config = fp32(supernet.smallest())
        net = supernet.extract(config)
        hybrid = [type(m).__name__ for m in net.modules()
                  if type(m).__module__.startswith("hybridmoo")]
        assert not hybrid, hybrid
        clone = copy.deepcopy(net)
        with torch.no_grad():
            assert torch.equal(clone(x), net(x))
        again = supernet.extract(config)  # the same structure, rebuilt: weights load strictly
        again.load_state_dict(net.state_dict(), strict=True)

    def test_params_and_macs_never_grow_when_a_dim_shrinks(self, supernet: Supernet) -> None:
        supernet.eval()
        x = self.images(supernet, n=1)
        config = fp32(supernet.largest())
        params, flops = count_params(supernet.model), count_flops(supernet.model, x)
        start = (params, flops)
        rng = np.random.default_rng(self.seed)
        names = [n for n in supernet.space.names if not n.endswith("_bits")]
        for name in rng.permutation(names)[:12]:
            dim = supernet.space.dims[str(name)]
            config = {**config, str(name): dim.value(0)}
            net = supernet.extract(config)
            p, f = count_params(net), count_flops(net, x)
            assert p <= params and f <= flops, (name, p, params, f, flops)
            params, flops = p, f
        assert params < start[0] and flops < start[1]

    def test_quantized_config_is_close_but_not_equal(self, supernet: Supernet) -> None:
        supernet.eval()
        supernet.calibrate([self.images(supernet, n=8, seed=s) for s in range(2)])
        x = self.images(supernet)
        quantized = [c for c in self.configs(supernet) if c != fp32(c)]
        assert quantized, "no sampled config quantizes anything"
        for config in quantized[:3]:
            net = supernet.extract(config)
            assert any(isinstance(m, FakeQuant) for m in net.modules())
            with torch.no_grad():
                reference = supernet(x, fp32(config))
                q = supernet(x, config)
                got = net(x)
            scale = float(reference.abs().max())
            error = float((q - reference).abs().max())
            assert 0 < error <= 0.5 * scale + 1e-6, (config, error, scale)
            assert float((got - q).abs().max()) <= 0.05 * error + FP32_TOLERANCE

    def test_train_mode_matches_extracted_and_keeps_masked_statistics(
            self, supernet: Supernet) -> None:
        x = self.images(supernet, n=8)
        config = fp32(supernet.smallest())
        plan = supernet.plan(config)
        net = supernet.extract(config).train()
        before = {k: v.clone() for k, v in supernet.model.named_buffers()}
        supernet.train()
        out = supernet(x, config)
        out.float().pow(2).mean().backward()
        assert float((out.detach() - net(x).detach()).abs().max()) <= FP32_TOLERANCE
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
                   for p in supernet.parameters())
        supernet.zero_grad(set_to_none=True)
        buffers = dict(supernet.model.named_buffers())
        groups = {g.root: g for g in supernet.layout.groups}
        for root, pruned in plan.channels.items():  # removed channels keep their statistics
            for member in groups[root].members:
                key = f"{member.name}.running_mean"
                if member.out and key in buffers and member.pruned(pruned):
                    idx = member.pruned(pruned)
                    assert torch.equal(buffers[key][idx], before[key][idx]), key
        for block in plan.skip:  # removed blocks keep all of theirs
            for key, value in buffers.items():
                if key.startswith(f"{block}.") and "running" in key:
                    assert torch.equal(value, before[key]), key

    def test_a_sub_network_costs_what_it_is(self, supernet: Supernet) -> None:
        """The supernet runs a sub-network with the extracted network's FLOPs (slicing), not
        the full model's (masking)."""
        supernet.eval()
        x = self.images(supernet, n=1)
        plans = []
        for config in map(fp32, self.configs(supernet)[1:4]):
            ours = count_flops(lambda v, c=config: supernet(v, c), x)
            theirs = count_flops(supernet.extract(config), x)
            assert ours <= 1.01 * theirs, (config, ours, theirs)
            plans.append(supernet.execution_plan(config))
        assert any(p.sliced for p in plans) and not any(p.masked for p in plans), plans

    def test_sliced_gradients_equal_masked_gradients(self, supernet: Supernet) -> None:
        """Two sub-networks' backward passes accumulate the same gradients and BatchNorm
        statistics through slices as through masks (the reference), quantized ones too."""
        supernet.calibrate([self.images(supernet, n=8, seed=s) for s in range(2)])
        masked = copy.deepcopy(supernet)
        masked.execution = "mask"
        x = self.images(supernet, n=8)
        configs = self.configs(supernet)[1:]
        pair = [fp32(configs[0]), next((c for c in configs if c != fp32(c)), configs[1])]
        for sn in (supernet, masked):
            sn.train()
            sn.zero_grad(set_to_none=True)
            for config in pair:
                sn(x, config).float().pow(2).mean().backward()
        assert_same_gradients(supernet, masked)
        for (name, b), c in zip(supernet.named_buffers(), masked.buffers(), strict=True):
            assert torch.allclose(b.float(), c.float(), atol=1e-5), name

    def test_one_sgd_step_matches_the_extracted_network(self, supernet: Supernet) -> None:
        """One SGD step on a config through the supernet changes the shared weights as the
        same step changes the extracted network's: re-extracted, they are equal, and no
        entry outside the sub-network moved."""
        x = self.images(supernet, n=8)
        y = torch.arange(8) % 3
        config = fp32(self.configs(supernet)[2])
        net = supernet.extract(config).train()
        before = {k: v.detach().clone() for k, v in supernet.state_dict().items()}
        net_before = {k: v.detach().clone() for k, v in net.state_dict().items()}
        supernet.train()
        for model, run in ((supernet, lambda v: supernet(v, config)), (net, net)):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(run(x).float(), y).backward()
            optimizer.step()
        again = supernet.extract(config).state_dict()
        for key, value in net.state_dict().items():
            assert torch.allclose(again[key].float(), value.float(), atol=1e-5), key
        moved = sum(int((v != before[k]).sum()) for k, v in supernet.state_dict().items()
                    if v.is_floating_point())
        net_moved = sum(int((v != net_before[k]).sum()) for k, v in net.state_dict().items()
                        if v.is_floating_point())
        assert 0 < moved <= net_moved, (moved, net_moved)

    def test_bad_configs_and_inputs_are_clear_errors(self, supernet: Supernet) -> None:
        config = supernet.largest()
        name = supernet.space.names[0]
        for bad in ({**config, "no_such_dim": 1}, {k: v for k, v in config.items() if k != name},
                    {**config, name: -7}, "not a dict"):
            with pytest.raises(ConfigError):
                supernet.extract(bad)
            with pytest.raises(ConfigError):
                supernet.set_active(bad)
        x = self.images(supernet, n=1)
        for bad_x in (x[:, :1], x[0], torch.zeros(1, supernet.in_chans, 2, 2)):
            with pytest.raises(ConfigError):
                supernet(bad_x)


def assert_same_gradients(ours: nn.Module, reference: nn.Module) -> None:
    """Every parameter of ``ours`` has ``reference``'s gradient (a missing one counts as
    zero), within 1e-3 of the reference's largest entry."""
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        h = q.grad if q.grad is not None else torch.zeros_like(q)
        scale = float(h.abs().max()) + 1e-6
        assert float((g - h).abs().max()) <= 1e-3 * scale + 1e-6, name


def mixed_policy(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every bit width in use: weights cycling 4, 8, 32 bits and layer inputs
    8, 8, 32 bits over the blocks (a quantized config for export and size checks)."""
    out = dict(config)
    w = a = 0
    for name in out:
        if name.endswith("w_bits"):
            out[name], w = (4, 8, 32)[w % 3], w + 1
        elif name.endswith("a_bits"):
            out[name], a = (8, 8, 32)[a % 3], a + 1
    return out


class PlainDataset:
    """A TensorDataset's examples as a plain map-style dataset (no tensors to slice, no class
    metadata): what a user's own ``Dataset`` looks like to the pipeline. ``shift`` is added
    to every image (different data of the same shape)."""

    def __init__(self, part: Any, shift: float = 0.0) -> None:
        self.x, self.y = part.tensors
        self.shift = shift

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.x[index] + self.shift, int(self.y[index])
