"""refine_network: it helps an under-trained network, the preference steers the hardened
cost, the cost model agrees with hardening, failures and roll-backs leave the survivor."""

import copy

import numpy as np
import pytest
import torch
from timm.models.resnet import ResNet

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.measure import size_bytes
from hybridmoo.refine import RefineSettings, refine_network
from hybridmoo.supernet.training import accuracy

ACCURACY_ONLY = np.array([1.0, 0.0, 0.0])
ACCURACY_HEAVY = np.array([0.9, 0.05, 0.05])
BALANCED = np.array([1.0, 1.0, 1.0]) / 3
COST_HEAVY = np.array([0.05, 0.475, 0.475])
SHORT = {"steps": 8, "recovery_steps": 12, "prune_rounds": 2, "checks": 2, "seed": 0}


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def weak(trained, calib):
    """A sub-network of the briefly trained supernet far from its ceiling (val < 90 %)."""
    from hybridmoo.supernet.training import prepare_subnet

    config = dict(trained.largest(), **{k: 0.5 for k, d in trained.space.dims.items()
                                        if k.endswith("width") and d.contains(0.5)})
    return prepare_subnet(trained, config, calib)


def test_refinement_helps_an_under_trained_network(weak, data):
    before = accuracy(weak, data.val)
    assert before < 0.9  # the premise: the network has something to gain
    out = refine_network(weak, data=data, preference=ACCURACY_ONLY,
                         settings=RefineSettings(**SHORT, distill=False))
    assert out.ok and out.reason is None, out.reason
    after = accuracy(out.network, data.val)
    assert after >= before + 0.05
    assert out.val_accuracy == pytest.approx((before, after))
    assert out.final_costs == out.initial_costs  # accuracy only: nothing is pruned
    assert type(out.network) is ResNet and out.network is not weak


def test_the_preference_steers_the_hardened_size_and_the_cost_model_agrees(weak, data):
    settings = RefineSettings(**SHORT, distill=False)
    sizes = []
    for pref in (ACCURACY_HEAVY, BALANCED, COST_HEAVY):
        out = refine_network(weak, data=data, preference=pref, settings=settings)
        assert out.reason is None or out.rolled_back, out.reason
        assert out.hard_costs[-1] <= out.target + 1e-9 or out.hard_costs[-1] < 1.0
        network = out.network if out.ok else None
        if network is not None:  # the cost model's bytes are the hardened network's
            assert out.final_costs["bytes"] == pytest.approx(
                size_bytes(network, data.val.tensors[0][:1]), rel=0.05)
        sizes.append(out.final_costs["bytes"])
    assert sizes[0] >= sizes[1] >= sizes[2] and sizes[2] < sizes[0]
    assert sizes[2] < 0.9 * out.initial_costs["bytes"]


def solved_by(net, data):
    """``data`` with only the validation examples ``net`` already gets right."""
    x, y = data.val.tensors
    with torch.no_grad():
        right = net.eval()(x).argmax(-1) == y
    solved = copy.copy(data)
    solved.val = torch.utils.data.TensorDataset(x[right], y[right])
    return solved


def test_a_refinement_that_does_not_help_is_rolled_back(weak, data):
    # validation examples the parent already gets right: accuracy cannot improve on them, and
    # an accuracy-only preference prunes nothing, so no refinement can help
    solved = solved_by(weak, data)
    before = _state(weak)
    out = refine_network(weak, data=solved, preference=ACCURACY_ONLY,
                         settings=RefineSettings(**SHORT, distill=False))
    assert not out.ok and out.rolled_back and out.reason.startswith("rolled back")
    assert out.network is weak and out.score <= 0 and out.val_accuracy[0] == 1.0
    assert all(torch.equal(before[k], v) for k, v in weak.state_dict().items())



def test_recovery_stops_after_patience_checkpoints_without_a_better_one(weak, data):
    # validation labels no network predicts (a class past the last): every checkpoint scores
    # 0, so none beats the first, whatever the numerics of the training steps
    x, _ = data.val.tensors
    solved = copy.copy(data)
    solved.val = torch.utils.data.TensorDataset(x, torch.full((len(x),), 10_000))
    common = {"steps": 0, "recovery_steps": 40, "checks": 4, "seed": 0, "distill": False}
    out = refine_network(weak, data=solved, preference=ACCURACY_ONLY,
                         settings=RefineSettings(**common, patience=1))
    assert len(out.recovery_losses) == 10 and [s for s, _ in out.checkpoints] == [0, 10]
    out = refine_network(weak, data=solved, preference=ACCURACY_ONLY,
                         settings=RefineSettings(**common, patience=0))  # never stops early
    assert len(out.recovery_losses) == 40 and len(out.checkpoints) == 5

def test_the_verdict_weighs_relative_gains_by_the_preference():
    from hybridmoo.refine.decide import judge

    parent = {"accuracy": 0.90, "latency": 2.0, "bytes": 1000.0}
    smaller = {"accuracy": 0.89, "latency": 1.6, "bytes": 700.0}  # 10 % more error, -30 % size
    assert judge(COST_HEAVY, parent, smaller).improved
    assert not judge(ACCURACY_HEAVY, parent, smaller).improved
    worse = {"accuracy": 0.85, "latency": 2.1, "bytes": 1000.0}
    assert not any(judge(p, parent, worse).improved
                   for p in (ACCURACY_ONLY, BALANCED, COST_HEAVY, [0.0, 1.0, 0.0]))
    same = dict(parent)
    assert not judge(BALANCED, parent, same).improved


@pytest.mark.parametrize("solver", ["mgda", "epo", "pcgrad", "pareto-mtl", "chebyshev"])
def test_refine_runs_with_each_solver(subnet, mid_config, data, trained, solver):
    net = subnet(mid_config(w_bits=4))
    teacher = trained.extract(trained.largest())
    out = refine_network(net, data=data, teacher=teacher, preference=[0.2, 0.4, 0.4],
                         settings=RefineSettings(steps=4, recovery_steps=2, prune_rounds=2,
                                                 checks=1, solver=solver, seed=1),
                         references=np.array([[0.6, 0.2, 0.2], [0.2, 0.4, 0.4]]), index=1)
    assert out.ok or out.rolled_back, out.reason
    assert len(out.gate_weights) == 2 and all(len(w) == 3 for w in out.gate_weights)
    assert all(np.isfinite(loss).all() for loss in out.losses)
    assert out.network(data.val.tensors[0][:8]).shape == (8, 10)


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
    out = refine_network(net, data=data, settings=RefineSettings(**SHORT, distill=False),
                         preference=COST_HEAVY)
    assert not out.ok and not out.rolled_back and reason in out.reason
    assert "step 2" in out.reason and out.network is net
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


def test_precomputed_teacher_logits_distill_like_the_teacher(subnet, mid_config, data, trained):
    from hybridmoo.refine.loop import teacher_logits

    net = subnet(mid_config(w_bits=8))
    teacher = trained.extract(trained.largest()).eval()
    settings = RefineSettings(steps=4, recovery_steps=0, prune_rounds=2, checks=1, seed=2)
    live = refine_network(net, data=data, teacher=teacher, settings=settings)
    logits = teacher_logits(teacher, data)
    assert logits.shape == (len(data.train), 10)
    cached = refine_network(net, data=data, teacher=logits, settings=settings)
    assert cached.start_task_loss == pytest.approx(live.start_task_loss, rel=1e-4)
    np.testing.assert_allclose(cached.losses, live.losses, rtol=1e-3)
    with pytest.raises(ConfigError, match="same length"):
        refine_network(net, data=data, teacher=logits[:10], settings=settings)
