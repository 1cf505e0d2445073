"""Front tuning (hybridmoo.refine.front and Refiner.tune_front): the shared weights tuned on
a front's configs lift every one of them, within a time budget, and the records it returns."""

import copy

import pytest
import torch

from hybridmoo.objectives import EvalResult, Objective
from hybridmoo.refine import Refiner, RefineSettings
from hybridmoo.refine.front import TIMING_STEPS, tune_front
from hybridmoo.space import Candidate
from hybridmoo.supernet.training import accuracy, prepare_subnet
from hybridmoo.tasks import FrontJob

OBJECTIVES = (Objective("accuracy", "max"), Objective("size_bytes"))
SETTINGS = {"front_steps": 30, "front_configs_per_step": 2, "seed": 0}


@pytest.fixture(scope="module")
def weak_front(trained):
    """Two configs of the briefly trained supernet far from their ceiling (half and
    smallest widths)."""
    half = dict(trained.largest(), **{k: 0.5 for k, d in trained.space.dims.items()
                                      if k.endswith("width") and d.contains(0.5)})
    return [half, dict(trained.smallest(), **{k: 32 for k in trained.smallest()
                                              if k.endswith("_bits")})]


def test_front_tuning_lifts_every_config_and_leaves_the_supernet(trained, data, calib,
                                                                  weak_front):
    before = [accuracy(prepare_subnet(trained, c, calib), data.val) for c in weak_front]
    assert max(before) < 0.95  # the premise: something to gain
    weights = copy.deepcopy(trained.state_dict())
    tuned, steps = tune_front(trained, weak_front, data, RefineSettings(**SETTINGS), None)
    assert steps == 30 and tuned is not trained
    after = [accuracy(prepare_subnet(tuned, c, calib), data.val) for c in weak_front]
    assert all(a >= b + 0.01 for a, b in zip(after, before, strict=True)), (before, after)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in weights.items())


def test_the_budget_holds_the_steps_that_fit(trained, data, weak_front):
    settings = RefineSettings(**SETTINGS)
    _, steps = tune_front(trained, weak_front, data, settings, None, budget_s=0.0)
    assert steps == TIMING_STEPS  # timed, then nothing more fits
    with pytest.raises(ValueError, match="at least one config"):
        tune_front(trained, [], data, settings, None)


def test_the_refiner_returns_a_measured_network_per_survivor_or_rolls_it_back(
        trained, data, weak_front):
    def measure(net):
        return {"accuracy": 100.0 * accuracy(net, data.val), "size_bytes": 1.0}

    refiner = Refiner(trained, data, {**SETTINGS, "front_steps": 60}, measure=measure)
    # the parents measured as the search measures them (its calibration is the refiner's)
    survivors = [EvalResult(Candidate(c), measure(refiner.extract(c)), elapsed_s=0.1)
                 for c in weak_front]
    # a parent no tuning can beat (its recorded accuracy is 100 %): rolled back
    best = EvalResult(Candidate(dict(weak_front[0], **{"layer1.0.width": 1.0})),
                      {"accuracy": 100.0, "size_bytes": 1.0})
    out = refiner.refine_job(FrontJob((*survivors, best), 1, budget_s=None), OBJECTIVES)
    assert len(out) == 3
    for refined, parent in zip(out[:2], survivors, strict=True):
        r = refined.result
        assert r.ok and r.candidate.method == "front" and r.candidate.origin == "refine"
        assert r.config == parent.config and r.candidate.parents == (parent.key,)
        assert r.key != parent.key and r.values["accuracy"] > parent.values["accuracy"]
        assert r.info["front_steps"] == 60 and r.info["front_configs"] == 3
        assert r.values == measure(refined.network)
    rolled = out[2]
    assert not rolled.result.ok and rolled.network is None
    assert rolled.result.info["rolled_back"] and "did not improve" in rolled.result.reason
