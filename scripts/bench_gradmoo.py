"""Benchmark the gradient multi-objective solvers on problems with known Pareto fronts.

For each problem (Fonseca-Fleming with n = 20, the two-parameter toy of the CAGrad / Nash-MTL
papers, ZDT1 with n = 30) and each solver: ``--runs`` runs of projected gradient descent
(``hybridmoo.gradmoo.problems.descend`` with the problem's default step rule), run ``i`` along
preference ray ``i`` of ``--runs`` evenly spaced rays and from start point ``i`` (the same seeded
starts for every solver). Reported per solver: the hypervolume of the end points relative to
the analytic front's (``hybridmoo.archive.hypervolume``: normalised by the front's ideal and
nadir, reference point 1.1), how far the end points lie from their preference rays and from the
front (Euclidean, normalised objective space), and the wall time. Solvers without a preference
(MGDA, PCGrad, ...) ignore the rays; their ray distances show it. MGDA-UB is left out: with the
Gram over all parameters it is MGDA.

    python scripts/bench_gradmoo.py > bench_out/gradmoo.md
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import time
from collections.abc import Iterator

import numpy as np

from hybridmoo.archive import hypervolume
from hybridmoo.gradmoo import SOLVERS
from hybridmoo.gradmoo.problems import (
    PROBLEMS,
    Problem,
    front_distance,
    preference_rays,
    ray_distance,
    run_rays,
)

ON_FRONT = 1e-2  # an end point this close to the front (normalised) counts as on it


def bench_problem(problem: Problem, solvers: list[str], runs: int, seed: int) -> Iterator[str]:
    """Table rows: one for the exact points on the rays, then one per solver as it finishes."""
    rays = preference_rays(runs)
    rng = np.random.default_rng(seed)
    starts = [problem.start(rng) for _ in range(runs)]
    front_hv = hypervolume(problem.front(4001), problem.ideal, problem.nadir)
    targets = np.array([problem.ray_target(v) for v in rays])
    target_hv = hypervolume(targets, problem.ideal, problem.nadir) / front_hv
    yield (f"| **{problem.name}** (n = {problem.n_var}) | exact points on the {runs} rays "
           f"| {target_hv:.3f} | 0 | 0 | 0 | {runs}/{runs} | |")
    for name in solvers:
        start = time.perf_counter()
        ends = run_rays(problem, name, rays, starts, seed=seed)
        seconds = time.perf_counter() - start
        hv = hypervolume(ends, problem.ideal, problem.nadir) / front_hv
        to_ray = [ray_distance(p, v) for p, v in zip(problem.normalize(ends), rays, strict=True)]
        to_front = np.abs(front_distance(problem, ends))
        yield (f"| | {name} | {hv:.3f} | {np.mean(to_ray):.4f} | {np.max(to_ray):.4f} "
               f"| {np.mean(to_front):.4f} | {int(np.sum(to_front <= ON_FRONT))}/{runs} "
               f"| {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="preference rays (= runs) per solver")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--solvers", nargs="*", default=[s for s in SOLVERS if s != "mgda-ub"],
                        choices=list(SOLVERS))
    args = parser.parse_args()
    print("| problem | solver | HV / front HV | mean ray dist | max ray dist "
          "| mean front dist | on front | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.problems:
        for row in bench_problem(PROBLEMS[name](), args.solvers, args.runs, args.seed):
            print(row, flush=True)


if __name__ == "__main__":
    main()
