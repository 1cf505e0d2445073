"""Refinement rounds inside the search loop (RefineSchedule), with a toy refiner: the loop's
schedule, survivor choice, journaling and resume, independent of the gradient refiner."""

from __future__ import annotations

import json

import pytest

from hybridmoo import Candidate, EvalResult, search
from hybridmoo.errors import ConfigError
from hybridmoo.search import RefineSchedule
from hybridmoo.testing.proposers import OBJECTIVES, SPACE, toy_evaluate


class ToyRefiner:
    """Improves every objective of a survivor by 10 %: a refined point dominates its parent."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, survivors: list[EvalResult], archive: object) -> list[EvalResult]:
        self.calls.append([s.key for s in survivors])
        out = []
        for s in survivors:
            values = {o.name: s.values[o.name] * (0.9 if o.direction == "min" else 1.1)
                      for o in OBJECTIVES}
            out.append(EvalResult(Candidate(s.config, "refine", (s.key,)), values))
        return out


def run(tmp_path, refiner, max_evals=24, resume=False):
    schedule = RefineSchedule(refiner, every=10, survivors=3)
    return search(SPACE, toy_evaluate, OBJECTIVES, algorithm="nsga2", max_evals=max_evals,
                  seed=1, run_dir=tmp_path / "run", resume=resume, refine=schedule,
                  progress=False)


def test_rounds_follow_the_schedule_and_do_not_use_the_budget(tmp_path):
    refiner = ToyRefiner()
    result = run(tmp_path, refiner)
    evolved = [r for r in result.history if r.candidate.origin != "refine"]
    refined = [r for r in result.history if r.candidate.origin == "refine"]
    assert len(evolved) == 24
    assert [len(c) for c in refiner.calls] == [3, 3, 3]  # after 10, after 20, at the end
    assert len(refined) == 9
    assert [r.info["round"] for r in refined] == [1] * 3 + [2] * 3 + [3] * 3
    # each survivor is refined once, and its refined record has its own key
    parents = [r.candidate.parents[0] for r in refined]
    assert len(set(parents)) == len(parents)
    assert not {r.key for r in refined} & {r.key for r in evolved}
    # a refined point dominates its parent, so parents leave the front
    front_keys = {r.key for r in result.front}
    assert not front_keys & set(parents)
    assert any(r.candidate.origin == "refine" for r in result.front)


def test_refined_records_are_journaled_and_resume_reproduces_the_run(tmp_path):
    full = run(tmp_path / "a", ToyRefiner())
    lines = (tmp_path / "a" / "run" / "journal.jsonl").read_text().splitlines()
    origins = [json.loads(line)["candidate"]["origin"] for line in lines]
    cut = origins.index("refine") + 1  # crash inside the first refinement round
    run_b = tmp_path / "b" / "run"
    run_b.mkdir(parents=True)
    (run_b / "run.json").write_text((tmp_path / "a" / "run" / "run.json").read_text())
    (run_b / "journal.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    refiner = ToyRefiner()
    resumed = run(tmp_path / "b", refiner, resume=True)
    assert len(refiner.calls[0]) == 2  # the two survivors the crash left unrefined
    assert [r.to_json() | {"elapsed_s": 0} for r in resumed.history] == [
        r.to_json() | {"elapsed_s": 0} for r in full.history]


def test_bad_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="every"):
        RefineSchedule(ToyRefiner(), every=0)


def test_max_seconds_stops_evolution_and_refinement(tmp_path):
    import time

    def slow(config):
        time.sleep(0.05)
        return toy_evaluate(config)

    refiner = ToyRefiner()
    start = time.monotonic()
    result = search(SPACE, slow, OBJECTIVES, algorithm="random", max_evals=10_000, seed=0,
                    refine=RefineSchedule(refiner, every=5, survivors=2), max_seconds=1.0,
                    progress=False)
    assert time.monotonic() - start < 2.0
    assert result.stop_reason == "max_seconds reached"
    assert 5 <= len(result.history) < 40 and refiner.calls
    with pytest.raises(ConfigError, match="max_seconds"):
        search(SPACE, slow, OBJECTIVES, max_seconds=0)


def test_final_share_refines_the_final_front_in_the_time_kept_for_it():
    import time

    def slow(config):
        time.sleep(0.02)
        return toy_evaluate(config)

    calls_at: list[float] = []

    def refiner(survivors, archive):
        calls_at.append(time.monotonic())
        time.sleep(0.05)
        return ToyRefiner()(survivors, archive)

    start = time.monotonic()
    schedule = RefineSchedule(refiner, every=None, survivors=2, final_share=0.4)
    result = search(SPACE, slow, OBJECTIVES, algorithm="random", max_evals=10_000, seed=0,
                    refine=schedule, max_seconds=1.5, progress=False)
    elapsed = time.monotonic() - start
    evolved = [r for r in result.history if r.candidate.origin != "refine"]
    refined = [r for r in result.history if r.candidate.origin == "refine"]
    assert elapsed < 2.2
    # no round during evolution; evolution stopped about 0.6 s (40 %) before the deadline
    assert calls_at and min(calls_at) - start > 0.8
    assert evolved and refined
    # rounds repeat until the time is up or every front record is refined, each on new ones
    assert len(calls_at) >= 2
    parents = [r.candidate.parents[0] for r in refined]
    assert len(set(parents)) == len(parents)
    assert {r.info["round"] for r in refined} == set(range(1, len(calls_at) + 1))


def test_final_share_stops_when_the_whole_front_is_refined():
    import time

    refiner = ToyRefiner()
    schedule = RefineSchedule(refiner, every=None, survivors=50, final_share=0.5)
    start = time.monotonic()
    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="random", max_evals=12, seed=0,
                    refine=schedule, max_seconds=60, progress=False)
    assert time.monotonic() - start < 30  # it does not wait for the deadline
    # one round took every front record; refined records are not refined again
    assert len(refiner.calls) == 1
    assert all(r.candidate.origin == "refine" for r in result.front)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"every": None, "final_share": 1.0}, "final_share"),
    ({"every": None, "final_share": -0.1}, "final_share"),
    ({"every": None, "final_share": "half"}, "final_share"),
    ({"every": 5, "final_share": 0.2, "final_round": False}, "final_round"),
])
def test_bad_final_share_is_a_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RefineSchedule(ToyRefiner(), **kwargs)


def test_final_share_needs_max_seconds():
    schedule = RefineSchedule(ToyRefiner(), every=None, final_share=0.2)
    with pytest.raises(ConfigError, match="max_seconds"):
        search(SPACE, toy_evaluate, OBJECTIVES, max_evals=5, refine=schedule, progress=False)


def test_time_left_after_the_final_rounds_goes_back_to_evolution():
    import time

    def slow(config):
        time.sleep(0.02)
        return toy_evaluate(config)

    schedule = RefineSchedule(ToyRefiner(), every=None, survivors=1000, final_share=0.5)
    start = time.monotonic()
    result = search(SPACE, slow, OBJECTIVES, algorithm="random", max_evals=10_000, seed=0,
                    refine=schedule, max_seconds=1.5, progress=False)
    assert 1.4 < time.monotonic() - start < 2.2  # the whole budget is used
    origins = [r.candidate.origin for r in result.history]
    first_refined = origins.index("refine")
    assert "refine" not in origins[:first_refined]
    assert any(o != "refine" for o in origins[first_refined:])  # evolution went on
    assert result.stop_reason == "max_seconds reached"


def test_refined_records_lie_in_the_space_and_evolution_breeds_from_them():
    refiner = ToyRefiner()
    schedule = RefineSchedule(refiner, every=8, survivors=3)
    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="deap-nsga2",
                    algorithm_options={"pop_size": 8}, max_evals=40, seed=0, refine=schedule,
                    progress=False)
    refined = {r.key for r in result.history if r.candidate.origin == "refine"}
    assert refined and all(SPACE.contains(r.config) for r in result.history)
    # DEAP's offspring name their parents: refined records were selected and bred from
    bred = [r for r in result.history if r.candidate.origin == "evo"
            and set(r.candidate.parents) & refined]
    assert bred


def test_a_refined_config_outside_the_space_is_kept_but_not_told():
    class Wider(ToyRefiner):
        def __call__(self, survivors, archive):
            return [EvalResult(Candidate(dict(r.config, width=12), "refine", r.candidate.parents),
                               r.values) for r in super().__call__(survivors, archive)]

    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="surrogate", max_evals=20,
                    seed=0, refine=RefineSchedule(Wider(), every=10, survivors=2),
                    algorithm_options={"n_init": 6, "inner_pop": 16, "inner_gens": 4},
                    progress=False)
    assert sum(r.candidate.origin == "refine" for r in result.history) == 6


def test_refinement_as_backend_work_runs_inline_on_the_local_backend(tmp_path):
    """worker= makes each survivor's refinement a backend job: on the inline local backend
    the run equals serial rounds of the same refinement, weights kept before journaling."""
    from hybridmoo.testing.refine import ToyRefineWorker

    kept: list[str] = []

    def keep(result, network):
        assert not (tmp_path / "run" / "journal.jsonl").read_text().count(result.key)
        kept.append(result.key)

    schedule = RefineSchedule(worker=ToyRefineWorker(delay=0.0), keep=keep, every=10,
                              survivors=3)
    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="nsga2", max_evals=24, seed=1,
                    run_dir=tmp_path / "run", refine=schedule, progress=False)
    refined = [r for r in result.history if r.candidate.origin == "refine"]
    assert [r.info["round"] for r in refined] == [1] * 3 + [2] * 3 + [3] * 3
    assert kept == [r.key for r in refined]
    with pytest.raises(ConfigError, match="not both"):
        RefineSchedule(ToyRefiner(), worker=ToyRefineWorker(), every=5)


def test_backend_refinement_overlaps_evaluations_on_threads():
    from hybridmoo.backends import LocalBackend
    from hybridmoo.testing.refine import ToyRefineWorker, timed_evaluate

    schedule = RefineSchedule(worker=ToyRefineWorker(delay=0.4), every=6, survivors=2)
    result = search(SPACE, timed_evaluate, OBJECTIVES, algorithm="random", max_evals=30,
                    seed=0, backend=LocalBackend(2), refine=schedule, progress=False)
    assert overlapping(result.history)


def overlapping(history) -> bool:
    """Some evaluation ran while some refinement ran (their wall-clock intervals overlap)."""
    refined = [r for r in history if r.candidate.origin == "refine" and r.ok]
    evaluated = [r for r in history if r.candidate.origin != "refine" and "t0" in r.info]
    return bool(refined) and any(e.info["t0"] < r.info["t1"] and r.info["t0"] < e.info["t1"]
                                 for r in refined for e in evaluated)


def test_no_refinement_job_starts_after_max_seconds(tmp_path):
    """A round of 10 jobs of 0.3 s each in the final 0.5 s: the search ends at the deadline
    plus the job running then, and a resume refines the rest of the round."""
    import time

    from hybridmoo.testing.refine import ToyRefineWorker

    schedule = RefineSchedule(worker=ToyRefineWorker(delay=0.3), every=None, survivors=10,
                              final_share=0.5)
    start = time.monotonic()
    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="random", max_evals=10_000,
                    seed=0, refine=schedule, max_seconds=1.0, run_dir=tmp_path / "run",
                    progress=False)
    assert time.monotonic() - start < 1.0 + 0.3 + 0.5  # 10 jobs would take 3 s
    refined = [r for r in result.history if r.candidate.origin == "refine"]
    assert 1 <= len(refined) <= 3
    resumed = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="random", max_evals=10_000,
                     seed=0, refine=RefineSchedule(worker=ToyRefineWorker(delay=0.0),
                                                   every=None, survivors=10, final_share=0.5),
                     max_seconds=5.0, run_dir=tmp_path / "run", resume=True, progress=False)
    again = [r for r in resumed.history if r.candidate.origin == "refine"]
    first_round = {p for r in again if r.info["round"] == 1 for p in r.candidate.parents}
    assert len(first_round) == len(result.history[-len(refined)].info["round_survivors"])


def test_a_front_round_opens_the_final_phase_and_its_records_are_not_told(tmp_path,
                                                                           monkeypatch):
    """final_share with front_round: one job for the final front, under the time left; its
    records carry their parents' configs (method "front"), are kept and journaled but not
    told to the proposer (their configs are known); later rounds refine the rest one by one."""
    from hybridmoo.proposers.base import Proposer
    from hybridmoo.testing.refine import ToyRefineWorker

    told: list[EvalResult] = []
    tell = Proposer.tell
    monkeypatch.setattr(Proposer, "tell", lambda self, rs: (told.extend(rs), tell(self, rs)))
    kept: list[str] = []
    schedule = RefineSchedule(worker=ToyRefineWorker(delay=0.0),
                              keep=lambda r, n: kept.append(r.key), every=None, survivors=2,
                              final_share=0.3, front_round=True)
    result = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="random", max_evals=60, seed=0,
                    refine=schedule, max_seconds=3.0, run_dir=tmp_path / "run",
                    progress=False)
    refined = [r for r in result.history if r.candidate.origin == "refine"]
    front = [r for r in refined if r.info["round"] == 1]
    assert front and all(r.candidate.method == "front" for r in front)
    assert all(0 < r.info["budget_s"] <= 3.0 for r in front)  # the time left
    assert all(r.config == next(p for p in result.history if p.key == r.candidate.parents[0]
                                ).config for r in front)
    assert kept[:len(front)] == [r.key for r in front]
    assert not {r.key for r in front} & {r.key for r in told}
    # later rounds refine one by one what the front round left untuned
    tuned = {p for r in front for p in r.candidate.parents}
    assert all(r.candidate.method == "" and not set(r.candidate.parents) & tuned
               for r in refined if r.info["round"] > 1)
    lines = (tmp_path / "run" / "journal.jsonl").read_text().splitlines()
    assert sum('"method":"front"' in line for line in lines) == len(front)
    resumed = search(SPACE, toy_evaluate, OBJECTIVES, algorithm="random", max_evals=60,
                     seed=0, refine=schedule, max_seconds=3.0, run_dir=tmp_path / "run",
                     resume=True, progress=False)
    # the resumed run knows its front round is done: no second one
    assert sum(r.candidate.method == "front" for r in resumed.history) == len(
        [r for r in resumed.history if r.candidate.method == "front" and r.info["round"] == 1])


def test_workers_a_final_round_leaves_free_go_on_evaluating():
    """Two threads, final rounds of one survivor each: while one worker refines, the other
    evaluates (evolution past its own deadline, within max_seconds) instead of waiting."""
    from hybridmoo.backends import LocalBackend
    from hybridmoo.testing.refine import ToyRefineWorker, timed_evaluate

    schedule = RefineSchedule(worker=ToyRefineWorker(delay=0.4), every=None, survivors=1,
                              final_share=0.5)
    result = search(SPACE, timed_evaluate, OBJECTIVES, algorithm="random", max_evals=10_000,
                    seed=0, backend=LocalBackend(2), refine=schedule, max_seconds=2.0,
                    progress=False)
    refined = [r for r in result.history if r.candidate.origin == "refine" and r.ok]
    assert refined and overlapping(result.history)
    first = min(r.info["t0"] for r in refined)
    assert any(e.info["t0"] > first for e in result.history if "t0" in e.info
               and e.candidate.origin != "refine")


def test_workers_a_round_leaves_free_at_evolutions_deadline_go_on_evaluating():
    """A round started during evolution still runs at evolution's own deadline: the worker it
    leaves free goes on evaluating (until max_seconds) instead of waiting for it."""
    import time

    from hybridmoo.backends import LocalBackend
    from hybridmoo.testing.refine import ToyRefineWorker, timed_evaluate

    schedule = RefineSchedule(worker=ToyRefineWorker(delay=1.5), every=4, survivors=1,
                              final_share=0.5)
    start = time.time()
    result = search(SPACE, timed_evaluate, OBJECTIVES, algorithm="random", max_evals=10_000,
                    seed=0, backend=LocalBackend(2), refine=schedule, max_seconds=1.0,
                    progress=False)
    first = next(r for r in result.history if r.candidate.origin == "refine")
    assert first.info["round"] == 1 and first.info["t1"] > start + 1.0  # past the deadlines
    after = [e for e in result.history if e.candidate.origin != "refine"
             and start + 0.6 < e.info.get("t0", 0.0) < first.info["t1"]]
    assert after  # evolution's deadline: start + 0.5 s
