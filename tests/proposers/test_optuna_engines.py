"""Optuna engines: persisted studies mirror what was told; fresh restarts; bad URLs."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hybridmoo import Choice, ConfigError, Constraint, IntRange, Objective, SearchSpace
from hybridmoo.objectives import EvalResult, run_evaluation
from hybridmoo.proposers import make_proposer
from hybridmoo.proposers.optuna_engines import OptunaProposer
from hybridmoo.space import Candidate

OBJECTIVES = (Objective("loss"), Objective("score", "max"))
CONSTRAINTS = (Constraint("load", max=10.0), Constraint("size", min=2.0))
SPACE = SearchSpace({"b": IntRange(0, 30), "k": Choice(["x", "y", "z"]), "m": IntRange(-3, 3)})
ALGORITHMS = ("optuna-nsga2", "optuna-tpe")


def evaluate(config):
    if config["b"] % 5 == 0:
        raise RuntimeError("diverged")
    return {"loss": config["b"] + config["m"] ** 2, "score": -abs(config["b"] - 15),
            "load": config["b"], "size": len(config["k"]) + config["m"]}


def drive(proposer, rounds, n=5):
    results = []
    for _ in range(rounds):
        batch = proposer.ask(n)
        told = [run_evaluation(evaluate, c, OBJECTIVES, CONSTRAINTS) for c in batch]
        proposer.tell(told[::-1])
        results += told
    return results


def own_trials(study, *states):
    """Trials for handed-out or told configs (not the sampler's answered repeats)."""
    return [t for t in study.get_trials(deepcopy=False, states=states or None)
            if "repeat_of" not in t.user_attrs]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sqlite_study_holds_the_told_trials(tmp_path, algorithm):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    p = make_proposer(algorithm, SPACE, OBJECTIVES, CONSTRAINTS, seed=0, storage=url)
    results = drive(p, 5)
    ok = [r for r in results if r.ok]
    assert 0 < len(ok) < len(results)

    study = optuna.load_study(study_name=f"hybridmoo-{algorithm[7:]}-seed0", storage=url)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE,
                                optuna.study.StudyDirection.MAXIMIZE]
    assert len(own_trials(study)) == len(results)
    complete = own_trials(study, TrialState.COMPLETE)
    failed = own_trials(study, TrialState.FAIL)
    assert len(complete) == len(ok) and len(failed) == len(results) - len(ok)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    by_params = {tuple(sorted(t.params.items())): t for t in complete}
    for r in ok:
        t = by_params[tuple(sorted(r.config.items()))]
        assert t.values == [r.values["loss"], r.values["score"]]
        expected = [r.constraints["load"], r.constraints["size"]]
        assert t.user_attrs["constraints"] == expected
        stored = (t.constraints.values() if hasattr(t, "constraints")  # optuna >= 5
                  else t.system_attrs["constraints"])
        assert sorted(stored) == sorted(expected)
    assert all(t.user_attrs["failure"].startswith("RuntimeError") for t in failed)


def test_same_storage_and_name_starts_fresh(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = OptunaProposer(SPACE, OBJECTIVES, seed=2, storage=url, study_name="run")
    drive(first, 3)
    assert len(first.study.trials) >= 15
    other = OptunaProposer(SPACE, OBJECTIVES, seed=2, storage=url, study_name="other")
    drive(other, 1)

    again = OptunaProposer(SPACE, OBJECTIVES, seed=2, storage=url, study_name="run")
    assert again.study.trials == []
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names == ["other", "run"]
    assert len(optuna.load_study(study_name="other", storage=url).trials) == 5


@pytest.mark.parametrize("url", ["not a url", "nosuchdb://x/y",
                                 "sqlite:////no/such/directory/study.db"])
def test_bad_storage_url_is_a_config_error(url):
    with pytest.raises(ConfigError, match="storage") as info:
        make_proposer("optuna-nsga2", SPACE, OBJECTIVES, storage=url)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_results_nobody_asked_for_become_trials(algorithm):
    p = make_proposer(algorithm, SPACE, OBJECTIVES, CONSTRAINTS, seed=0)
    good = EvalResult(Candidate({"b": 3, "k": "y", "m": 1}), {"loss": 4.0, "score": -12.0},
                      {"load": -7.0, "size": 0.0})
    bad = EvalResult(Candidate({"b": 5, "k": "z", "m": 0}), ok=False, reason="oom")
    p.tell([good, bad])
    done, fail = p.study.trials
    assert done.state == TrialState.COMPLETE and done.params == good.config
    assert done.values == [4.0, -12.0] and done.user_attrs["constraints"] == [-7.0, 0.0]
    assert fail.state == TrialState.FAIL and fail.params == bad.config
    keys = [c.key for _ in range(6) for c in p.ask(5)]
    assert good.key not in keys and bad.key not in keys


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_small_space_is_exhausted_without_handing_out_repeats(algorithm):
    space = SearchSpace({"v": Choice([1, True, 1.0, "1"]), "n": IntRange(0, 2)})  # 12 configs
    p = make_proposer(algorithm, space, OBJECTIVES, seed=0)
    handed = []
    for _ in range(10):
        batch = p.ask(3)
        handed += batch
        p.tell([EvalResult(c, {"loss": c.config["n"], "score": len(handed)}) for c in batch])
    assert len({c.key for c in handed}) == len(handed) == 12
    kinds = {(type(c.config["v"]).__name__, c.config["v"]) for c in handed}
    assert kinds == {("int", 1), ("bool", True), ("float", 1.0), ("str", "1")}
    assert p.ask(3) == []
    assert all(t.state.is_finished() for t in p.study.trials)


def test_logging_verbosity_is_left_alone():
    before = optuna.logging.get_verbosity()
    drive(make_proposer("optuna-tpe", SPACE, OBJECTIVES, seed=0), 2)
    assert optuna.logging.get_verbosity() == before


def test_population_size_is_for_nsga2_only():
    p = make_proposer("optuna-nsga2", SPACE, OBJECTIVES, population_size=8)
    assert p.study.sampler.population_size == 8
    with pytest.raises(ConfigError, match="population_size"):
        make_proposer("optuna-tpe", SPACE, OBJECTIVES, population_size=8)
    with pytest.raises(ConfigError, match="population_size"):
        make_proposer("optuna-nsga2", SPACE, OBJECTIVES, population_size=1)
    assert make_proposer("optuna-tpe", SPACE, OBJECTIVES).name == "optuna-tpe"
