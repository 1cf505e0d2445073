"""Differentiable costs agree with the evaluator's counts and move with the gates."""

import copy

import pytest
import torch

from hybridmoo.evaluate.latency_model import LatencyModel, layer_costs
from hybridmoo.evaluate.measure import count_macs, size_bytes
from hybridmoo.quant import FakeQuant
from hybridmoo.refine.costs import (
    expected_costs,
    latency,
    macs_model,
    profile,
    total_bytes,
    total_macs,
)
from hybridmoo.refine.gates import GateBank, find_groups, layer_dims, plain_copy
from hybridmoo.supernet import make_supernet
from hybridmoo.supernet.training import prepare_subnet


def _setup(net, example):
    plain = plain_copy(net)
    groups = find_groups(plain, example)
    quant = {n: (m.w_bits, m.a_bits) for n, m in net.named_modules() if isinstance(m, FakeQuant)}
    return groups, profile(plain, example, quant)


@pytest.mark.parametrize("seed", [3, 4])
def test_full_width_costs_equal_the_evaluators_counts(subnet, random_config, data, seed):
    net = subnet(random_config(seed))
    example = data.val.tensors[0][:1]
    groups, prof = _setup(net, example)
    costs = expected_costs(prof, layer_dims(groups), [torch.ones(g.size) for g in groups])
    assert float(total_macs(costs)) == pytest.approx(count_macs(net, example), rel=1e-6)
    assert float(total_bytes(costs, prof)) == pytest.approx(size_bytes(net, example), rel=1e-6)
    model = macs_model()
    assert float(latency(costs, model)) == pytest.approx(model.predict(net, example), rel=1e-6)
    assert set(costs) >= set(layer_costs(net, example))


def _unfused_macs(net, example):
    """MACs with timm's attention run as explicit matmuls: whether a FLOP counter sees the
    fused kernel (F.scaled_dot_product_attention) depends on the torch version."""
    unfused = copy.deepcopy(net)
    for m in unfused.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return count_macs(unfused, example)


def test_vit_costs_count_attention_and_heads(data):
    sn = make_supernet("test_vit", num_classes=10, image_size=32)
    net = sn.extract(sn.largest())
    example = data.val.tensors[0][:1]
    groups, prof = _setup(net, example)
    ones = [torch.ones(g.size) for g in groups]
    full = total_macs(expected_costs(prof, layer_dims(groups), ones))
    assert float(full) == pytest.approx(_unfused_macs(net, example), rel=1e-6)
    heads = [i for i, g in enumerate(groups) if g.is_heads]
    halved = [k * 0.5 if i in heads else k for i, k in enumerate(ones)]
    assert float(total_macs(expected_costs(prof, layer_dims(groups), halved))) < float(full)


def test_vit_full_width_bytes_are_the_deployable_models(data, calib):
    """int8 Linear layers on tokens (their bias a float Add), LayerNorms, attention."""
    sn = make_supernet("test_vit", num_classes=10, image_size=32)
    config = {k: 8 if k.endswith("a_bits") else v for k, v in sn.largest().items()}
    net = prepare_subnet(sn, config, calib)
    example = data.val.tensors[0][:1]
    groups, prof = _setup(net, example)
    costs = expected_costs(prof, layer_dims(groups), [torch.ones(g.size) for g in groups])
    assert any(p.int8 for p in prof.layers.values())
    assert float(total_bytes(costs, prof)) == pytest.approx(size_bytes(net, example), rel=1e-6)


def test_costs_are_differentiable_and_fall_when_gates_close(subnet, mid_config, data):
    net = subnet(mid_config(w_bits=4))
    groups, prof = _setup(net, data.val.tensors[0][:1])
    bank = GateBank(groups, init=3.0, seed=0)
    costs = expected_costs(prof, layer_dims(groups), bank.keep_probs())
    fitted = LatencyModel.fit(
        [(layer_costs(net, data.val.tensors[0][:1]), "torch", 2.0)],
        fingerprint="t", device="cpu", runtime="torch")
    for value in (latency(costs, macs_model()), latency(costs, fitted),
                  total_bytes(costs, prof)):
        grads = torch.autograd.grad(value, list(bank.log_alpha), retain_graph=True)
        assert all(bool((g >= 0).all()) for g in grads)
        assert sum(float(g.sum()) for g in grads) > 0


@pytest.mark.parametrize("a_bits", [32, 8])  # float layers; int8 kernels, folded norms
def test_cost_model_on_the_hardening_decision_is_the_hardened_networks_cost(subnet, mid_config,
                                                                           data, a_bits):
    from hybridmoo.refine.gates import attach
    from hybridmoo.refine.harden import harden, kept_masks, kept_units

    net = subnet(mid_config(w_bits=4, a_bits=a_bits))
    example = data.val.tensors[0][:1]
    groups, prof = _setup(net, example)
    work = copy.deepcopy(net)
    gated = attach(work, groups, init=3.0, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # gates over the whole soft range
        for la in gated.bank.log_alpha:
            la.copy_(torch.empty(la.shape).uniform_(-4.0, 4.0, generator=g))
    kept = kept_units(gated.bank.test_gates(), groups, divisor=1)
    predicted = expected_costs(prof, layer_dims(groups), kept_masks(kept, groups))
    harden(gated, divisor=1)
    assert float(total_bytes(predicted, prof)) == pytest.approx(size_bytes(work, example), rel=1e-6)
    assert float(total_macs(predicted)) == pytest.approx(count_macs(work, example), rel=1e-6)
