"""DEAP engines: Deb's feasibility rule, no repeated configs, lineage, no global ``random``."""

from __future__ import annotations

import random

import pytest

from hybridmoo import Choice, ConfigError, Constraint, IntRange, Objective, SearchSpace
from hybridmoo.objectives import EvalResult, run_evaluation
from hybridmoo.proposers import make_proposer
from hybridmoo.proposers.deap_engines import DeapProposer, Individual
from hybridmoo.space import Candidate

OBJECTIVES = (Objective("loss"), Objective("score", "max"))
CONSTRAINTS = (Constraint("load", max=0.0),)
SPACE = SearchSpace({"b": IntRange(0, 40), "k": Choice(["x", "y", "z"]), "m": IntRange(-3, 3)})
ALGORITHMS = ("deap-nsga2", "deap-spea2")


def evaluate(config):
    """b < 8 fails, 8 <= b < 20 violates the constraint by 20 - b, b >= 20 is feasible."""
    if config["b"] < 8:
        raise RuntimeError("diverged")
    return {"loss": config["b"] + config["m"] ** 2,
            "score": -abs(config["b"] - 30) + len(config["k"]),
            "load": max(0.0, 20.0 - config["b"])}


def drive(proposer, rounds, n=7):
    """ask(n)/tell loop; returns every (candidate, result) in order."""
    out = []
    for _ in range(rounds):
        batch = proposer.ask(n)
        results = [run_evaluation(evaluate, c, OBJECTIVES, CONSTRAINTS) for c in batch]
        proposer.tell(results[::-1])  # any order
        out += list(zip(batch, results, strict=True))
    return out


def result(config, loss=0.0, score=0.0, load=0.0, ok=True):
    if not ok:
        return EvalResult(Candidate(config), ok=False, reason="boom")
    return EvalResult(Candidate(config), {"loss": loss, "score": score}, {"load": load})


@pytest.mark.parametrize("selection", ["nsga2", "spea2"])
def test_survival_puts_feasible_first_then_least_violation_and_failures_last(selection):
    p = DeapProposer(SPACE, OBJECTIVES, CONSTRAINTS, seed=0, selection=selection, pop_size=4)
    configs = [{"b": b, "k": "x", "m": 0} for b in range(6)]
    pool = [result(configs[0], ok=False),
            result(configs[1], loss=-100.0, score=100.0, load=5.0),  # superb but infeasible
            result(configs[2], loss=9.0, score=0.0),
            result(configs[3], loss=-50.0, score=50.0, load=1.0),
            result(configs[4], loss=8.0, score=1.0),
            result(configs[5], ok=False)]
    survivors = p._survive([Individual(p._genome(r.config), r) for r in pool])
    assert [s.result.config["b"] for s in survivors][2:] == [3, 1]
    assert {s.result.config["b"] for s in survivors[:2]} == {2, 4}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_infeasible_and_failed_never_parent_once_enough_feasible(algorithm):
    pop_size = 6
    p = make_proposer(algorithm, SPACE, OBJECTIVES, CONSTRAINTS, seed=3, pop_size=pop_size)
    feasible_told: set[str] = set()
    infeasible_told: set[str] = set()
    checked = 0
    for _ in range(30):
        batch = p.ask(pop_size)
        if len(feasible_told) >= pop_size:
            for c in batch:
                if c.origin == "evo":
                    assert not set(c.parents) & infeasible_told
                    checked += 1
        results = [run_evaluation(evaluate, c, OBJECTIVES, CONSTRAINTS) for c in batch]
        for r in results:
            (feasible_told if r.feasible else infeasible_told).add(r.key)
        p.tell(results)
    assert infeasible_told and checked > 50


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_never_repeats_and_exhausts_a_small_space(algorithm):
    space = SearchSpace({"a": Choice(["p", "q", "r"]), "n": IntRange(1, 8)})  # 24 configs
    p = make_proposer(algorithm, space, OBJECTIVES, seed=1, pop_size=5)
    keys = []
    for _ in range(40):
        batch = p.ask(4)
        keys += [c.key for c in batch]
        p.tell([EvalResult(c, {"loss": c.config["n"], "score": len(keys) % 3}) for c in batch])
    assert len(keys) == len(set(keys)) == 24
    assert p.ask(4) == []


def test_configs_told_from_elsewhere_are_not_proposed():
    space = SearchSpace({"n": IntRange(0, 9)})
    p = DeapProposer(space, OBJECTIVES, seed=0, pop_size=4)
    elsewhere = [result({"n": n}, loss=n, score=n) for n in range(6)]
    p.tell(elsewhere)
    proposed = [c.config["n"] for c in p.ask(4)]
    assert sorted(proposed) == [6, 7, 8, 9]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_origins_and_parents_are_recorded(algorithm):
    p = make_proposer(algorithm, SPACE, OBJECTIVES, CONSTRAINTS, seed=0, pop_size=8)
    pairs = drive(p, 12, n=8)
    first, rest = pairs[:8], pairs[8:]
    assert all(c.origin == "init" and c.parents == () for c, _ in first)
    evo = [c for c, _ in rest if c.origin == "evo"]
    assert len(evo) > 0.8 * len(rest)
    told_before = set()
    for i in range(0, len(pairs), 8):
        for c, _ in pairs[i:i + 8]:
            if c.origin == "evo":
                assert len(c.parents) == 2 and c.parents[0] != c.parents[1]
                assert set(c.parents) <= told_before  # parents are evaluated configs
        told_before |= {r.key for _, r in pairs[i:i + 8]}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_global_random_module_untouched(algorithm):
    random.seed(1234)
    state = random.getstate()
    drive(make_proposer(algorithm, SPACE, OBJECTIVES, CONSTRAINTS, seed=0, pop_size=8), 10)
    assert random.getstate() == state


def test_seed_changes_the_run():
    def keys(seed):
        p = make_proposer("deap-nsga2", SPACE, OBJECTIVES, CONSTRAINTS, seed=seed)
        return [c.key for c, _ in drive(p, 6)]
    assert keys(0) == keys(0) != keys(1)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="selection"):
        DeapProposer(SPACE, OBJECTIVES, selection="moead")
    with pytest.raises(ConfigError, match="pop_size"):
        make_proposer("deap-spea2", SPACE, OBJECTIVES, pop_size=1)
    with pytest.raises(ConfigError, match="selection"):  # fixed by the registry name
        make_proposer("deap-nsga2", SPACE, OBJECTIVES, selection="spea2")
    assert make_proposer("deap-spea2", SPACE, OBJECTIVES).name == "deap-spea2"
