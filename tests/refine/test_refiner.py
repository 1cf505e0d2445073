"""The Refiner the search calls: survivors in, refined and re-measured candidates out."""

import copy
import math

import pytest
import torch

from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.latency_model import LatencyModel, layer_costs
from hybridmoo.evaluate.measure import count_macs, size_bytes
from hybridmoo.objectives import EvalResult, Objective, minimization_matrix
from hybridmoo.preference import refinement_preference
from hybridmoo.refine import Refiner, RefineSettings
from hybridmoo.refine.costs import macs_model
from hybridmoo.refine.record import space_config
from hybridmoo.space import Candidate
from hybridmoo.supernet.training import accuracy

OBJECTIVES = (Objective("accuracy", "max"), Objective("latency_ms"), Objective("size_bytes"))


def _measure(data):
    example = data.val.tensors[0][:1]
    model = macs_model()

    def measure(net):
        return {"accuracy": 100.0 * accuracy(net, data.val),
                "latency_ms": model.predict(net, example), "size_bytes": size_bytes(net, example),
                "macs": count_macs(net, example)}
    return measure


def _survivors(trained, subnet, measure, configs):
    out = []
    for config in configs:
        values = measure(subnet(config))
        out.append(EvalResult(Candidate(config), {o.name: values[o.name] for o in OBJECTIVES}))
    return out


def test_refiner_returns_measured_refine_candidates_with_lineage(trained, subnet, data,
                                                                  mid_config):
    measure = _measure(data)
    small = dict(mid_config(w_bits=4), **{"layer3.0.width": 0.5, "layer4.0.width": 0.5})
    survivors = _survivors(trained, subnet, measure, [mid_config(w_bits=8), small])
    refiner = Refiner(trained, data, {"steps": 6, "recovery_steps": 6, "prune_rounds": 2,
                                      "checks": 2, "solver": "epo"}, measure=measure)
    results = refiner.refine(survivors, OBJECTIVES)
    assert len(results) == 2
    # each aimed at the gap next to it on the survivors' own front (which way depends on the
    # two measured points, so on library versions: the contract is the preference rule)
    F = minimization_matrix(survivors, OBJECTIVES)
    for i, (r, _) in enumerate(results):
        assert r.info["preference"] == pytest.approx(
            refinement_preference(F, i, OBJECTIVES).tolist(), abs=1e-6)
    for (result, net), parent in zip(results, survivors, strict=True):
        if result.info["rolled_back"]:
            assert not result.ok and net is None and result.reason.startswith("rolled back")
            continue
        assert result.ok and result.reason is None, result.reason
        assert result.candidate.origin == "refine"
        assert result.candidate.parents == (parent.key,)
        assert _describes(trained, result.info["hardened_config"], parent.config, net)
        assert trained.space.contains(result.config)  # what the proposers breed from
        assert result.config == space_config(trained.space, result.info["hardened_config"])
        assert result.info["solver"] == "epo" and result.info["steps"] == 6
        assert set(result.values) == {o.name for o in OBJECTIVES}
        assert all(math.isfinite(v) for v in result.values.values())
        assert result.values == {o.name: measure(net)[o.name] for o in OBJECTIVES}
        assert all(kept <= total for kept, total in result.info["channels"].values())


def _describes(trained, config, parent, net):
    """``config`` is the parent's with the widths of ``net``: same keys, bits unchanged,
    every width at most the parent's and equal to the hardened layer's."""
    if set(config) != set(parent):
        return False
    modules = dict(net.named_modules())
    for g in trained.layout.groups:
        layer = modules.get(g.root)
        layer = getattr(layer, "layer", layer)
        if layer is not None and config[g.dim] > parent[g.dim] + 1e-9:
            return False
    return all(config[k] == parent[k] for k in config if k.endswith("bits"))


def test_the_refined_config_is_the_hardened_network(trained, subnet, mid_config):
    from hybridmoo.refine.record import hardened_config

    config = mid_config(w_bits=8)
    net = subnet(dict(config, **{"layer2.0.width": 0.5}))
    described = hardened_config(trained, config, net)
    assert described["layer2.0.width"] == 0.5 and described["layer3.0.width"] == 1.0
    assert described["layer2.0.w_bits"] == 8


