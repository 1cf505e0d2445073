"""How well do surrogate models rank NAS-Bench-Graph architectures from a small sample?

Offline check behind the surrogate engine's model choice (issue 2): fit each model variant on
the test error of ``--n`` random configs (log-warped as the engine does), predict every
architecture (the best prediction over its isomorphic configs), and report the Spearman
correlation with the true error, the median rank of the truly best architecture among the
predictions, and how many of the 50 best architectures are among the 500 predicted best.

    OMP_NUM_THREADS=1 python scripts/probe_surrogate_models.py --datasets cora citeseer photo
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, DotProduct, Matern, WhiteKernel
from sklearn.gaussian_process.kernels import ConstantKernel as C

from hybridmoo.problems.nas_bench_graph import N_LAYERS, arch_key, load_table, space
from hybridmoo.proposers.surrogate_models import Features, LogWarp

TOP, SHORTLIST = 50, 500


def gp(kernel):
    return lambda seed: GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed)


MODELS = {  # name -> (model factory, feature set)
    "gp rbf (engine)": (gp(C() * RBF(1.0) + WhiteKernel(1e-2)), "one-hot"),
    "gp rbf ard": (None, "one-hot"),  # kernel needs the feature count, built below
    "gp matern 5/2": (gp(C() * Matern(1.0, nu=2.5) + WhiteKernel(1e-2)), "one-hot"),
    "gp rbf + quadratic": (gp(C() * RBF(1.0) + C(0.1) * DotProduct(0.1) ** 2
                              + WhiteKernel(1e-2)), "one-hot"),
    "gp rbf, op counts added": (gp(C() * RBF(1.0) + WhiteKernel(1e-2)), "one-hot+counts"),
    "extra trees": (lambda seed: ExtraTreesRegressor(100, random_state=seed), "one-hot"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["cora", "citeseer", "photo"])
    parser.add_argument("--n", type=int, default=100, help="training configs")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # GP kernel bounds on tiny data: expected
    sp = space()
    raw = np.array(list(itertools.product(*[range(s) for s in sp.sizes])))
    keys = np.array([arch_key(sp.decode(x)) for x in raw])
    one_hot = Features(sp)
    print(f"| dataset | model | Spearman | rank of the best | top {TOP} in predicted top "
          f"{SHORTLIST} |")
    print("|---|---|---|---|---|")
    for dataset in args.datasets:
        table = load_table(dataset)
        valid = np.array([k in table for k in keys])
        X, arch = raw[valid], keys[valid]
        archs, index = np.unique(arch, return_inverse=True)
        err = np.array([1 - table[int(k)]["perf"] for k in archs])
        best = set(np.argsort(err)[:TOP].tolist())
        for name in args.models:
            make, features = MODELS[name]
            if make is None:
                make = gp(C() * RBF(np.ones(one_hot(X[:1]).shape[1])) + WhiteKernel(1e-2))

            def feats(rows, features=features):
                Z = one_hot(rows)
                if features == "one-hot+counts":
                    counts = np.stack([(rows[:, 1:1 + N_LAYERS] == v).mean(axis=1)
                                       for v in range(sp.sizes[1])], axis=1)
                    Z = np.hstack([Z, counts])
                return Z

            rows = []
            for seed in range(args.seeds):
                pick = np.random.default_rng(seed).choice(len(X), args.n, replace=False)
                warp = LogWarp(err[index[pick]])
                model = make(seed).fit(feats(X[pick]), warp(err[index[pick]]))
                predicted = np.full(len(archs), np.inf)
                np.minimum.at(predicted, index, model.predict(feats(X)))
                rank = np.argsort(np.argsort(predicted))
                rows.append((spearmanr(predicted, err).statistic, rank[np.argmin(err)],
                             len(best & set(np.argsort(predicted)[:SHORTLIST].tolist()))))
            r = np.array(rows, dtype=float)
            print(f"| {dataset} | {name} | {r[:, 0].mean():.3f} | "
                  f"{np.median(r[:, 1]):.0f} of {len(archs)} | "
                  f"{r[:, 2].mean():.1f} |", flush=True)


if __name__ == "__main__":
    main()
