"""Benchmark every search engine on NAS-Bench-Graph (tabular: each evaluation is a lookup).

For each dataset and objective pair (error vs latency, error vs params), each engine and each
seed: the hypervolume of everything evaluated after each of 50, 100, 200, 500 and 1000 unique
evaluations, normalised by the true front's ideal and nadir (reference point 1.1 per axis).
"vanilla-nsga2" is pymoo's NSGA-II as its documentation sets it up for integer variables
(population 20, SBX + PM with rounding, duplicate elimination within the population). Every
engine counts unique architectures: a config isomorphic to one already evaluated is answered
from the cache for free (hybridmoo's loop does this through ``SearchSpace.canonical_key``).
Evaluations are lookups, so the time between two of them is the engine's own: it is reported
per evaluation near 100 and 1000 evaluations, with the longest single ask.

    python scripts/bench_search.py --seeds 10 --jobs 2 --out bench_out/search.jsonl
    python scripts/bench_search.py --quick

The summary states, per problem, how many evaluations the default engine needs to reach
vanilla NSGA-II's hypervolume at 500 (mean curves over the seeds; target at most 200), and
whether the default is level with the best other engine at each budget (within one standard
error of the difference). Finished runs are appended to ``--out`` as JSON lines; re-running
skips them (resumable). ``--quick`` (the default engine to 200 evaluations and vanilla NSGA-II
to 500, 3 seeds, 6 problems) starts its ``--out`` afresh, ends with one line of figures and
exits 1 when the default needs more than 200 evaluations on a problem.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per job: jobs run side by side

import argparse
import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

BUDGETS = (50, 100, 200, 500, 1000)
PAIRS = {"latency": ("error", "latency"), "params": ("error", "params")}
DATASETS = ("cora", "citeseer", "photo")
VANILLA = "vanilla-nsga2"
VANILLA_AT = 500  # the default must reach vanilla NSGA-II's hypervolume at this budget ...
TARGET_EVALS = 200  # ... within this many evaluations, on every problem
COST_AT = (100, 1000)  # where the engine's own seconds per evaluation are reported
QUICK_SEEDS, QUICK_DEFAULT_BUDGETS = 3, (50, 100, 200)


class Clock:
    """Wraps an evaluate and keeps when each call started and ended."""

    def __init__(self, evaluate) -> None:
        self.evaluate, self.starts, self.ends = evaluate, [], []

    def __call__(self, config):
        self.starts.append(time.perf_counter())
        try:
            return self.evaluate(config)
        finally:
            self.ends.append(time.perf_counter())


def engine_cost(gaps: np.ndarray) -> dict[str, dict[str, float]]:
    """Engine seconds per evaluation and the longest single ask, over evaluations
    ``(b / 2, b]`` for each ``b`` in :data:`COST_AT` the run reached."""
    out = {}
    for b in COST_AT:
        if len(gaps) >= b:
            window = gaps[b // 2: b]
            out[str(b)] = {"per_eval_s": float(window.mean()), "longest_ask_s": float(window.max())}
    return out


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
    clock = Clock(problem.evaluate)
    start = time.perf_counter()
    if job["engine"] == VANILLA:
        archive = ParetoArchive(problem.objectives, reference)
        for r in vanilla_nsga2(problem, clock, budget, job["seed"]):
            archive.add(r)
    else:
        algorithm, options = engine_and_options(job["engine"])
        archive = search(problem.space, clock, problem.objectives,
                         algorithm=algorithm, algorithm_options=options, max_evals=budget,
                         seed=job["seed"], reference=reference, progress=False).archive
    seconds = time.perf_counter() - start
    curve = archive.hypervolume_curve()
    gaps = np.array(clock.starts) - np.array([start, *clock.ends[:-1]])
    hv = {str(b): curve[min(b, len(curve)) - 1] for b in job["budgets"]}
    return {**job, "hv": hv, "curve": [round(v, 6) for v in curve], "n_evals": len(curve),
            "seconds": seconds, "engine_cost": engine_cost(gaps),
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


def vanilla_nsga2(problem, evaluate, budget: int, seed: int) -> list:
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
                r = run_evaluation(evaluate, candidate, problem.objectives)
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


def _select(rows: list[dict], problem: tuple[str, str], engine: str) -> list[dict]:
    return [r for r in rows if (r["dataset"], r["pair"], r["engine"]) == (*problem, engine)]


def mean_curve(rows: list[dict]) -> np.ndarray:
    """The seeds' mean hypervolume after each evaluation (a run that stopped early keeps its
    last value)."""
    n = max(len(r["curve"]) for r in rows)
    return np.mean([r["curve"] + r["curve"][-1:] * (n - len(r["curve"])) for r in rows], axis=0)


def evaluations_to_reach(rows: list[dict], level: float) -> int | None:
    """Evaluations after which the mean curve first reaches ``level`` (None: never)."""
    hit = np.flatnonzero(mean_curve(rows) >= level - 1e-12)
    return int(hit[0]) + 1 if len(hit) else None


def summarise(rows: list[dict], budgets: tuple[int, ...], default: str) -> tuple[str, str, bool]:
    """The report, its last line, and whether the target held."""
    lines = []
    problems = sorted({(r["dataset"], r["pair"]) for r in rows})
    engines = sorted({r["engine"] for r in rows}, key=lambda e: (e != default, e))
    header = "| problem | engine | " + " | ".join(f"HV@{b}" for b in budgets) + " | s/run | seeds |"
    lines += [header, "|" + "---|" * (len(budgets) + 4)]
    for problem in problems:
        for engine in engines:
            sel = _select(rows, problem, engine)
            if not sel:
                continue
            cells = []
            for b in budgets:
                v = np.array([r["hv"][str(b)] for r in sel if str(b) in r["hv"]])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}" if len(v) else "-")
            secs = np.mean([r["seconds"] for r in sel])
            lines.append(f"| {problem[0]} error-vs-{problem[1]} (true "
                         f"{sel[0]['true_front_hv']:.3f}) | {engine} | " + " | ".join(cells)
                         + f" | {secs:.1f} | {len(sel)} |")
    lines += ["", "Mean over the problems of hypervolume / true-front hypervolume:", "",
              "| engine | " + " | ".join(f"@{b}" for b in budgets) + " |",
              "|" + "---|" * (len(budgets) + 1)]
    ratios = {}
    for engine in engines:
        per_budget = []
        for b in budgets:
            per_problem = [[r["hv"][str(b)] / r["true_front_hv"]
                            for r in _select(rows, p, engine) if str(b) in r["hv"]]
                           for p in problems]
            per_budget.append(float(np.mean([np.mean(v) for v in per_problem]))
                              if all(per_problem) else float("nan"))
        ratios[engine] = per_budget
    column = min(1, len(budgets) - 1)
    for engine in sorted(engines, key=lambda e: -np.nan_to_num(ratios[e][column])):
        lines.append(f"| {engine} | " + " | ".join(f"{v:.3f}" for v in ratios[engine]) + " |")
    lines += level_with_the_best(rows, problems, engines, budgets, default)
    lines += engine_cost_lines(rows, default)
    if not {default, VANILLA} <= set(engines):
        return "\n".join(lines), "", True
    needed: dict[tuple[str, str], int | None] = {}
    shown: dict[tuple[str, str], str] = {}
    lines += ["", f"Evaluations {default} needs to reach {VANILLA}@{VANILLA_AT}'s mean "
              f"hypervolume (target <= {TARGET_EVALS}):"]
    for problem in problems:
        theirs = [r["hv"][str(VANILLA_AT)] for r in _select(rows, problem, VANILLA)
                  if str(VANILLA_AT) in r["hv"]]
        ours = _select(rows, problem, default)
        if not theirs or not ours:
            continue
        n = evaluations_to_reach(ours, float(np.mean(theirs)))
        needed[problem] = n
        shown[problem] = str(n) if n is not None else f">{len(mean_curve(ours))}"
        lines.append(f"- {problem[0]} error-vs-{problem[1]}: {shown[problem]} "
                     f"(vanilla@{VANILLA_AT} {np.mean(theirs):.3f})")
    ok = bool(needed) and all(n is not None and n <= TARGET_EVALS for n in needed.values())
    last = (f"evaluations to reach {VANILLA}@{VANILLA_AT}: "
            + ", ".join(f"{d}/{p} {n}" for (d, p), n in shown.items())
            + f" (target <= {TARGET_EVALS}: " + ("met" if ok else "MISSED") + ")")
    return "\n".join(lines), last, ok


def level_with_the_best(rows, problems, engines, budgets, default) -> list[str]:
    """Per problem and budget: the default against the best other engine there."""
    others = [e for e in engines if e != default]
    if default not in engines or not others:
        return []
    lines = ["", f"{default} against the best other engine (level: within one standard error "
             "of the difference):", "", "| problem | " + " | ".join(f"@{b}" for b in budgets)
             + " |", "|" + "---|" * (len(budgets) + 1)]
    for problem in problems:
        cells = []
        for b in budgets:
            def stats(engine, b=b, problem=problem):
                v = np.array([r["hv"][str(b)] for r in _select(rows, problem, engine)
                              if str(b) in r["hv"]])
                return (v.mean(), v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
            ours = stats(default)
            theirs = {e: s for e in others if (s := stats(e)) is not None}
            if ours is None or not theirs:
                cells.append("-")
                continue
            best = max(theirs, key=lambda e: theirs[e][0])
            diff = ours[0] - theirs[best][0]
            se = float(np.hypot(ours[1], theirs[best][1]))
            verdict = "ahead" if diff > se else "level" if diff >= -se else "BEHIND"
            cells.append(f"{verdict} {diff:+.3f} vs {best}")
        lines.append(f"| {problem[0]} error-vs-{problem[1]} | " + " | ".join(cells) + " |")
    return lines


def engine_cost_lines(rows: list[dict], default: str) -> list[str]:
    sel = [r for r in rows if r["engine"] == default and r.get("engine_cost")]
    if not sel:
        return []
    lines = ["", f"{default}'s own cost (evaluations are lookups):"]
    for b in COST_AT:
        cost = [r["engine_cost"][str(b)] for r in sel if str(b) in r["engine_cost"]]
        if cost:
            lines.append(f"- evaluations {b // 2 + 1}-{b}: "
                         f"{np.mean([c['per_eval_s'] for c in cost]):.3f} s per evaluation, "
                         f"longest ask {np.max([c['longest_ask_s'] for c in cost]):.2f} s "
                         f"({len(cost)} runs)")
    return lines


def main() -> None:
    from hybridmoo.proposers import DEFAULT_ALGORITHM, available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"the default engine and {VANILLA}, {QUICK_SEEDS} seeds, from a "
                             "fresh --out; exit 1 when the target is missed")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--engines", nargs="+",
                        default=[VANILLA] + [s.name for s in available()])
    parser.add_argument("--options", type=json.loads, default={},
                        help='engine options as JSON, e.g. \'{"n_init": 5}\' (recorded with '
                             'the engine name; not for vanilla-nsga2)')
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON lines of finished runs (default bench_out/search.jsonl, "
                             "bench_out/search_quick.jsonl with --quick)")
    parser.add_argument("--summary-only", action="store_true", help="only print the table")
    args = parser.parse_args()

    if args.options and VANILLA in args.engines:
        parser.error(f"--options apply to hybridmoo engines, not {VANILLA}")
    default = engine_label(DEFAULT_ALGORITHM, args.options)
    if args.quick:
        args.engines, args.seeds = [DEFAULT_ALGORITHM, VANILLA], QUICK_SEEDS
        args.budgets = sorted(set(QUICK_DEFAULT_BUDGETS) | {VANILLA_AT})
    args.out = args.out or Path("bench_out/search_quick.jsonl" if args.quick
                                else "bench_out/search.jsonl")
    args.engines = [e if e == VANILLA else engine_label(e, args.options) for e in args.engines]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.quick and not args.summary_only:
        args.out.unlink(missing_ok=True)
    done = [json.loads(line) for line in args.out.read_text().splitlines()] \
        if args.out.exists() else []
    finished = {(r["engine"], r["dataset"], r["pair"], r["seed"]) for r in done}

    def budgets_of(engine: str) -> list[int]:
        return list(QUICK_DEFAULT_BUDGETS) if args.quick and engine != VANILLA else args.budgets

    jobs = [{"engine": e, "dataset": d, "pair": p, "seed": s, "budgets": budgets_of(e)}
            for e in args.engines for d in args.datasets for p in args.pairs
            for s in range(args.seeds) if (e, d, p, s) not in finished]
    jobs.sort(key=lambda j: -max(j["budgets"]))  # long runs first: the pool ends together
    start = time.perf_counter()
    if not args.summary_only and jobs:
        print(f"{len(jobs)} runs to do ({len(finished)} already in {args.out})", flush=True)
        with get_context("spawn").Pool(args.jobs) as pool, open(args.out, "a") as out:
            for i, row in enumerate(pool.imap_unordered(run_one, jobs), 1):
                out.write(json.dumps(row) + "\n")
                out.flush()
                done.append(row)
                print(f"[{i}/{len(jobs)}] {row['engine']:>13} {row['dataset']:>9} "
                      f"{row['pair']:>8} seed {row['seed']}: HV@100 {row['hv'].get('100', 0):.3f} "
                      f"({row['seconds']:.1f}s, {time.perf_counter() - start:.0f}s in)",
                      flush=True)
    wanted = set(args.engines)
    rows = [r for r in done if r["engine"] in wanted and r["dataset"] in args.datasets
            and r["pair"] in args.pairs and r["seed"] < args.seeds]
    report, last, ok = summarise(rows, tuple(args.budgets), default)
    print(report)
    if last:
        print(last)
    sys.exit(0 if ok or not args.quick else 1)


if __name__ == "__main__":
    main()