def test_what_refinement_changed_is_named_per_dimension():
    from hybridmoo.refine.record import changes

    parent = {"layer2.0.width": 1.0, "layer2.0.w_bits": 8}
    assert changes(parent, dict(parent), 12) == {"structure": {}, "weights": True}
    assert changes(parent, dict(parent, **{"layer2.0.width": 0.625}), 0) == {
        "structure": {"layer2.0.width": [1.0, 0.625]}, "weights": False}


def _drifting(data):
    """A measure whose latencies carry a factor the test sets (a machine that gets slower)."""
    base = _measure(data)
    drift = {"factor": 1.0}

    def measure(net):
        out = base(net)
        return {**out, "latency_ms": out["latency_ms"] * drift["factor"]}
    return measure, drift


def test_a_refined_networks_costs_are_measured_beside_its_parent(trained, subnet, data,
                                                                 mid_config):
    measure, drift = _drifting(data)
    parent_config = mid_config(w_bits=8)
    parent = _survivors(trained, subnet, measure, [parent_config])[0]
    refiner = Refiner(trained, data, {"steps": 2}, measure=measure)
    narrow = subnet(dict(parent_config, **{"layer3.0.width": 0.5, "layer4.0.width": 0.5}))
    truth = _measure(data)
    ratio = truth(narrow)["latency_ms"] / truth(subnet(parent_config))["latency_ms"]
    drift["factor"] = 2.0  # the parent was measured on a quiet machine, this is not
    # a new structure: its latency is the parent's recorded one times the side-by-side ratio
    values = refiner._beside_parent(narrow, parent, OBJECTIVES, restructured=True)
    assert values["latency_ms"] == pytest.approx(parent.values["latency_ms"] * ratio)
    assert values["size_bytes"] == size_bytes(narrow, data.val.tensors[0][:1])
    # the parent's structure and policy: its costs are the parent's, not noise around them
    same = subnet(parent_config)
    values = refiner._beside_parent(same, parent, OBJECTIVES, restructured=False)
    assert values["latency_ms"] == parent.values["latency_ms"]
    assert values["size_bytes"] == parent.values["size_bytes"]


def test_an_unrestructured_refinement_counts_only_when_it_is_more_accurate(trained, subnet,
                                                                           data, mid_config):
    from hybridmoo.tasks import RefineJob

    measure = _measure(data)
    survivor = _survivors(trained, subnet, measure, [mid_config(w_bits=8)])[0]
    unbeatable = EvalResult(survivor.candidate, {**survivor.values, "accuracy": 101.0})
    refiner = Refiner(trained, data, {"steps": 4, "recovery_steps": 4, "checks": 2},
                      measure=measure)
    # an accuracy-only preference prunes nothing: the parent's structure and policy
    out = refiner.refine_job(RefineJob(unbeatable, ((1.0, 0.0, 0.0),), 0, 1), OBJECTIVES)
    assert not out.result.ok and out.network is None
    assert out.result.info["rolled_back"] and out.result.reason.startswith("rolled back")
    if "changed" in out.result.info:  # refinement itself kept it: the parent check did not
        assert out.result.info["changed"]["structure"] == {}
        assert "the parent's structure and policy" in out.result.reason


def test_hardened_widths_map_to_the_nearest_choice_of_the_space():
    from hybridmoo.space import Choice, IntRange, SearchSpace

    space = SearchSpace({"w": Choice([0.25, 0.5, 0.75, 1.0]), "heads": Choice([2, 4]),
                         "depth": IntRange(1, 3), "bits": Choice([8, 32])})
    mapped = space_config(space, {"w": 0.6, "heads": 3, "depth": 2, "bits": 8})
    assert mapped == {"w": 0.5, "heads": 4, "depth": 2, "bits": 8}  # a tie goes to the wider
    assert space_config(space, {"w": 0.7, "heads": 1, "depth": 7, "bits": 32})["w"] == 0.75
    with pytest.raises(ConfigError, match="bits"):
        space_config(space, {"w": 0.5, "heads": 2, "depth": 1, "bits": "int4"})


