"""The preference model's queries and files."""

import json
import time

import numpy as np
import pytest
import torch

from hybridmoo.errors import ConfigError
from hybridmoo.paretoset.model import META_FILE, WEIGHTS_FILE, ParetoSet, PreferenceModel
from hybridmoo.space import Choice, SearchSpace

# names out of alphabetical order: the saved JSON sorts keys, the logits must not follow it
SPACE = SearchSpace({"width": Choice([0.25, 0.5, 1.0]), "bits": Choice([4, 8, 32]),
                     "depth": Choice([1, 2])})


def steered_model() -> PreferenceModel:
    """Logits that follow the preference: the task weight picks the largest values, a cost
    weight the smallest (a linear map, so configs change monotonically along a line)."""
    torch.manual_seed(0)
    model = PreferenceModel([d.size for d in SPACE.dims.values()])
    with torch.no_grad():
        model.body[0].weight.zero_()
        model.body[0].bias.zero_()
        model.body[0].weight[0] = torch.tensor([1.0, -0.5, -0.5])  # hidden unit 0: task - cost
        model.body[2].weight.zero_()
        model.body[2].bias.zero_()
        model.body[2].weight[0, 0] = 1.0
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.direct.weight.zero_()
        offset = 0
        for d in SPACE.dims.values():  # value i scores (i - middle) * unit 0 + a slope
            model.head.weight[offset:offset + d.size, 0] = torch.arange(d.size) - (d.size - 1) / 2
            model.head.bias[offset:offset + d.size] = -0.1 * (torch.arange(d.size)
                                                              - (d.size - 1) / 2)
            offset += d.size
    return model


def size_of(config):
    return {"latency_ms": config["width"] * config["depth"] * (config["bits"] / 32 + 1),
            "size_bytes": 1000 * config["width"] * config["bits"]}


def test_preferences_steer_the_config():
    ps = ParetoSet(steered_model(), SPACE)
    assert ps.config_for([1, 0, 0]) == {"width": 1.0, "bits": 32, "depth": 2}
    assert ps.config_for([0, 1, 0]) == {"width": 0.25, "bits": 4, "depth": 1}
    assert ps.configs_for([[1, 0, 0], [0, 0, 2]]) == [ps.config_for([1, 0, 0]),
                                                      ps.config_for([0, 0, 1])]


@pytest.mark.parametrize("bad", [[1, 0], [-1, 1, 1], [0, 0, 0], [np.nan, 1, 0], [[[1, 0, 0]]]])
def test_bad_preferences_are_clear_errors(bad):
    with pytest.raises(ConfigError, match="preference"):
        ParetoSet(steered_model(), SPACE).config_for(bad)


def test_a_cost_limit_gives_the_most_accurate_config_within_it():
    ps = ParetoSet(steered_model(), SPACE, costs=size_of)
    line = [ps.config_for([1 - t, t, 0]) for t in np.linspace(0, 1, 201)]
    for limit in (0.3, 0.6, 1.1, 2.5):
        config = ps.config_for(latency_ms=limit)
        assert size_of(config)["latency_ms"] <= limit
        within = [c for c in line if size_of(c)["latency_ms"] <= limit]
        assert config == within[0]  # the first along the line from "task only"
    assert ps.config_for(latency_ms=100.0) == ps.config_for([1, 0, 0])
    assert size_of(ps.config_for(size_bytes=5000))["size_bytes"] <= 5000
    with pytest.raises(ConfigError, match="cheapest it gives"):
        ps.config_for(latency_ms=0.01)
    for bad in ({"latency_ms": -1.0}, {"latency_ms": 1.0, "size_bytes": 1.0}, {}):
        with pytest.raises(ConfigError):
            ps.config_for(**bad)
    with pytest.raises(ConfigError, match="no cost predictor"):
        ParetoSet(steered_model(), SPACE).config_for(latency_ms=1.0)


def test_a_preference_query_takes_well_under_10_ms():
    ps = ParetoSet(steered_model(), SPACE)
    ps.config_for([0.5, 0.25, 0.25])
    began = time.perf_counter()
    for p in np.random.default_rng(0).dirichlet(np.ones(3), 50):
        ps.config_for(p)
    assert (time.perf_counter() - began) / 50 < 0.010


def test_files_round_trip_in_the_space_order(tmp_path):
    ps = ParetoSet(steered_model(), SPACE, info={"step": 3})
    ps.save(tmp_path)
    assert list(json.loads((tmp_path / META_FILE).read_text())["space"]) != list(SPACE.names)
    loaded = ParetoSet.load(tmp_path)
    assert loaded.space.names == SPACE.names and loaded.info == {"step": 3}
    for p in np.random.default_rng(1).dirichlet(np.ones(3), 20):
        assert loaded.config_for(p) == ps.config_for(p)


def test_damaged_files_are_refused(tmp_path):
    ParetoSet(steered_model(), SPACE).save(tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
    with pytest.raises(ConfigError, match="cut short"):
        ParetoSet.load(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="not a Pareto set model"):
        ParetoSet.load(tmp_path)
    with pytest.raises(ConfigError, match="no Pareto set model"):
        ParetoSet.load(tmp_path / "missing")


def test_a_model_for_another_space_is_refused():
    other = SearchSpace({"width": Choice([0.5, 1.0])})
    with pytest.raises(ConfigError, match="does not match"):
        ParetoSet(steered_model(), other)
