"""Benchmark every search engine on NAS-Bench-Graph (tabular: each evaluation is a lookup).

For each dataset and objective pair (error vs latency, error vs params), each engine and each
seed: the hypervolume of everything evaluated after 50, 100, 200 and 500 unique evaluations,
normalised by the true front's ideal and nadir (reference point 1.1 per axis). "vanilla-nsga2"
is pymoo's NSGA-II as its documentation sets it up for integer variables (population 20, SBX +
PM with rounding, duplicate elimination within the population). Every engine counts unique
architectures: a config isomorphic to one already evaluated is answered from the cache for free
(hybridmoo's loop does this through ``SearchSpace.canonical_key``).

    python scripts/bench_search.py --seeds 10 --jobs 2 --out bench_out/search.jsonl

Finished runs are appended to ``--out`` as JSON lines; re-running skips them (resumable).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per job: jobs run side by side

import argparse
import json
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

BUDGETS = (50, 100, 200, 500)
PAIRS = {"latency": ("error", "latency"), "params": ("error", "params")}
VANILLA = "vanilla-nsga2"


def run_one(job: dict) -> dict:
    from hybridmoo import ParetoArchive, search
    from hybridmoo.problems import make_problem
    from hybridmoo.problems.nas_bench_graph import true_front

    objectives = PAIRS[job["pair"]]
    problem = make_problem("nas-bench-graph", dataset=job["dataset"], objectives=objectives)
    front = true_front(job["dataset"], objectives)
    reference = {o.name: (o.sign * lo, o.sign * hi) for o, lo, hi
                 in zip(problem.objectives, front.min(axis=0), front.max(axis=0), strict=True)}
    budget = max(job["budgets"])
    start = time.perf_counter()
    if job["engine"] == VANILLA:
        archive = ParetoArchive(problem.objectives, reference)
        for r in vanilla_nsga2(problem, budget, job["seed"]):
            archive.add(r)
    else:
        algorithm, options = engine_and_options(job["engine"])
        archive = search(problem.space, problem.evaluate, problem.objectives,
                         algorithm=algorithm, algorithm_options=options, max_evals=budget,
                         seed=job["seed"], reference=reference, progress=False).archive
    curve = archive.hypervolume_curve()
    hv = {str(b): curve[min(b, len(curve)) - 1] for b in job["budgets"]}
    return {**job, "hv": hv, "n_evals": len(curve), "seconds": time.perf_counter() - start,
            "true_front_hv": hypervolume_of_front(front)}


def engine_label(engine: str, options: dict) -> str:
    """The name a run is recorded under: the engine, then its options (if any) as JSON."""
    return f"{engine} {json.dumps(options, sort_keys=True)}" if options else engine


def engine_and_options(label: str) -> tuple[str, dict]:
    """Inverse of :func:`engine_label`."""
    engine, _, options = label.partition(" ")
    return engine, json.loads(options) if options else {}


def hypervolume_of_front(front: np.ndarray) -> float:
    from hybridmoo.archive import hypervolume
    return hypervolume(front, front.min(axis=0), front.max(axis=0))


def vanilla_nsga2(problem, budget: int, seed: int) -> list:
    """Plain pymoo NSGA-II (pop 20) until ``budget`` unique configs were evaluated."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import ElementwiseProblem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    from hybridmoo.objectives import minimization_matrix, run_evaluation
    from hybridmoo.space import Candidate

    space, results, cache = problem.space, [], {}

    class Lookup(ElementwiseProblem):
        def __init__(self) -> None:
            super().__init__(n_var=len(space), n_obj=len(problem.objectives), xl=0,
                             xu=space.sizes - 1, vtype=int)

        def _evaluate(self, x, out, *args, **kwargs):
            candidate = Candidate(space.decode(x))
            key = space.canonical_key(candidate.config)  # an isomorphic twin costs nothing
            if key not in cache:
                r = run_evaluation(problem.evaluate, candidate, problem.objectives)
                cache[key] = minimization_matrix([r], problem.objectives, 1e12)[0]
                results.append(r)
            out["F"] = cache[key]

    algorithm = NSGA2(pop_size=20, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      eliminate_duplicates=True)
    algorithm.setup(Lookup(), termination=("n_gen", 10**9), seed=seed)
    stalled = 0
    while len(results) < budget and stalled < 200:  # stop if generations bring nothing new
        before = len(results)
        algorithm.next()
        stalled = stalled + 1 if len(results) == before else 0
    return results[:budget]


