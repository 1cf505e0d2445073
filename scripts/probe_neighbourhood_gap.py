"""Where the hypervolume the default engine misses at 200 evaluations sits (issue 18).

For each seed: the share of the true front's hypervolume the default engine reaches after 200
evaluations, and for each true-front point it missed: (its share of the true hypervolume,
(fewest dimensions from any found front member, fewest dimensions matching neither parent of
any pair from the engine's first two fronts)), over every isomorphic encoding of the point.

    python scripts/probe_neighbourhood_gap.py cora params 3
"""

from __future__ import annotations

import argparse
import collections
import itertools

import numpy as np


def main() -> None:
    from hybridmoo import search
    from hybridmoo.archive import hypervolume, non_dominated_mask
    from hybridmoo.objectives import minimization_matrix
    from hybridmoo.problems import make_problem
    from hybridmoo.problems import nas_bench_graph as nbg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("pair", choices=["latency", "params"])
    parser.add_argument("seeds", type=int)
    args = parser.parse_args()
    objectives = ("error", args.pair)
    problem = make_problem("nas-bench-graph", dataset=args.dataset, objectives=objectives)
    nb = nbg._bench()
    encodings = collections.defaultdict(list)  # table key -> every raw encoding
    for link in range(len(nb.link_list)):
        for ops in itertools.product(range(len(nb.gnn_list)), repeat=nbg.N_LAYERS):
            config = {"link": link, **{f"op{i}": nb.gnn_list[o] for i, o in enumerate(ops)}}
            encodings[nbg.arch_key(config)].append(np.array((link, *ops)))
    column = "latency" if args.pair == "latency" else "para"
    measured = {k: (1 - e["perf"], e[column]) for k, e in nbg.load_table(args.dataset).items()}
    true = nbg.true_front(args.dataset, objectives)
    ideal, nadir = true.min(axis=0), true.max(axis=0)
    whole = hypervolume(true, ideal, nadir)
    for seed in range(args.seeds):
        result = search(problem.space, problem.evaluate, problem.objectives, max_evals=200,
                        seed=seed, progress=False)
        ok = [r for r in result.history if r.ok]
        X = np.array([problem.space.encode(r.config) for r in ok])
        F = minimization_matrix(ok, problem.objectives)
        first = non_dominated_mask(F)
        rest = np.flatnonzero(~first)
        second = np.zeros(len(ok), dtype=bool)
        second[rest[non_dominated_mask(F[rest])]] = True
        seen = {nbg.arch_key(r.config) for r in ok}
        missed = []
        for i, f in enumerate(true):
            keys = [k for k, v in measured.items() if np.allclose(v, f)]
            if any(k in seen for k in keys):
                continue
            targets = [e for k in keys for e in encodings[k]]
            moves = min(int((e != x).sum()) for e in targets for x in X[first])
            parents = X[first | second]
            cross = min(int(((e != a) & (e != b)).sum())
                        for e in targets for a in parents for b in parents)
            share = (whole - hypervolume(np.delete(true, i, axis=0), ideal, nadir)) / whole
            missed.append((round(share, 3), (moves, cross)))
        found = F[first]
        print(f"{args.dataset} {args.pair} seed {seed}: hypervolume share "
              f"{hypervolume(found, ideal, nadir) / whole:.3f}; missed (share, (moves, "
              f"crossover)): {missed}", flush=True)


if __name__ == "__main__":
    main()
