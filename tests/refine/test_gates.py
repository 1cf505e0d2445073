"""Gates on extracted networks: open at the start, exact hardening, physical pruning."""

import copy

import pytest
import torch
from timm.models.resnet import ResNet

from hybridmoo.evaluate.measure import count_macs
from hybridmoo.quant import FakeQuant, weight_scales
from hybridmoo.refine.gates import (
    GateBank,
    GatedLayer,
    GateGroup,
    attach,
    find_groups,
    plain_copy,
)
from hybridmoo.refine.harden import harden, kept_units
from hybridmoo.refine.lsq import effective_steps
from hybridmoo.supernet import make_supernet


def _gated(net, example):
    work = copy.deepcopy(net)
    return work, attach(work, find_groups(plain_copy(net), example), init=3.0, seed=0)


@pytest.mark.parametrize("seed", [1, 2])
def test_gates_start_open_and_the_gated_net_equals_the_plain_one(subnet, random_config, data,
                                                                seed):
    net = subnet(random_config(seed))
    x = data.val.tensors[0][:16]
    work, gated = _gated(net, x[:1])
    assert gated.groups and all(g.size >= 2 for g in gated.groups)
    assert all(bool((v == 1).all()) for v in gated.bank.test_gates())
    assert any(isinstance(m, GatedLayer) for m in work.modules())
    torch.testing.assert_close(work(x), net(x), rtol=0, atol=1e-5)


def test_channel_groups_follow_the_extracted_widths(trained, subnet, data):
    config = dict(trained.largest(), **{"layer2.0.width": 0.5})
    groups = find_groups(plain_copy(subnet(config)), data.val.tensors[0][:1])
    sizes = {g.name: g.size for g in groups}
    assert sizes["layer2.0.conv1"] == 24  # half of 48 channels were extracted
    stream = next(g for g in groups if g.name == "conv1.6")
    assert {m.name for m in stream.members} >= {"bn1", "layer1.0.conv1", "layer2.0.conv1"}


def test_hardening_open_gates_keeps_the_outputs_and_the_network(subnet, mid_config, data):
    net = subnet(mid_config(w_bits=4, a_bits=8))
    x = data.val.tensors[0][:16]
    work, gated = _gated(net, x[:1])
    channels = harden(gated)
    assert all(kept == total for kept, total in channels.values())
    assert type(work) is ResNet and not any(isinstance(m, GatedLayer) for m in work.modules())
    assert sum(isinstance(m, FakeQuant) for m in work.modules()) == \
        sum(isinstance(m, FakeQuant) for m in net.modules())
    assert [p.shape for p in work.parameters()] == [p.shape for p in net.parameters()]
    torch.testing.assert_close(work(x), net(x), rtol=0, atol=1e-5)


def test_closed_gates_are_pruned_physically_with_the_gated_outputs(subnet, mid_config, data):
    net = subnet(mid_config(w_bits=8, a_bits=8))
    x = data.val.tensors[0][:16]
    work, gated = _gated(net, x[:1])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for la in gated.bank.log_alpha:  # close ~40 % of the gates, half-open a few
            r = torch.rand(la.shape, generator=g)
            la.copy_(torch.where(r < 0.4, -6.0, torch.where(r < 0.5, 0.5, 3.0)))
    gated_out = work(x)
    channels = harden(gated)
    assert any(kept < total for kept, total in channels.values())
    assert all(kept >= 1 for kept, _ in channels.values())
    torch.testing.assert_close(work(x), gated_out, rtol=0, atol=1e-4)
    assert count_macs(work, x[:1]) < 0.8 * count_macs(net, x[:1])
    assert type(work) is ResNet


