"""The contract every search engine keeps (subclass :class:`ProposerConformance` in a test).

A subclass provides the fixture ``algorithm`` (a registered engine name) and may set
``options`` (engine options that keep the run quick). Besides the contract, one check of
quality: on the built-in ``zdt1-grid`` problem every engine beats random search at 100
evaluations (mean of 5 seeds, by more than twice the standard error of the difference), which
a contract alone would let a useless engine pass. Example::

    class TestMyEngine(ProposerConformance):
        @pytest.fixture
        def algorithm(self):
            return "my-engine"
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import numpy as np
import pytest

from hybridmoo.objectives import Constraint, EvalResult, Objective, run_evaluation
from hybridmoo.proposers import Proposer, engine_spec, make_proposer
from hybridmoo.space import REFINED, Candidate, Choice, IntRange, SearchSpace

SPACE = SearchSpace({"op": Choice(["conv3", "conv1", "skip"]), "width": Choice([8, 16, 32, 64]),
                     "depth": IntRange(1, 6), "ratio": Choice([0.25, 0.5, 1.0])})
OBJECTIVES = (Objective("error", "min"), Objective("cost", "min"))
THREE_OBJECTIVES = (*OBJECTIVES, Objective("accuracy_proxy", "max"))


def toy_evaluate(config: dict[str, Any]) -> dict[str, float]:
    """A deterministic trade-off: bigger networks err less and cost more; 'skip' fails at
    depth 6 to exercise failures."""
    if config["op"] == "skip" and config["depth"] == 6:
        raise RuntimeError("skip x 6 has no parameters")
    kernel = {"conv3": 9, "conv1": 1, "skip": 0}[config["op"]]
    size = (kernel + 1) * config["width"] * config["depth"] * config["ratio"]
    return {"error": 1.0 / (1.0 + math.sqrt(size)) + 0.01 * config["depth"],
            "cost": size, "accuracy_proxy": math.log1p(size), "budget": size - 500.0}


def drive(proposer: Proposer, rounds: int, n: int = 4,
          objectives: tuple[Objective, ...] = OBJECTIVES,
          constraints: tuple[Constraint, ...] = ()) -> list[list[str]]:
    """``rounds`` of ask(n) -> evaluate -> tell; returns the keys asked in each round."""
    asked = []
    for _ in range(rounds):
        candidates = proposer.ask(n)
        asked.append([c.key for c in candidates])
        proposer.tell([run_evaluation(toy_evaluate, c, objectives, constraints)
                       for c in candidates])
    return asked


QUALITY_PROBLEM = {"dims": 4, "levels": 6}  # zdt1-grid: 6^3 = 216 settings of g, one is 1
QUALITY_REFERENCE = {"f1": (0.0, 1.0), "f2": (0.0, 2.0)}  # front (0..1, 1..0), fixed for all
QUALITY_EVALS, QUALITY_SEEDS = 100, 5


def quality_hypervolumes(algorithm: str, options: dict[str, Any] | None = None,
                         seeds: int = QUALITY_SEEDS, evals: int = QUALITY_EVALS) -> np.ndarray:
    """Hypervolume after ``evals`` evaluations of ``algorithm`` on zdt1-grid, per seed."""
    return _quality(algorithm, tuple(sorted((options or {}).items())), seeds, evals)


@functools.cache  # random search's runs serve every engine's check
def _quality(algorithm: str, options: tuple, seeds: int, evals: int) -> np.ndarray:
    from hybridmoo import search
    from hybridmoo.problems import make_problem

    problem = make_problem("zdt1-grid", **QUALITY_PROBLEM)
    return np.array([search(problem.space, problem.evaluate, problem.objectives,
                            algorithm=algorithm, algorithm_options=dict(options),
                            max_evals=evals, seed=seed, reference=QUALITY_REFERENCE,
                            progress=False).hypervolume for seed in range(seeds)])


def refined(result: EvalResult) -> EvalResult:
    """A refined record of ``result``: the same config, 10 % better on every objective."""
    values = {o.name: result.values[o.name] * (0.9 if o.direction == "min" else 1.1)
              for o in OBJECTIVES}
    return EvalResult(Candidate(result.config, origin=REFINED, parents=(result.key,)), values)


class ProposerConformance:
    """Tests every registered engine must pass."""

    options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def algorithm(self) -> str:
        raise NotImplementedError("subclasses provide the `algorithm` fixture")

    def make(self, algorithm: str, seed: int = 0, objectives=OBJECTIVES, constraints=(),
             options: dict[str, Any] | None = None) -> Proposer:
        return make_proposer(algorithm, SPACE, objectives, constraints, seed,
                             **(self.options if options is None else options))

    def test_asked_configs_lie_in_the_space(self, algorithm: str) -> None:
        p = self.make(algorithm)
        for _ in range(8):
            candidates = p.ask(5)
            assert len(candidates) <= 5
            for c in candidates:
                assert SPACE.contains(c.config), c.config
                assert c.origin in {"init", "evo", "random", "refine"}
            p.tell([run_evaluation(toy_evaluate, c, OBJECTIVES) for c in candidates])

    def test_never_proposes_a_config_twice(self, algorithm: str) -> None:
        keys = [k for batch in drive(self.make(algorithm), rounds=15) for k in batch]
        assert len(keys) == len(set(keys))

    def test_makes_progress_when_everything_was_told(self, algorithm: str) -> None:
        p = self.make(algorithm)
        for _ in range(10):
            candidates = p.ask(3)
            assert candidates, "an idle proposer with unseen configs left must propose"
            p.tell([run_evaluation(toy_evaluate, c, OBJECTIVES) for c in candidates])

    def test_tell_accepts_failures(self, algorithm: str) -> None:
        p = self.make(algorithm)
        for _ in range(6):
            candidates = p.ask(4)
            p.tell([EvalResult(c, ok=False, reason="injected failure") for c in candidates])
        assert p.ask(4), "a proposer must keep proposing after failures"

    def test_results_may_come_one_at_a_time_in_any_order(self, algorithm: str) -> None:
        """Results told one at a time, last first, leave the engine where the same results
        told as one batch leave it: it proposes the same configs afterwards."""
        def run(one_at_a_time: bool) -> list[list[str]]:
            p = self.make(algorithm, seed=2)
            asked = []
            for _ in range(6):
                candidates = p.ask(4)
                asked.append([c.key for c in candidates])
                results = [run_evaluation(toy_evaluate, c, OBJECTIVES) for c in candidates]
                if one_at_a_time:
                    for r in reversed(results):
                        p.tell([r])
                else:
                    p.tell(results)
            return asked + drive(p, 3)

        batched = run(one_at_a_time=False)
        assert sum(map(len, batched)) >= 24
        assert run(one_at_a_time=True) == batched

    def test_tell_accepts_refined_records(self, algorithm: str) -> None:
        """Refined networks (origin "refine", a config in the space, a key of their own) are
        told like any result: the engine keeps proposing configs of the space, still
        deterministically, and its state round-trips."""
        import json

        def run(p: Proposer) -> list[list[str]]:
            asked = []
            for _ in range(6):
                candidates = p.ask(4)
                asked.append([c.key for c in candidates])
                results = [run_evaluation(toy_evaluate, c, OBJECTIVES) for c in candidates]
                p.tell(results)
                p.tell([refined(r) for r in results if r.ok][:1])
                assert all(SPACE.contains(c.config) for c in candidates)
            return asked

        p = self.make(algorithm, seed=4)
        first = run(p)
        assert sum(map(len, first)) >= 12
        assert first == run(self.make(algorithm, seed=4))
        q = self.make(algorithm, seed=4)
        q.load_state_dict(json.loads(json.dumps(p.state_dict())))
        assert drive(p, 3) == drive(q, 3)

    def test_same_seed_same_sequence(self, algorithm: str) -> None:
        assert drive(self.make(algorithm, seed=3), 8) == drive(self.make(algorithm, seed=3), 8)

    def test_different_seeds_differ(self, algorithm: str) -> None:
        assert drive(self.make(algorithm, seed=1), 4) != drive(self.make(algorithm, seed=2), 4)

    def test_state_dict_round_trip(self, algorithm: str) -> None:
        import json

        p = self.make(algorithm, seed=5)
        drive(p, 6)
        state = json.loads(json.dumps(p.state_dict()))  # plain JSON, no pickle
        q = self.make(algorithm, seed=5)
        q.load_state_dict(state)
        assert drive(p, 5) == drive(q, 5)

    def test_constraints_and_three_objectives(self, algorithm: str) -> None:
        constraints = (Constraint("budget"),)
        p = self.make(algorithm, objectives=THREE_OBJECTIVES, constraints=constraints)
        keys = drive(p, 10, objectives=THREE_OBJECTIVES, constraints=constraints)
        assert sum(map(len, keys)) >= 20

    def test_beats_random_search(self, algorithm: str) -> None:
        """A quality check, not a contract: on zdt1-grid, 100 evaluations of the engine find a
        better front than 100 random ones (5 seeds; the margin must exceed twice the
        standard error of the difference of the means)."""
        if algorithm == "random":
            pytest.skip("random search is the baseline")
        if not engine_spec(algorithm).black_box:
            pytest.skip(f"{algorithm} proposes what a model trained for its problem gives; "
                        f"it has none for this one")
        ours = quality_hypervolumes(algorithm, self.options)
        theirs = quality_hypervolumes("random")
        se = math.hypot(ours.std(ddof=1), theirs.std(ddof=1)) / math.sqrt(QUALITY_SEEDS)
        assert ours.mean() - theirs.mean() > 2 * se, (
            f"{algorithm}: hypervolume {ours.mean():.3f} against random search's "
            f"{theirs.mean():.3f} (standard error of the difference {se:.3f})")