def test_the_teacher_is_pluggable(trained, data):
    teacher = trained.extract(trained.largest())
    refiner = Refiner(trained, data, {"steps": 1}, measure=lambda n: {}, teacher=teacher)
    assert refiner.teacher() is teacher
    with pytest.raises(ConfigError, match=r"nn\.Module"):
        Refiner(trained, data, {"steps": 1}, measure=lambda n: {}, teacher="largest")


def test_a_rolled_back_refinement_leaves_nothing_in_refined(trained, subnet, data, mid_config,
                                                            tmp_path):
    from types import SimpleNamespace

    from hybridmoo.pipeline import _schedule

    measure = _measure(data)
    survivors = _survivors(trained, subnet, measure, [mid_config()])
    # validation images the survivor already gets right: no refinement can improve on it
    settings = {"steps": 2, "recovery_steps": 2, "max_prune": 0.0, "checks": 1}
    parent = Refiner(trained, data, settings, measure=measure).extract(mid_config())
    x, y = data.val.tensors
    with torch.no_grad():
        right = parent.eval()(x).argmax(-1) == y
    solved = copy.copy(data)
    solved.val = torch.utils.data.TensorDataset(x[right], y[right])
    cfg = SimpleNamespace(refine={"every": 1, "survivors": 1, "final_share": 0, "front": True,
                                  **settings},
                          train=SimpleNamespace(checkpoint=None, model="test_resnet"),
                          device="cpu")
    evaluator = SimpleNamespace(latency="measure", measure_network=measure)
    schedule = _schedule(cfg, trained, solved, evaluator, tmp_path)
    from hybridmoo.tasks import RefineJob

    out = schedule.worker(RefineJob(survivors[0], ((1 / 3, 1 / 3, 1 / 3),), 0, 1), OBJECTIVES)
    result = out.result
    assert not result.ok and result.info["rolled_back"] and out.network is None
    assert not (tmp_path / "refined").exists()


def test_a_failing_survivor_is_a_result_without_a_network(trained, subnet, data, mid_config):
    measure = _measure(data)
    weak = dict(mid_config(), **{k: 0.5 for k, d in trained.space.dims.items()
                                 if k.endswith("width") and d.contains(0.5)})
    survivors = _survivors(trained, subnet, measure, [weak])

    def broken(net):
        raise RuntimeError("device lost")

    refiner = Refiner(trained, data, RefineSettings(steps=2, recovery_steps=8, max_prune=0.0,
                                                    distill=False),
                      measure=broken)
    [(result, net)] = refiner.refine(survivors, OBJECTIVES)
    assert not result.ok and net is None
    assert "device lost" in result.reason and result.info["reason"] == result.reason
    failed = EvalResult(Candidate(mid_config()), ok=False, reason="x")
    assert refiner.refine([failed], OBJECTIVES) == []


def test_refiner_uses_a_fitted_latency_model(trained, subnet, data, mid_config):
    example = data.val.tensors[0][:1]
    samples = []
    for ratio in (0.25, 0.5, 1.0):
        config = dict(mid_config(w_bits=32),
                      **{k: ratio for k, dim in trained.space.dims.items()
                         if k.endswith("width") and dim.contains(ratio)})
        costs = layer_costs(subnet(config), example)
        samples.append((costs, "torch", 0.2 + sum(float(c.macs) for c in costs.values()) / 1e6))
    model = LatencyModel.fit(samples, fingerprint="t", device="cpu", runtime="torch")
    measure = _measure(data)
    survivors = _survivors(trained, subnet, measure, [mid_config(w_bits=32)])
    refiner = Refiner(trained, data, RefineSettings(steps=3, recovery_steps=3, distill=False),
                      measure=measure, latency_model=model)
    [(result, net)] = refiner.refine(survivors, OBJECTIVES)
    assert result.ok or result.info["rolled_back"], result.reason
    assert result.info["initial_costs"]["latency"] == pytest.approx(
        model.predict(subnet(mid_config(w_bits=32)), example), rel=0.05)
    assert result.ok == isinstance(net, torch.nn.Module)
