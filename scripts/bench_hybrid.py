"""Hybrid search (evolution + gradient refinement) vs evolution only vs refinement only, at
equal wall-clock budget, on Fashion-MNIST (issue 14; digits with ``--data digits``).

Per seed: one supernet of timm's test_resnet is trained (cached in --out), then each variant
gets the same number of seconds:

- ``evolution``: the default engine alone;
- ``hybrid``: the default engine with a refinement round after every ``--every`` evaluations
  (none with 0) and, with ``--final-share``, that share of the time kept for the final front:
  front tuning first (the supernet's weights tuned on the front's configs, every tuned network
  measured; ``--no-front`` leaves it out), then rounds of survivors refined one by one;
- ``refine-only``: random sub-networks, each batch of ``--batch`` refined right away;
- ``evolution-again``: evolution alone once more, the A/A check: its ratio to ``evolution``
  is the run-to-run noise floor of this comparison.

No refinement starts after the deadline, but one running then runs to its end, so the
variants with refinement run first and the evolution-only ones then get the wall-clock the
hybrid took: hybrid and evolution at equal wall-clock in fact, not only in name.

Every search selects on the validation split. The final fronts are compared on the **test**
split (test accuracy, measured latency, size in bytes; every front point re-measured side by
side at the end, so latency drift between the runs does not decide) by hypervolume under one
normalisation per seed (the ideal and nadir of all variants' fronts together). Prints a table,
the hybrid / evolution and A/A ratios with bootstrap 95 % intervals over seeds, and a last
line with the verdict: the target is a mean ratio >= 1.10 whose interval lies above the A/A
one (exit code 1 when missed).

With ``--backend ray`` (a private local cluster on 127.0.0.1, ``--workers`` actors, 2 by
default) the comparison is refinement scheduling at cluster scale, on the same budget:

- ``serial``: today's rounds: evaluations drained, survivors refined one after another in the
  driver (the actors wait);
- ``actors``: each survivor's refinement a job on the actors, measured there by the same
  evaluator, while evolution goes on on the other actor (no draining);
- ``actors-untold``: the same, refined records not told to the proposer (the ablation of
  refinement feeding evolution).

It prints per variant the actor utilisation (sum of task times on the actors / (actors x the
search's wall-clock after the actors came up)), the share of evolutionary offspring whose
parents include a refined record, and on its last line the utilisation of ``actors`` and its
front's hypervolume on test metrics over the serial one's; exit code 1 when the utilisation is
under 90 %.

    OMP_NUM_THREADS=1 python scripts/bench_hybrid.py --seeds 5 --budget-s 240
    # or seeds in parallel processes, then one verdict over the rows kept in --out:
    OMP_NUM_THREADS=1 python scripts/bench_hybrid.py --seeds 3 --budget-s 240 &
    OMP_NUM_THREADS=1 python scripts/bench_hybrid.py --first-seed 3 --seeds 2 --budget-s 240
    python scripts/bench_hybrid.py --seeds 5 --summarize
    OMP_NUM_THREADS=1 python scripts/bench_hybrid.py --quick       # minutes on 2 cores
    OMP_NUM_THREADS=1 python scripts/bench_hybrid.py --quick --backend ray
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

AGAIN = "evolution-again"  # the A/A variant: evolution alone, run a second time
VARIANTS = ("evolution", "hybrid", "refine-only", AGAIN)
RAY_VARIANTS = ("serial", "actors", "actors-untold")
ON_ACTORS = ("actors", "actors-untold")
MIN_UTILISATION = 0.90
TARGET = 1.10  # hybrid / evolution hypervolume on test metrics
QUICK = {"seeds": 2, "budget_s": 75.0, "steps": 150}
RAY_QUICK = {"seeds": 1, "budget_s": 120.0, "steps": 150}  # actors take ~30 s to come up


def supernet_for(seed: int, args) -> tuple:
    from hybridmoo.data import make_data
    from hybridmoo.supernet import load_supernet, train_supernet

    run_dir = args.out / f"supernet_{args.data}_seed{seed}"
    if (run_dir / "supernet.json").is_file():
        meta = json.loads((run_dir / "supernet.json").read_text())["meta"]
        if meta.get("step") == args.steps:
            return load_supernet(run_dir), make_data(args.data, 32)
    trained = train_supernet({"model": "test_resnet", "image_size": 32, "steps": args.steps,
                              "data": args.data, "seed": seed, "run_dir": str(run_dir),
                              "save_every": args.steps}, progress=False)
    return trained.supernet, trained.data


def run_variant(variant: str, sn, data, seed: int, args, budget_s: float
                ) -> tuple[list, float, int, dict]:
    """The variant's final front, its wall time, its record count, and the refined networks
    of its front (by key) for the final re-measurement."""
    from hybridmoo import search
    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.search import RefineSchedule

    evaluator = SubnetEvaluator(sn, data, latency_batch=args.latency_batch, repeats=10,
                                warmup=2, seed=seed)
    refine, networks = None, {}
    if variant in RAY_VARIANTS:
        return run_on_ray(variant, sn, data, seed, args, budget_s, evaluator)
    if variant not in ("evolution", AGAIN):
        # refinement as the pipeline runs it: jobs on the (local) backend, under the
        # preferences the search's scheduler aims at the front's gaps
        refiner, _, networks = serial_refinement(sn, data, seed, args, evaluator)
        jobs = {"worker": refiner.refine_job, "keep": keeper(networks)}
        if variant == "hybrid":
            refine = RefineSchedule(**jobs, every=args.every or None, survivors=args.survivors,
                                    final_round=args.final_share > 0,
                                    final_share=args.final_share,
                                    front_round=args.front and args.final_share > 0)
        else:
            refine = RefineSchedule(**jobs, every=args.batch, survivors=args.batch,
                                    final_round=False)
    start = time.monotonic()
    result = search(sn.space, evaluator, evaluator.objectives,
                    algorithm="random" if variant == "refine-only" else args.algorithm,
                    max_evals=100_000, seed=seed, refine=refine, max_seconds=budget_s,
                    progress=False)
    seconds = time.monotonic() - start
    front = result.front
    return front, seconds, len(result.history), {r.key: networks[r.key] for r in front
                                                 if r.key in networks}


def serial_refinement(sn, data, seed: int, args, evaluator) -> tuple:
    """The refiner of the command-line settings (unset ones: RefineSettings' defaults), a
    ``RefineSchedule`` step that refines survivors in this process, and the dict of refined
    networks by record key that the step (and any other user of the refiner) fills."""
    from hybridmoo.refine import Refiner

    given = {"steps": args.refine_steps, "recovery_steps": args.recovery_steps,
             "solver": args.solver, "lr": args.lr}
    settings = {k: v for k, v in given.items() if v is not None}
    refiner = Refiner(sn, data, {**settings, "seed": seed}, measure=evaluator.measure_network)
    networks: dict = {}

    def step(survivors, archive):
        out = []
        for result, network in refiner.refine(survivors, archive.objectives):
            networks[result.key] = network
            out.append(result)
        return out

    return refiner, step, networks


def keeper(networks: dict):
    """A ``RefineSchedule`` keep that files each refined network under its record's key."""
    def keep(result, network):
        networks[result.key] = network

    return keep


def run_on_ray(variant: str, sn, data, seed: int, args, budget_s: float, evaluator
               ) -> tuple[list, float, int, dict, dict]:
    """A hybrid search on ``args.workers`` Ray actors, refining serially in the driver or as
    work on the actors; also returns its utilisation and lineage figures."""
    from hybridmoo import search
    from hybridmoo.search import RefineSchedule

    refiner, step, networks = serial_refinement(sn, data, seed, args, evaluator)
    # the teacher's logits once, before the clock starts, as the pipeline computes them: they
    # travel to the actors with the refiner instead of each actor computing its own
    refiner.distillation_target()

    common = {"every": args.every or None, "survivors": args.survivors,
              "final_round": args.final_share > 0, "final_share": args.final_share}
    if variant == "serial":
        refine = RefineSchedule(step, **common)
    else:
        refine = RefineSchedule(worker=refiner.refine_job, keep=keeper(networks),
                                tell=variant == "actors", **common)
    backend = timed_backend(args.workers)
    start = time.monotonic()
    result = search(sn.space, evaluator, evaluator.objectives, algorithm=args.algorithm,
                    max_evals=100_000, seed=seed, refine=refine, max_seconds=budget_s,
                    backend=backend, progress=False)
    seconds = time.monotonic() - start
    stats = utilisation(result.history, variant, args.workers, backend, start, start + seconds)
    front = result.front
    return front, seconds, len(result.history), {r.key: networks[r.key] for r in front
                                                 if r.key in networks}, stats


def timed_backend(workers: int):
    """A RayBackend that notes when results arrive (the first tells when the work began)."""
    from hybridmoo.backends import RayBackend

    class TimedRayBackend(RayBackend):
        def next_done(self):
            out = super().next_done()
            self.arrivals.append(time.monotonic())
            return out

    backend = TimedRayBackend(workers)
    backend.arrivals = []
    return backend


def task_seconds(record) -> float:
    """A record's share of its task's time on the worker: an evaluation's own time, or for
    refinement the whole job (teacher set-up included), shared by the records it made."""
    if "worker_s" in record.info:
        return record.info["worker_s"] / max(record.info.get("job_records", 1), 1)
    return record.elapsed_s


def utilisation(history: list, variant: str, workers: int, backend, start: float,
                end: float) -> dict:
    """Actor utilisation (task seconds on the actors / (workers x wall after the first task
    began)) and the share of evolutionary offspring with a refined parent."""
    refined = {r.key for r in history if r.candidate.origin == "refine"}
    on_actors = [r for r in history if r.candidate.origin != "refine"
                 or variant in ON_ACTORS]
    busy = sum(task_seconds(r) for r in on_actors)
    arrivals = getattr(backend, "arrivals", [])
    first = [r for r in history if r.candidate.origin != "refine"][:1]
    began = (arrivals[0] - first[0].elapsed_s) if arrivals and first else start
    wall = max(end - began, 1e-9)
    evo = [r for r in history if r.candidate.origin == "evo"]
    bred = sum(bool(set(r.candidate.parents) & refined) for r in evo)
    return {"utilisation": busy / (workers * wall), "startup_s": began - start,
            "refined": len(refined), "offspring": len(evo), "bred_from_refined": bred}


def remeasure(fronts: dict[str, list], networks: dict[str, dict], sn, data, seed: int,
              args) -> dict[str, list]:
    """Every variant's front measured again side by side (interleaved, more repeats), so that
    latency drift between the variants' runs cannot decide the comparison; accuracy on the
    test split (the searches selected on val)."""
    from hybridmoo import EvalResult
    from hybridmoo.evaluate import SubnetEvaluator

    evaluator = SubnetEvaluator(sn, data, latency_batch=args.latency_batch, repeats=30,
                                warmup=3, seed=seed, split="test")
    jobs = [(v, i) for v in fronts for i in range(len(fronts[v]))]
    order = np.random.default_rng(seed).permutation(len(jobs))
    values: dict[tuple[str, int], dict] = {}
    for j in order:
        v, i = jobs[j]
        record = fronts[v][i]
        net = networks[v].get(record.key)
        measured = (evaluator.measure_network(net) if net is not None
                    else evaluator(record.config))
        values[v, i] = {o.name: float(measured[o.name]) for o in evaluator.objectives}
    return {v: [EvalResult(r.candidate, values[v, i]) for i, r in enumerate(front)]
            for v, front in fronts.items()}


def hypervolumes(fronts: dict[str, list], objectives) -> dict[str, float]:
    from hybridmoo.archive import hypervolume
    from hybridmoo.objectives import minimization_matrix

    matrices = {v: minimization_matrix(f, objectives) for v, f in fronts.items()}
    every = np.vstack(list(matrices.values()))
    ideal, nadir = every.min(axis=0), every.max(axis=0)
    return {v: hypervolume(F, ideal, nadir) for v, F in matrices.items()}


def bootstrap_mean(values: list[float], seed: int = 0, draws: int = 10_000
                   ) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(values, dtype=float)
    means = x[rng.integers(0, len(x), size=(draws, len(x)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a few minutes on 2 cores: {QUICK} (explicit flags win)")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float)
    parser.add_argument("--steps", type=int, help="supernet training steps")
    parser.add_argument("--data", default="fashion-mnist", choices=("fashion-mnist", "digits"))
    parser.add_argument("--every", type=int, default=0,
                        help="hybrid: evaluations between refinement rounds (0: none)")
    parser.add_argument("--final-share", type=float, default=0.3,
                        help="hybrid: share of the budget kept for rounds on the final front")
    parser.add_argument("--survivors", type=int, default=4, help="survivors per round")
    parser.add_argument("--no-front", dest="front", action="store_false",
                        help="hybrid: no front tuning at the start of the final phase")
    parser.add_argument("--batch", type=int, default=8, help="refine-only: batch size")
    # refinement settings; unset ones keep hybridmoo.refine.RefineSettings' defaults
    parser.add_argument("--refine-steps", type=int)
    parser.add_argument("--recovery-steps", type=int)
    parser.add_argument("--solver")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--algorithm", default="surrogate")
    parser.add_argument("--latency-batch", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("bench_out/hybrid"))
    parser.add_argument("--backend", default="local", choices=("local", "ray"),
                        help="ray: refinement on the actors vs serial rounds (module doc)")
    parser.add_argument("--workers", type=int, default=2, help="ray: actors")
    parser.add_argument("--summarize", action="store_true",
                        help="only the table and verdict of the seeds' rows kept in --out "
                             "(runs of different seeds in parallel, then one verdict)")
    args = parser.parse_args()
    if args.backend == "ray":
        return main_ray(args, parser)
    defaults = {"seeds": 5, "budget_s": 240.0, "steps": 600}
    for key, value in (QUICK if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {list(VARIANTS)}")
    rows_file = args.out / f"rows_{args.data}.jsonl"  # every seed's rows, kept across runs
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.summarize:
        return summarize(rows_from(rows_file, seeds), variants)
    rows = []
    for seed in seeds:
        sn, data = supernet_for(seed, args)
        fronts, info, networks = {}, {}, {}
        budget = args.budget_s
        # a refinement running at the deadline runs to its end, so the variants with
        # refinement go first and evolution alone then gets the wall-clock the hybrid took
        # (refine-only's when there is no hybrid): the main ratio is at equal wall-clock
        refining = [v for v in ("hybrid", "refine-only") if v in variants]
        for variant in refining + [v for v in variants if v not in refining]:
            front, seconds, n, networks[variant] = run_variant(
                variant, sn, data, seed, args, args.budget_s if variant == "refine-only"
                else budget)
            if variant == "hybrid" or (variant == "refine-only" and "hybrid" not in variants):
                budget = max(args.budget_s, seconds)
            fronts[variant] = front
            refined = sum(r.candidate.origin == "refine" for r in front)
            info[variant] = (seconds, n, len(front), refined)
        fronts = remeasure(fronts, networks, sn, data, seed, args)
        for variant, front in fronts.items():
            (args.out / f"front_{args.data}_seed{seed}_{variant}.json").write_text(json.dumps(
                [r.to_json() for r in front], indent=1))
        from hybridmoo.evaluate import OBJECTIVES

        hv = hypervolumes(fronts, OBJECTIVES)
        for variant in variants:
            seconds, n, size, refined = info[variant]
            rows.append({"seed": seed, "variant": variant, "hv": hv[variant], "seconds": seconds,
                         "records": n, "front": size, "refined_on_front": refined})
            print(json.dumps(rows[-1]), flush=True)
            with rows_file.open("a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
    return summarize(rows, variants)


def rows_from(path: Path, seeds: range) -> list[dict]:
    """The last row per (seed, variant) of ``path`` for ``seeds`` (later runs win)."""
    if not path.is_file():
        sys.exit(f"--summarize: {path} does not exist (run the benchmark first)")
    last = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["seed"] in seeds:
            last[row["seed"], row["variant"]] = row
    return [last[k] for k in sorted(last)]


def summarize(rows: list[dict], variants: list[str]) -> int:
    """The table, the ratios with bootstrap intervals and the verdict (exit code)."""
    n_seeds = len({r["seed"] for r in rows})
    print("\n| variant | HV mean (test) | HV per seed | seconds | records | front (refined) |")
    print("|---|---|---|---|---|---|")
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        print(f"| {variant} | {np.mean([r['hv'] for r in mine]):.3f} | "
              + " / ".join(f"{r['hv']:.3f}" for r in mine)
              + f" | {np.mean([r['seconds'] for r in mine]):.0f} | "
              + " / ".join(str(r["records"]) for r in mine) + " | "
              + " / ".join(f"{r['front']} ({r['refined_on_front']})" for r in mine) + " |")
    summary = {}
    for variant in ("hybrid", AGAIN, "refine-only"):
        if {variant, "evolution"} <= set(variants):
            ratios = ratio_per_seed(rows, variant, "evolution")
            summary[variant] = (float(np.mean(ratios)), *bootstrap_mean(ratios))
            print(f"{variant} / evolution hypervolume: mean {summary[variant][0]:.3f}, 95 % "
                  f"interval [{summary[variant][1]:.3f}, {summary[variant][2]:.3f}] (per seed "
                  f"{', '.join(f'{x:.3f}' for x in ratios)})")
    if not {"hybrid", AGAIN} <= set(summary):
        print("no verdict: the hybrid, evolution and evolution-again variants are all needed")
        return 1
    (mean, low, _), (aa, _, aa_high) = summary["hybrid"], summary[AGAIN]
    met = mean >= TARGET and low > aa_high
    print(f"hybrid/evolution {mean:.3f} [{low:.3f}, {summary['hybrid'][2]:.3f}], A/A {aa:.3f} "
          f"[{summary[AGAIN][1]:.3f}, {aa_high:.3f}] over {n_seeds} seeds on test metrics: "
          f"target >= {TARGET} with its interval above the A/A one: "
          f"{'met' if met else 'MISSED'}")
    return 0 if met else 1


def main_ray(args, parser) -> int:
    """``--backend ray``: refinement on the actors vs serial rounds (see the module doc)."""
    from hybridmoo.backends.ray_cluster import connect, disconnect
    from hybridmoo.evaluate import OBJECTIVES

    for key, value in (RAY_QUICK if args.quick else {"seeds": 3, "budget_s": 240.0,
                                                      "steps": 600}).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.every == 0:
        args.every = 12  # rounds during evolution: what runs beside the evaluations
    args.out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",") if args.variants != ",".join(VARIANTS) else (
        ["serial", "actors"] if args.quick else list(RAY_VARIANTS))
    if args.quick and args.survivors == 4:
        args.survivors = 2  # a round of 4 survivors alone outlasts a quick budget
    if set(variants) - set(RAY_VARIANTS) or "actors" not in variants:
        parser.error(f"--backend ray variants: {list(RAY_VARIANTS)} (actors needed)")
    connection = connect(None, args.workers)  # one private cluster on 127.0.0.1 for all runs
    rows = []
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            sn, data = supernet_for(seed, args)
            fronts, networks, stats = {}, {}, {}
            for variant in variants:
                front, seconds, n, networks[variant], st = run_variant(
                    variant, sn, data, seed, args, args.budget_s)
                fronts[variant] = front
                stats[variant] = {**st, "seconds": seconds, "records": n, "front": len(front),
                                  "refined_on_front": sum(r.candidate.origin == "refine"
                                                          for r in front)}
            fronts = remeasure(fronts, networks, sn, data, seed, args)
            hv = hypervolumes(fronts, OBJECTIVES)
            for variant in variants:
                rows.append({"seed": seed, "variant": variant, "hv": hv[variant],
                             **stats[variant]})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        disconnect(connection)
    print("\n| variant | HV mean (test) | utilisation | offspring bred from refined | "
          "records | refined |")
    print("|---|---|---|---|---|---|")
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        bred = sum(r["bred_from_refined"] for r in mine)
        offspring = sum(r["offspring"] for r in mine)
        print(f"| {variant} | {np.mean([r['hv'] for r in mine]):.3f} | "
              + " / ".join(f"{r['utilisation']:.1%}" for r in mine)
              + f" | {bred}/{offspring} ({bred / max(offspring, 1):.1%}) | "
              + " / ".join(str(r["records"]) for r in mine) + " | "
              + " / ".join(str(r["refined"]) for r in mine) + " |")
    ratios = ratio_per_seed(rows, "actors", "serial") if "serial" in variants else [math.nan]
    if "actors-untold" in variants:
        told = ratio_per_seed(rows, "actors", "actors-untold")
        print(f"actors (told) / actors-untold hypervolume: mean {np.mean(told):.3f} (per seed "
              f"{', '.join(f'{x:.3f}' for x in told)})")
    util = float(np.mean([r["utilisation"] for r in rows if r["variant"] == "actors"]))
    serial = float(np.mean([r["utilisation"] for r in rows if r["variant"] == "serial"]
                           or [math.nan]))
    met = util >= MIN_UTILISATION
    print(f"actor utilisation {util:.1%} with refinement on the actors (serial rounds "
          f"{serial:.1%}), target >= {MIN_UTILISATION:.0%}: {'met' if met else 'MISSED'}; "
          f"front hypervolume on test, actors / serial: mean {np.mean(ratios):.3f} (per seed "
          f"{', '.join(f'{x:.3f}' for x in ratios)}) over {args.seeds} seeds")
    return 0 if met else 1


def ratio_per_seed(rows: list[dict], variant: str, baseline: str) -> list[float]:
    """Hypervolume of ``variant`` over ``baseline``, seed by seed."""
    hv = {(r["seed"], r["variant"]): r["hv"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    return [hv[s, variant] / hv[s, baseline] for s in seeds]


if __name__ == "__main__":
    sys.exit(main())
