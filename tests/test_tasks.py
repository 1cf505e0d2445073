"""SearchTask: evaluations and refinement jobs on one worker, failures as records."""

import time

from hybridmoo.objectives import EvalResult, EvaluationTask, Objective
from hybridmoo.space import REFINED, Candidate
from hybridmoo.tasks import FrontJob, Refined, RefineJob, SearchTask

OBJECTIVES = (Objective("accuracy", "max"), Objective("size", "min"))


def evaluate(config):
    return {"accuracy": config["w"] / 10, "size": config["w"]}


def survivor(w: int) -> EvalResult:
    return EvalResult(Candidate({"w": w}), {"accuracy": w / 10, "size": w})


def refine_slowly(job, objectives):
    time.sleep(0.05)
    out = [Refined(EvalResult(Candidate({"w": s.config["w"]}, REFINED, (s.key,)),
                              {"accuracy": 1.0, "size": 1}, elapsed_s=0.001))
           for s in job.survivors]
    return out if isinstance(job, FrontJob) else out[0]


def test_evaluations_run_the_evaluate_function():
    task = SearchTask(EvaluationTask(evaluate, OBJECTIVES), refine_slowly)
    result = task(Candidate({"w": 3}))
    assert result.ok and result.values == {"accuracy": 0.3, "size": 3}


def test_a_jobs_whole_time_on_the_worker_is_shared_by_the_records_it_made():
    task = SearchTask(EvaluationTask(evaluate, OBJECTIVES), refine_slowly)
    records = task(FrontJob((survivor(2), survivor(5)), round=1))
    assert [r.result.candidate.parents for r in records] == [(survivor(2).key,),
                                                             (survivor(5).key,)]
    for r in records:
        assert r.result.info["worker_s"] >= 0.05 > r.result.elapsed_s
        assert r.result.info["job_records"] == 2
    single = task(RefineJob(survivor(2), ((0.5, 0.5),), 0, round=1))
    assert single.result.info["job_records"] == 1 and single.result.info["worker_s"] >= 0.05


def test_a_failing_refinement_is_a_failed_record_per_survivor():
    def broken(job, objectives):
        raise RuntimeError("out of memory")

    task = SearchTask(EvaluationTask(evaluate, OBJECTIVES), broken)
    records = task(FrontJob((survivor(2), survivor(5)), round=1))
    assert len(records) == 2
    assert all(not r.result.ok and "RuntimeError: out of memory" in r.result.reason
               for r in records)
    assert all(r.network is None for r in records)
