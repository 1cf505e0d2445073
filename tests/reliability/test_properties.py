"""Property-based tests (hypothesis): search spaces encode/decode exactly and validate with
ConfigError only; the run-config and training-config loaders accept every valid config and
answer every malformed one (random dicts, random YAML text, cut YAML files) with ConfigError
and nothing else."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridmoo.config import KEYS, RunConfig, load_run_config
from hybridmoo.errors import ConfigError
from hybridmoo.loading import load_yaml
from hybridmoo.proposers import available
from hybridmoo.space import Choice, IntRange, SearchSpace, _canonical, config_key
from hybridmoo.supernet.train_config import TrainConfig

EXAMPLES = 150  # per property (docs/reliability.md counts from this)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
INT64 = 2**63

scalars = st.one_of(st.text(max_size=8), st.integers(-10**6, 10**6), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False))
choices = st.lists(scalars, min_size=1, max_size=6, unique_by=_canonical).map(Choice)


@st.composite
def int_ranges(draw: st.DrawFn) -> IntRange:
    lo = draw(st.integers(-INT64, INT64 - 1))
    span = draw(st.sampled_from([0, 5, 10**6, INT64 - 2]))  # at most 2**63 - 1 values
    hi = draw(st.integers(lo, min(INT64 - 1, lo + span)))
    return IntRange(lo, hi)


names = st.text(min_size=1, max_size=6)
spaces = st.dictionaries(names, st.one_of(choices, int_ranges()), min_size=1, max_size=6).map(
    SearchSpace)


def same(a: dict, b: dict) -> bool:
    """Equal configs, telling 1, 1.0 and True apart."""
    return a.keys() == b.keys() and all(_canonical(a[k]) == _canonical(b[k]) for k in a)


@SETTINGS
@given(spaces, st.data())
def test_decode_encode_round_trip(space: SearchSpace, data: st.DataObject):
    index = np.array([data.draw(st.integers(0, int(n) - 1)) for n in space.sizes])
    config = space.decode(index)
    assert space.contains(config)
    np.testing.assert_array_equal(space.encode(config), index)
    assert same(space.decode(space.encode(config)), config)
    # the key is stable: equal for the same config in any key order, through JSON and back
    key = config_key(config)
    assert config_key(dict(reversed(list(config.items())))) == key
    assert config_key(json.loads(json.dumps(config))) == key
    assert space.canonical_key(config) == key


@SETTINGS
@given(spaces, st.data())
def test_distinct_configs_have_distinct_keys(space: SearchSpace, data: st.DataObject):
    a = space.decode([data.draw(st.integers(0, int(n) - 1)) for n in space.sizes])
    b = space.decode([data.draw(st.integers(0, int(n) - 1)) for n in space.sizes])
    assert (config_key(a) == config_key(b)) == same(a, b)


@SETTINGS
@given(spaces)
def test_a_space_survives_its_json(space: SearchSpace):
    again = SearchSpace.from_json(json.loads(json.dumps(space.to_json())))
    assert again == space and list(again.sizes) == list(space.sizes)
    rng = np.random.default_rng(0)
    for _ in range(3):
        config = space.sample(rng)
        assert again.contains(config) and same(again.decode(again.encode(config)), config)


junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@SETTINGS
@given(spaces, st.data())
def test_validate_raises_only_config_error(space: SearchSpace, data: st.DataObject):
    config = dict(space.decode(np.zeros(len(space), dtype=np.int64)))
    name = data.draw(st.sampled_from([*space.names, "not-a-dim"]))
    config[name] = data.draw(junk)
    if data.draw(st.booleans()):
        del config[data.draw(st.sampled_from(list(config)))]
    try:
        space.validate(config)
    except ConfigError:
        assert not space.contains(config)
        return
    assert space.contains(config)
    space.encode(config)


@SETTINGS
@given(junk)
def test_dimension_specs_raise_only_config_error(spec: object):
    with contextlib.suppress(ConfigError):
        SearchSpace({"x": spec})


# -- run configs -----------------------------------------------------------------------------

EVALUATE = "hybridmoo.testing.proposers:toy_evaluate"
SAFE_TARGETS = [EVALUATE, "hybridmoo.testing.proposers:SPACE", "hybridmoo.testing.proposers:nope",
                "no_such_module_xyz:f", "hybridmoo:__version__", "a:b:c", ":f", "m:"]
# no random "module:attribute" text: that could import any installed module
safe_text = st.text(max_size=10).filter(lambda s: ":" not in s) | st.sampled_from(SAFE_TARGETS)
values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | safe_text,
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(safe_text, inner, max_size=3), max_leaves=10)
keys = st.sampled_from(KEYS) | st.text(max_size=10)


@SETTINGS
@given(st.dictionaries(keys, values, max_size=8) | values)
def test_run_config_raises_only_config_error(data: object):
    try:
        RunConfig.from_dict(data)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# PyYAML does not read back every control character it writes (U+0085 becomes a space)
printable = st.characters(blacklist_categories=("Cc", "Cs"))
yaml_scalars = st.one_of(st.text(printable, max_size=8), st.integers(-10**6, 10**6),
                         st.booleans(), st.floats(allow_nan=False, allow_infinity=False))


@st.composite
def valid_run_configs(draw: st.DrawFn) -> dict:
    dims = draw(st.dictionaries(st.text(printable, min_size=1, max_size=6), st.one_of(
        st.lists(yaml_scalars, min_size=1, max_size=4, unique_by=_canonical),
        st.integers(-100, 100).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, 200)))
        .map(lambda r: {"int_range": list(r)})), min_size=1, max_size=4))
    objectives = draw(st.lists(st.fixed_dictionaries(
        {"name": st.text(printable, min_size=1, max_size=6)},
        optional={"direction": st.sampled_from(["min", "max"]),
                  "unit": st.text(printable, max_size=3)}),
        min_size=1, max_size=3, unique_by=lambda o: o["name"]))
    config = {"space": dims, "evaluate": EVALUATE, "objectives": objectives}
    optional = {"algorithm": st.sampled_from([s.name for s in available()]),
                "max_evals": st.integers(1, 10**6), "seed": st.integers(0, 2**32),
                "workers": st.integers(1, 8), "backend": st.just("local"),
                "constraints": st.just([{"name": "budget", "max": 1.5}])}
    for key, strategy in optional.items():
        if draw(st.booleans()):
            config[key] = draw(strategy)
    return config


@SETTINGS
@given(valid_run_configs())
def test_valid_run_configs_load(data: dict):
    config = RunConfig.from_dict(data)
    assert list(config.space.names) == list(data["space"])
    assert [o.name for o in config.objectives] == [o["name"] for o in data["objectives"]]
    for key in ("algorithm", "max_evals", "seed", "workers"):
        if key in data:
            assert getattr(config, key) == data[key]


@SETTINGS
@given(valid_run_configs(), st.data())
def test_yaml_files_load_whole_and_fail_cleanly_when_cut(tmp_path_factory, data: dict,
                                                         draw: st.DataObject):
    path = tmp_path_factory.mktemp("yaml") / "run.yaml"
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    whole = load_run_config(path)
    assert list(whole.space.names) == list(data["space"])
    cut = draw.draw(st.integers(0, len(text) - 1))
    path.write_text(text[:cut], encoding="utf-8")
    try:
        load_run_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)


yaml_text = st.lists(st.sampled_from(["space", "a", ":", " ", "\n", "- ", "[", "]", "{", "}",
                                        ",", "'", '"', "!!python/name:os.system", "&x", "*x",
                                        "1e-3", "max_evals", "\t", "#", "? ", "|", "%YAML"]),
                     max_size=20).map("".join) | st.text(max_size=40)


@SETTINGS
@given(yaml_text)
def test_random_yaml_text_parses_or_is_a_config_error(text: str):
    try:
        load_yaml(text)
    except ConfigError as exc:
        assert str(exc).startswith("invalid YAML") and "\n" not in str(exc)


train_keys = st.sampled_from([*TrainConfig.__dataclass_fields__]) | st.text(max_size=8)


@SETTINGS
@given(st.dictionaries(train_keys, values, max_size=6) | values)
def test_train_config_raises_only_config_error(data: object):
    with contextlib.suppress(ConfigError):
        TrainConfig.from_dict(data, base_dir=Path("."))


@pytest.mark.parametrize("bounds", [(0, INT64), (-INT64 - 1, 0), (-INT64, INT64 - 1)])
def test_int_ranges_beyond_64_bits_are_config_errors(bounds):
    with pytest.raises(ConfigError, match="IntRange"):
        SearchSpace({"x": IntRange(*bounds)})


@pytest.mark.parametrize("index", [2**53 + 1, 2**62 - 1, 2**63 - 2])
def test_large_integer_indices_decode_exactly(index):
    space = SearchSpace({"x": IntRange(0, 2**63 - 2)})
    assert space.decode(np.array([index])) == {"x": index}
    assert space.encode({"x": index}).tolist() == [index]


def test_numbers_that_are_not_finite_are_never_choices():
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match="Choice values"):
            Choice([value])
