import numpy as np
import pytest

from hybridmoo import Candidate, Choice, ConfigError, IntRange, SearchSpace

SPACE = SearchSpace({"op": Choice(["conv3", "conv1", "skip"]), "width": Choice([16, 32, 64]),
                     "depth": IntRange(1, 4), "flag": Choice([True, False, 1])})


def test_encode_decode_round_trip_for_every_sample():
    rng = np.random.default_rng(0)
    for _ in range(200):
        config = SPACE.sample(rng)
        assert SPACE.contains(config)
        assert SPACE.decode(SPACE.encode(config)) == config


def test_size_and_decode_clips_and_rounds():
    assert SPACE.size == 3 * 3 * 4 * 3
    assert SPACE.decode(np.array([2.6, -1, 99, 0.2])) == {
        "op": "skip", "width": 16, "depth": 4, "flag": True}


def test_choice_tells_one_true_and_one_point_zero_apart():
    dim = Choice([1, True, 1.0])
    assert [dim.index(v) for v in (1, True, 1.0)] == [0, 1, 2]
    assert Candidate({"x": 1}).key != Candidate({"x": True}).key


@pytest.mark.parametrize("config, message", [
    ({"op": "conv3", "width": 16, "depth": 1}, "misses"),
    ({"op": "conv3", "width": 16, "depth": 1, "flag": True, "extra": 1}, "unknown key"),
    ({"op": "conv5", "width": 16, "depth": 1, "flag": True}, "'op'"),
    ({"op": "conv3", "width": 16, "depth": 5, "flag": True}, "'depth'"),
    ({"op": "conv3", "width": 16, "depth": 2.0, "flag": True}, "'depth'"),
    ([1, 2, 3], "must be a dict"),
])
def test_validate_names_the_problem(config, message):
    assert not SPACE.contains(config)
    with pytest.raises(ConfigError, match=message):
        SPACE.validate(config)


@pytest.mark.parametrize("build, message", [
    (lambda: SearchSpace({}), "empty"),
    (lambda: Choice([]), "at least one"),
    (lambda: Choice([1, 1]), "unique"),
    (lambda: Choice([[1], 2]), "str, int, float or bool"),
    (lambda: Choice("abc"), "list of values"),
    (lambda: IntRange(3, 1), "lo <= hi"),
    (lambda: IntRange(0, 2.5), "int"),
    (lambda: SearchSpace({"a": {"range": [1, 2]}}), "unknown kind"),
    (lambda: SearchSpace({"": Choice([1])}), "non-empty"),
])
def test_bad_spaces_raise_config_error(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_json_round_trip_and_declarative_form():
    spec = SPACE.to_json()
    assert SearchSpace.from_json(spec) == SPACE
    assert SearchSpace({"d": {"int_range": [1, 4]}}).dims["d"] == IntRange(1, 4)


def test_candidate_key_is_stable_and_order_free():
    a = Candidate({"x": 1, "y": "b"})
    b = Candidate({"y": "b", "x": np.int64(1)}, origin="evo", parents=("p",))
    assert a.key == b.key and a == Candidate.from_json(a.to_json())
    assert isinstance(b.config["x"], int)


def test_a_refinement_method_is_part_of_a_refined_key():
    per_survivor = Candidate({"x": 1}, "refine", ("p",))
    tuned = Candidate({"x": 1}, "refine", ("p",), "front")
    assert len({Candidate({"x": 1}).key, per_survivor.key, tuned.key}) == 3
    assert Candidate.from_json(tuned.to_json()) == tuned
    assert "method" not in per_survivor.to_json()  # journals of earlier versions read alike
