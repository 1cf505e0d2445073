"""refine_network: preferences steer it, solvers plug in, failures leave the survivor alone."""

import copy

import numpy as np
import pytest
import torch
from timm.models.resnet import ResNet

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.measure import count_macs
from hybridmoo.refine import RefineSettings, refine_network
from hybridmoo.supernet.training import accuracy

LATENCY_HEAVY = np.array([0.05, 0.9, 0.05])
ACCURACY_HEAVY = np.array([0.9, 0.05, 0.05])


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_latency_preference_prunes_and_accuracy_preference_keeps_accuracy(
        subnet, mid_config, data):
    net = subnet(mid_config(w_bits=8))
    example = data.val.tensors[0][:1]
    before_acc, before_macs = accuracy(net, data.val), count_macs(net, example)
    # the solver alone steers here: a budget this loose never binds
    settings = RefineSettings(steps=30, lr=1e-3, gate_lr=0.1, solver="linear", distill=False,
                              task_budget=1e3)
    fast = refine_network(net, data=data, settings=settings, preference=LATENCY_HEAVY)
    assert fast.ok and fast.reason is None and len(fast.losses) == 30
    assert count_macs(fast.network, example) < 0.9 * before_macs
    assert fast.final_costs["macs"] < fast.initial_costs["macs"]
    assert any(kept < total for kept, total in fast.channels.values())
    accurate = refine_network(net, data=data, settings=settings, preference=ACCURACY_HEAVY)
    assert accurate.ok
    assert accuracy(accurate.network, data.val) >= before_acc - 0.03
    assert count_macs(accurate.network, example) > count_macs(fast.network, example)
    assert type(fast.network) is ResNet and fast.network is not net


@pytest.mark.parametrize("solver", ["mgda", "epo", "pcgrad", "pareto-mtl"])
def test_refine_runs_with_each_solver(subnet, mid_config, data, trained, solver):
    net = subnet(mid_config(w_bits=4))
    teacher = trained.extract(trained.largest())
    out = refine_network(net, data=data, teacher=teacher, preference=[0.2, 0.4, 0.4],
                         settings=RefineSettings(steps=4, solver=solver, seed=1),
                         references=np.array([[0.6, 0.2, 0.2], [0.2, 0.4, 0.4]]), index=1)
    assert out.ok, out.reason
    assert len(out.gate_weights) == 4 and all(len(w) == 3 for w in out.gate_weights)
    assert all(np.isfinite(loss).all() for loss in out.losses)
    x = data.val.tensors[0][:8]
    assert out.network(x).shape == (8, 10)


def _hooked(net, after, scale):
    """``net`` whose training forwards (grad on, full batch) after the first ``after`` are
    multiplied by ``scale``."""
    calls = {"n": 0}

    def hook(_m, _args, out):
        if torch.is_grad_enabled() and out.shape[0] > 1:
            calls["n"] += 1
            if calls["n"] > after:
                return out * scale
        return out

    net.register_forward_hook(hook)
    return net


@pytest.mark.parametrize("scale, reason", [(float("nan"), "non-finite"),
                                           (-1e4, "exploded")])
def test_a_broken_step_leaves_the_survivor_unchanged(subnet, mid_config, data, scale, reason):
    net = _hooked(subnet(mid_config(w_bits=8)), after=2, scale=scale)
    before = _state(net)
    out = refine_network(net, data=data, settings=RefineSettings(steps=6, distill=False),
                         preference=LATENCY_HEAVY)
    assert not out.ok and reason in out.reason and "step 2" in out.reason
    assert out.network is net and len(out.losses) == 2
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_nan_batch_fails_before_the_first_step(subnet, mid_config, data):
    poisoned = copy.copy(data)
    images, labels = data.train.tensors
    poisoned.train = torch.utils.data.TensorDataset(images * float("nan"), labels)
    net = subnet(mid_config())
    out = refine_network(net, data=poisoned, settings=RefineSettings(steps=3, distill=False))
    assert not out.ok and "non-finite task loss before the first step" in out.reason
    assert not out.losses


def test_bad_preferences_are_config_errors(subnet, mid_config, data):
    net = subnet(mid_config())
    for bad, solver in (([1.0, 2.0], "mgda"), ([0.0, 0.0, 0.0], "mgda"),
                        ([1.0, 0.0, 0.0], "epo"), ([np.nan, 1.0, 1.0], "linear")):
        with pytest.raises(ConfigError):
            refine_network(net, data=data, preference=bad,
                           settings=RefineSettings(steps=1, solver=solver))


def test_the_task_budget_stops_pruning_before_the_network_collapses(subnet, mid_config, data):
    net = subnet(mid_config(w_bits=8))
    before_acc = accuracy(net, data.val)
    runs = {}
    for budget in (1.2, 1e3):
        settings = RefineSettings(steps=30, lr=3e-4, gate_lr=0.5, solver="linear",
                                  distill=False, task_budget=budget)
        runs[budget] = refine_network(net, data=data, settings=settings,
                                      preference=[0.02, 0.49, 0.49])
    guarded, free = runs[1.2], runs[1e3]
    assert guarded.ok and guarded.guarded_steps > 0 and free.guarded_steps == 0
    # without the budget the cost-heavy preference keeps closing gates and the loss climbs
    assert free.losses[-1][0] > 2 * guarded.losses[-1][0]
    assert accuracy(guarded.network, data.val) >= before_acc - 0.05
    assert guarded.final_costs["macs"] < guarded.initial_costs["macs"]


def test_precomputed_teacher_logits_distill_like_the_teacher(subnet, mid_config, data, trained):
    from hybridmoo.refine.loop import teacher_logits

    net = subnet(mid_config(w_bits=8))
    teacher = trained.extract(trained.largest()).eval()
    settings = RefineSettings(steps=5, solver="linear", seed=2)
    live = refine_network(net, data=data, teacher=teacher, settings=settings)
    logits = teacher_logits(teacher, data)
    assert logits.shape == (len(data.train), 10)
    cached = refine_network(net, data=data, teacher=logits, settings=settings)
    assert live.ok and cached.ok
    assert cached.start_task_loss == pytest.approx(live.start_task_loss, rel=1e-4)
    np.testing.assert_allclose(cached.losses, live.losses, rtol=1e-3)
    with pytest.raises(ConfigError, match="same length"):
        refine_network(net, data=data, teacher=logits[:10], settings=settings)
