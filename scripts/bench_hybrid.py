"""Hybrid search (evolution + gradient refinement) vs evolution only vs refinement only, at
equal wall-clock budget, on the built-in digits task (issue 5).

Per seed: one supernet of timm's test_resnet is trained on digits (cached in --out), then each
variant gets the same number of seconds:

- ``evolution``: the default engine alone;
- ``hybrid``: the default engine with a refinement round after every ``--every`` evaluations
  (none with 0) and, with ``--final-share``, that share of the time kept for rounds on the
  final front;
- ``refine-only``: random sub-networks, each batch of ``--batch`` refined right away;
- ``evolution-again`` (only when asked for in ``--variants``): evolution alone once more, the
  A/A check: its ratio to ``evolution`` is the run-to-run noise floor of this comparison.

The final fronts are compared on true measured metrics (accuracy on the validation split,
measured latency, size in bytes; every front point re-measured side by side at the end, so
latency drift between the runs does not decide) by hypervolume under one normalisation per
seed (the ideal and nadir of all three variants' fronts together). Prints a table and the
hybrid / evolution ratio.

    OMP_NUM_THREADS=1 python scripts/bench_hybrid.py --seeds 3 --budget-s 240
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

VARIANTS = ("evolution", "hybrid", "refine-only")
AGAIN = "evolution-again"  # optional A/A variant: evolution alone, run a second time


def supernet_for(seed: int, steps: int, out: Path):
    from hybridmoo.data import make_data
    from hybridmoo.supernet import load_supernet, train_supernet

    run_dir = out / f"supernet_seed{seed}"
    if (run_dir / "supernet.json").is_file():
        meta = json.loads((run_dir / "supernet.json").read_text())["meta"]
        if meta.get("step") == steps:
            return load_supernet(run_dir), make_data("digits", 32)
    trained = train_supernet({"model": "test_resnet", "image_size": 32, "steps": steps,
                              "seed": seed, "run_dir": str(run_dir), "save_every": steps},
                             progress=False)
    return trained.supernet, trained.data


def run_variant(variant: str, sn, data, seed: int, args) -> tuple[list, float, int, dict]:
    """The variant's final front, its wall time, its record count, and the refined networks
    of its front (by key) for the final re-measurement."""
    from hybridmoo import search
    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.refine import Refiner
    from hybridmoo.search import RefineSchedule

    evaluator = SubnetEvaluator(sn, data, latency_batch=args.latency_batch, repeats=10,
                                warmup=2, seed=seed)
    refine, networks = None, {}
    if variant not in ("evolution", AGAIN):
        given = {"steps": args.refine_steps, "solver": args.solver, "lr": args.lr,
                 "gate_lr": args.gate_lr, "task_budget": args.task_budget,
                 "divisor": args.divisor}  # None: RefineSettings' default
        settings = {k: v for k, v in given.items() if v is not None}
        refiner = Refiner(sn, data, {**settings, "seed": seed}, measure=evaluator.measure_network)

        def step(survivors, archive):
            out = []
            for result, network in refiner.refine(survivors, archive.objectives):
                networks[result.key] = network
                out.append(result)
            return out

        if variant == "hybrid":
            refine = RefineSchedule(step, every=args.every or None, survivors=args.survivors,
                                    final_round=args.final_share > 0,
                                    final_share=args.final_share)
        else:
            refine = RefineSchedule(step, every=args.batch, survivors=args.batch,
                                    final_round=False)
    start = time.monotonic()
    result = search(sn.space, evaluator, evaluator.objectives,
                    algorithm="random" if variant == "refine-only" else args.algorithm,
                    max_evals=100_000, seed=seed, refine=refine, max_seconds=args.budget_s,
                    progress=False)
    seconds = time.monotonic() - start
    front = result.front
    return front, seconds, len(result.history), {r.key: networks[r.key] for r in front
                                                 if r.key in networks}


def remeasure(fronts: dict[str, list], networks: dict[str, dict], sn, data, seed: int,
              args) -> dict[str, list]:
    """Every variant's front measured again side by side (interleaved, more repeats), so that
    latency drift between the variants' runs cannot decide the comparison."""
    from hybridmoo import EvalResult
    from hybridmoo.evaluate import SubnetEvaluator

    evaluator = SubnetEvaluator(sn, data, latency_batch=args.latency_batch, repeats=30,
                                warmup=3, seed=seed)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=240.0)
    parser.add_argument("--steps", type=int, default=300, help="supernet training steps")
    parser.add_argument("--every", type=int, default=0,
                        help="hybrid: evaluations between refinement rounds (0: none)")
    parser.add_argument("--final-share", type=float, default=0.15,
                        help="hybrid: share of the budget kept for rounds on the final front")
    parser.add_argument("--survivors", type=int, default=4, help="survivors per round")
    parser.add_argument("--batch", type=int, default=20, help="refine-only: batch size")
    # refinement settings; unset ones keep hybridmoo.refine.RefineSettings' defaults
    parser.add_argument("--refine-steps", type=int, default=30)
    parser.add_argument("--solver")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--gate-lr", type=float)
    parser.add_argument("--task-budget", type=float)
    parser.add_argument("--divisor", type=int)
    parser.add_argument("--algorithm", default="surrogate")
    parser.add_argument("--latency-batch", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("bench_out/hybrid"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    unknown = set(variants) - {*VARIANTS, AGAIN}
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {[*VARIANTS, AGAIN]}")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        sn, data = supernet_for(seed, args.steps, args.out)
        fronts, info, networks = {}, {}, {}
        for variant in variants:
            front, seconds, n, networks[variant] = run_variant(variant, sn, data, seed, args)
            fronts[variant] = front
            refined = sum(r.candidate.origin == "refine" for r in front)
            info[variant] = (seconds, n, len(front), refined)
        fronts = remeasure(fronts, networks, sn, data, seed, args)
        for variant, front in fronts.items():
            (args.out / f"front_seed{seed}_{variant}.json").write_text(json.dumps(
                [r.to_json() for r in front], indent=1))
        from hybridmoo.evaluate import OBJECTIVES

        hv = hypervolumes(fronts, OBJECTIVES)
        for variant in variants:
            seconds, n, size, refined = info[variant]
            rows.append({"seed": seed, "variant": variant, "hv": hv[variant], "seconds": seconds,
                         "records": n, "front": size, "refined_on_front": refined})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| variant | HV mean | HV per seed | seconds | records | front (refined) |")
    print("|---|---|---|---|---|---|")
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        print(f"| {variant} | {np.mean([r['hv'] for r in mine]):.3f} | "
              + " / ".join(f"{r['hv']:.3f}" for r in mine)
              + f" | {np.mean([r['seconds'] for r in mine]):.0f} | "
              + " / ".join(str(r["records"]) for r in mine) + " | "
              + " / ".join(f"{r['front']} ({r['refined_on_front']})" for r in mine) + " |")
    for variant, note in (("hybrid", "target >= 1.05"), (AGAIN, "noise floor")):
        if {variant, "evolution"} <= set(variants):
            ratios = ratio_per_seed(rows, variant, "evolution")
            print(f"\n{variant} / evolution hypervolume: mean {np.mean(ratios):.3f} "
                  f"(per seed {', '.join(f'{x:.3f}' for x in ratios)}; {note})")


def ratio_per_seed(rows: list[dict], variant: str, baseline: str) -> list[float]:
    """Hypervolume of ``variant`` over ``baseline``, seed by seed."""
    hv = {(r["seed"], r["variant"]): r["hv"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    return [hv[s, variant] / hv[s, baseline] for s in seeds]


if __name__ == "__main__":
    main()