def test_learned_steps_are_baked_so_fakequant_finds_them(subnet, mid_config, data):
    net = subnet(mid_config(w_bits=4))
    x = data.val.tensors[0][:8]
    work, gated = _gated(net, x[:1])
    layer = gated.layers["layer2.0.conv1"]
    with torch.no_grad():
        layer.log_step.add_(-0.3)  # a learned step that clips the largest weights
    expected = effective_steps(layer.layer.weight, layer.log_step.exp(), 4).clone()
    gated_out = work(x)
    harden(gated)
    fq = work.layer2[0].conv1
    assert isinstance(fq, FakeQuant) and fq.w_bits == 4
    torch.testing.assert_close(weight_scales(fq.layer.weight, 4), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(work(x), gated_out, rtol=0, atol=1e-4)


def test_kept_units_threshold_minimum_and_divisor():
    groups = [GateGroup("a", 4), GateGroup("b", 10), GateGroup("h", 3, head_dim=8)]
    gates = [torch.tensor([0.9, 0.2, 0.6, 0.0]), torch.zeros(10), torch.tensor([0.0, 0.3, 0.1])]
    gates[1][3] = 0.8
    assert kept_units(gates, groups) == [[0, 2], [3], [1]]
    assert kept_units(gates, groups, divisor=8)[1] == sorted(
        torch.argsort(-gates[1], stable=True)[:8].tolist())


def test_vit_heads_and_mlp_channels_are_gated_and_removed(data):
    torch.manual_seed(0)
    sn = make_supernet("test_vit", num_classes=10, image_size=32)
    net = sn.extract(sn.largest())
    x = data.val.tensors[0][:4]
    work, gated = _gated(net, x[:1])
    heads = [g for g in gated.groups if g.is_heads]
    assert len(heads) == 6 and all(g.size == 2 and g.head_dim == 32 for g in heads)
    assert any(g.name.endswith("mlp.fc1") for g in gated.groups)
    torch.testing.assert_close(work(x), net(x), rtol=0, atol=1e-5)
    with torch.no_grad():
        gated.bank.log_alpha[gated.groups.index(heads[0])][1] = -6.0
    gated_out = work(x)
    harden(gated)
    attn = work.get_submodule(heads[0].name)
    assert attn.num_heads == 1 and attn.qkv.out_features == 96 and attn.proj.in_features == 32
    torch.testing.assert_close(work(x), gated_out, rtol=0, atol=1e-5)


def test_one_gate_function_for_training_cost_and_hardening():
    """Over the whole soft range: a unit whose test-time gate lies in (0, 0.5) is removed by
    hardening and counted by the cost model as kept with probability below one half; the
    cost's keep probability is the probability that a sampled gate exceeds 0.5."""
    groups = [GateGroup("a", 241)]
    bank = GateBank(groups, init=0.0, seed=0)
    with torch.no_grad():
        bank.log_alpha[0].copy_(torch.linspace(-6.0, 6.0, 241))
    gate = bank.test_gates()[0]
    keep = bank.keep_probs()[0].detach()
    [kept] = kept_units([gate], groups)
    removed = sorted(set(range(241)) - set(kept))
    low = [i for i in range(241) if 0 < float(gate[i]) < 0.5]
    assert low and set(low) <= set(removed)
    assert all(float(keep[i]) <= 0.5 for i in removed)  # log_alpha 0 is the boundary
    assert all(float(keep[i]) > 0.5 for i in kept)
    assert all(float(gate[i]) > 0.5 for i in kept)
    bank.stochastic = True
    draws = torch.stack([bank._gate(bank.log_alpha[0]).detach() for _ in range(2000)])
    torch.testing.assert_close((draws > 0.5).float().mean(0), keep, atol=0.05, rtol=0)


def test_fixed_gates_are_the_decision_and_harden_exactly(subnet, mid_config, data):
    net = subnet(mid_config(w_bits=8))
    x = data.val.tensors[0][:16]
    work, gated = _gated(net, x[:1])
    kept = [list(range(0, g.size, 2)) if g.size >= 16 else list(range(g.size))
            for g in gated.groups]
    gated.bank.fix(kept)
    assert [torch.nonzero(v).flatten().tolist() for v in gated.bank.keep_probs()] == kept
    gated_out = work(x)
    channels = harden(gated)
    assert [k for k, _ in channels.values()] == [len(k) for k in kept]
    torch.testing.assert_close(work(x), gated_out, rtol=0, atol=1e-4)