def summarise(rows: list[dict], budgets: tuple[int, ...], default: str) -> str:
    lines = []
    problems = sorted({(r["dataset"], r["pair"]) for r in rows})
    engines = sorted({r["engine"] for r in rows}, key=lambda e: (e != default, e))
    header = "| problem | engine | " + " | ".join(f"HV@{b}" for b in budgets) + " | s/run | seeds |"
    lines += [header, "|" + "---|" * (len(budgets) + 4)]
    for dataset, pair in problems:
        for engine in engines:
            sel = [r for r in rows
                   if (r["dataset"], r["pair"], r["engine"]) == (dataset, pair, engine)]
            if not sel:
                continue
            cells = []
            for b in budgets:
                v = np.array([r["hv"][str(b)] for r in sel])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
            secs = np.mean([r["seconds"] for r in sel])
            lines.append(f"| {dataset} error-vs-{pair} (true {sel[0]['true_front_hv']:.3f}) | "
                         f"{engine} | " + " | ".join(cells) + f" | {secs:.1f} | {len(sel)} |")
    lines += ["", "Mean over the problems of hypervolume / true-front hypervolume:", "",
              "| engine | " + " | ".join(f"@{b}" for b in budgets) + " |",
              "|" + "---|" * (len(budgets) + 1)]
    ratios = {}
    for engine in engines:
        per_budget = []
        for b in budgets:
            per_problem = [np.mean([r["hv"][str(b)] / r["true_front_hv"] for r in rows
                                    if (r["dataset"], r["pair"], r["engine"])
                                    == (dataset, pair, engine)])
                           for dataset, pair in problems]
            per_budget.append(float(np.mean(per_problem)))
        ratios[engine] = per_budget
    for engine in sorted(engines, key=lambda e: -ratios[e][min(1, len(budgets) - 1)]):
        lines.append(f"| {engine} | " + " | ".join(f"{v:.3f}" for v in ratios[engine]) + " |")
    if not {default, VANILLA} <= set(engines) or not {100, 500} <= set(budgets):
        return "\n".join(lines)  # the target needs both engines at both budgets
    lines.append("")
    lines.append(f"Target: {default} at 100 evaluations >= {VANILLA} at 500")
    for dataset, pair in problems:
        def mean(engine, b, dataset=dataset, pair=pair):
            v = [r["hv"][str(b)] for r in rows
                 if (r["dataset"], r["pair"], r["engine"]) == (dataset, pair, engine)]
            return np.mean(v) if v else float("nan")
        ours, theirs = mean(default, 100), mean(VANILLA, 500)
        verdict = "met" if ours >= theirs else "NOT met"
        lines.append(f"- {dataset} error-vs-{pair}: {ours:.3f} vs {theirs:.3f}: {verdict}")
    return "\n".join(lines)


def main() -> None:
    from hybridmoo.proposers import DEFAULT_ALGORITHM, available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cora", "citeseer", "photo"])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--engines", nargs="+",
                        default=[VANILLA] + [s.name for s in available()])
    parser.add_argument("--options", type=json.loads, default={},
                        help='engine options as JSON, e.g. \'{"n_init": 5}\' (recorded with '
                             'the engine name; not for vanilla-nsga2)')
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_out/search.jsonl"))
    parser.add_argument("--summary-only", action="store_true", help="only print the table")
    args = parser.parse_args()

    if args.options and VANILLA in args.engines:
        parser.error(f"--options apply to hybridmoo engines, not {VANILLA}")
    args.engines = [engine_label(e, args.options) for e in args.engines]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in args.out.read_text().splitlines()] \
        if args.out.exists() else []
    finished = {(r["engine"], r["dataset"], r["pair"], r["seed"]) for r in done}
    jobs = [{"engine": e, "dataset": d, "pair": p, "seed": s, "budgets": args.budgets}
            for e in args.engines for d in args.datasets for p in args.pairs
            for s in range(args.seeds) if (e, d, p, s) not in finished]
    if not args.summary_only and jobs:
        print(f"{len(jobs)} runs to do ({len(finished)} already in {args.out})", flush=True)
        with get_context("spawn").Pool(args.jobs) as pool, open(args.out, "a") as out:
            for i, row in enumerate(pool.imap_unordered(run_one, jobs), 1):
                out.write(json.dumps(row) + "\n")
                out.flush()
                done.append(row)
                print(f"[{i}/{len(jobs)}] {row['engine']:>13} {row['dataset']:>9} "
                      f"{row['pair']:>8} seed {row['seed']}: HV@100 {row['hv'].get('100', 0):.3f} "
                      f"({row['seconds']:.1f}s)", flush=True)
    wanted = set(args.engines)
    rows = [r for r in done if r["engine"] in wanted and r["dataset"] in args.datasets
            and r["pair"] in args.pairs and r["seed"] < args.seeds]
    print(summarise(rows, tuple(args.budgets), DEFAULT_ALGORITHM))


if __name__ == "__main__":
    main()
