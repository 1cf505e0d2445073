"""Where is the hypervolume the default engine misses at 100 evaluations? (issue 2)

For one NAS-Bench-Graph problem and a few seeds: the fronts found by the default engine after
``--budget`` evaluations and by vanilla NSGA-II after ``--vanilla-budget``, normalised by the
true front's ideal and nadir, and the single true-front point that would add the most
hypervolume to the default engine's result (with what it would add, as a share of the true
front's hypervolume).

    python scripts/probe_front_gap.py --dataset cora --pair params --seeds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import PAIRS, vanilla_nsga2


def main() -> None:
    from hybridmoo import search
    from hybridmoo.archive import hypervolume, non_dominated_mask
    from hybridmoo.objectives import minimization_matrix
    from hybridmoo.problems import make_problem
    from hybridmoo.problems.nas_bench_graph import true_front

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cora")
    parser.add_argument("--pair", default="params", choices=list(PAIRS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--vanilla-budget", type=int, default=500)
    args = parser.parse_args()
    objectives = PAIRS[args.pair]
    problem = make_problem("nas-bench-graph", dataset=args.dataset, objectives=objectives)
    true = true_front(args.dataset, objectives)
    ideal, nadir = true.min(axis=0), true.max(axis=0)

    def hv(F: np.ndarray) -> float:
        return hypervolume(F, ideal, nadir)

    def normalised(F: np.ndarray) -> list:
        return np.round((F - ideal) / (nadir - ideal), 3).tolist()

    def shown(F: np.ndarray) -> list:
        F = F[non_dominated_mask(F)]
        return normalised(F[np.argsort(F[:, 0])])

    full = hv(true)
    print(f"true front ({', '.join(objectives)}, normalised): {shown(true)}")
    for seed in range(args.seeds):
        ours = search(problem.space, problem.evaluate, problem.objectives,
                      max_evals=args.budget, seed=seed, progress=False).history
        F = minimization_matrix([r for r in ours if r.ok], problem.objectives)
        V = minimization_matrix([r for r in vanilla_nsga2(problem, args.vanilla_budget, seed)
                                 if r.ok], problem.objectives)
        gains = [hv(np.vstack([F, p])) - hv(F) for p in true]
        i = int(np.argmax(gains))
        print(f"seed {seed}: default@{args.budget} {hv(F) / full:.3f}, "
              f"vanilla NSGA-II@{args.vanilla_budget} {hv(V) / full:.3f} of the true HV")
        print(f"  default front: {shown(F)}")
        print(f"  vanilla front: {shown(V)}")
        print(f"  the true point worth most to the default run: "
              f"{normalised(true[i])}, "
              f"+{gains[i] / full:.3f} of the true HV")


if __name__ == "__main__":
    main()
