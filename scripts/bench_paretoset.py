"""Does a Pareto set model answer trade-offs as well as a search? (issue 19, Fashion-MNIST)

A supernet (timm ``test_resnet`` at 32 px) is trained once and cached under ``--run-dir``,
with a latency model profiled on this machine. Per seed:

- a Pareto set model is trained on it (``hybridmoo.paretoset``, default settings, the fitted
  latency model as its latency) and asked for 20 evenly spaced preferences (pymoo's
  "energy" reference directions); its configs are measured on val (what using the model
  costs: its training time plus these measurements) and on test;
- the default search engine runs on val for the same wall-clock time; its front's configs
  are measured on test;
- the hypervolume of each test front (error %, measured latency, size; normalised by the
  union's extremes, reference 1.1) and their ratio;
- monotone response: along the lines from "task only" to "latency", to "size" and to both
  (11 preferences each), the share of neighbouring pairs whose configs' latency (on the
  first line), size (second) or both (third), as the model predicts them, do not rise as the
  preference moves toward cost;
- latency queries at 25, 50 and 75 % of the range the model gives (the predicted latency of
  its "latency only" and "task only" configs): measured latency against the asked one
  (within 15 % counts; meaningful on a quiet machine);
- query time: preference in, config out, the median over 200 preferences.

    OMP_NUM_THREADS=1 python scripts/bench_paretoset.py --quick      # 2 min (4 with the supernet)
    OMP_NUM_THREADS=1 python scripts/bench_paretoset.py --seeds 3

The last line states the figures; the exit code is 1 when the monotone share is under 90 %.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

MONOTONE_TARGET = 0.9
LATENCY_TOLERANCE = 0.15
PREFERENCES = 20
LINES = {  # from "task only" toward: (preference, the costs that must not rise)
    "latency": ((0, 1, 0), ("latency_ms",)),
    "size": ((0, 0, 1), ("size_bytes",)),
    "both": ((0, 0.5, 0.5), ("latency_ms", "size_bytes")),
}


def prepared(args):
    """The cached supernet, its data and its latency model (made on the first call)."""
    from hybridmoo.data import make_data
    from hybridmoo.evaluate.latency_model import LatencyModel, supernet_fingerprint
    from hybridmoo.evaluate.profiling import profile
    from hybridmoo.supernet import load_supernet, train_supernet
    from hybridmoo.supernet.checkpoint import META_FILE

    directory = args.run_dir / f"supernet_{args.supernet_steps}"
    data = make_data("fashion-mnist", 32)
    meta = directory / META_FILE
    if not meta.is_file() or json.loads(meta.read_text()).get("meta", {}).get(
            "step", 0) < args.supernet_steps:
        train_supernet({"model": "test_resnet", "data": "fashion-mnist", "image_size": 32,
                        "steps": args.supernet_steps, "run_dir": str(directory)},
                       resume=meta.is_file(), progress=False)
    sn = load_supernet(directory)
    path = directory / "latency_model.json"
    if path.is_file():
        model = LatencyModel.load(path, model_fingerprint=supernet_fingerprint(sn))
    else:
        result = profile(sn, samples=args.profile_samples, test_samples=10, data=data,
                         progress=False)
        print(f"latency model: Kendall tau {result.kendall_tau:.3f} on held-out networks")
        model = result.model
        model.save(path)
    return sn, data, model


def measure(evaluator, configs):
    """(error %, latency ms, size bytes) of each config."""
    out = []
    for config in configs:
        r = evaluator(config)
        out.append((100.0 - r["accuracy"], r["latency_ms"], r["size_bytes"]))
    return np.array(out)


def unique(configs):
    from hybridmoo.space import config_key

    return list({config_key(c): c for c in configs}.values())


def monotone_share(ps) -> float:
    """Share of neighbouring pairs along the lines from "task only" toward latency, size and
    both whose predicted cost the line weighs more (both, on the last) does not rise."""
    good = total = 0
    for target, watched in LINES.values():
        line = [(1 - t) * np.array([1.0, 0.0, 0.0]) + t * np.array(target)
                for t in np.linspace(0, 1, 11)]
        costs = [ps.predicted(ps.config_for(p)) for p in line]
        for a, b in itertools.pairwise(costs):
            total += 1
            good += all(b[k] <= a[k] + 1e-9 for k in watched)
    return good / total


def query_ms(ps, n: int = 200) -> float:
    times = []
    for p in np.random.default_rng(0).dirichlet(np.ones(3), n):
        began = time.perf_counter()
        ps.config_for(p)
        times.append(1e3 * (time.perf_counter() - began))
    return statistics.median(times)


def run_seed(args, sn, data, latency_model, seed: int) -> dict:
    from pymoo.util.ref_dirs import get_reference_directions

    from hybridmoo import search
    from hybridmoo.archive import hypervolume, non_dominated_mask
    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.paretoset import ParetoSetSettings, train_paretoset

    val = SubnetEvaluator(sn, data, split="val")
    test = SubnetEvaluator(sn, data, split="test")
    began = time.perf_counter()
    settings = ParetoSetSettings(seed=seed, steps=args.paretoset_steps,
                                 task_samples=args.task_samples, estimator=args.estimator,
                                 preferences=16 if args.estimator == "predictor" else 4)
    ps = train_paretoset(sn, data, run_dir=args.run_dir / f"paretoset_{args.estimator}_{seed}",
                         settings=settings, latency_model=latency_model, progress=False)
    train_s = time.perf_counter() - began
    prefs = get_reference_directions("energy", 3, PREFERENCES, seed=seed + 1)
    ours = unique(ps.configs_for(prefs))
    measure(val, ours)  # what knowing the model's configs costs
    budget = time.perf_counter() - began
    ours_test = measure(test, ours)
    result = search(sn.space, val, val.objectives, algorithm="surrogate", max_evals=10_000,
                    max_seconds=budget, seed=seed, progress=False)
    theirs = [r.config for r in result.front]
    theirs_test = measure(test, theirs)
    union = np.vstack([ours_test, theirs_test])
    ideal, nadir = union.min(axis=0), union.max(axis=0)
    hv_ours, hv_theirs = hypervolume(ours_test, ideal, nadir), hypervolume(theirs_test, ideal,
                                                                           nadir)
    lo = ps.predicted(ps.config_for([0, 1, 0]))["latency_ms"]  # the model's own range
    hi = ps.predicted(ps.config_for([1, 0, 0]))["latency_ms"]
    queries = []
    for share in (0.25, 0.5, 0.75):
        asked = lo + share * (hi - lo)
        measured = measure(test, [ps.config_for(latency_ms=asked)])[0, 1]
        queries.append((asked, measured, ps.predicted(ps.config_for(latency_ms=asked))[
            "latency_ms"]))
    row = {"seed": seed, "train_s": train_s, "budget_s": budget, "configs": len(ours),
           "evaluations": len(result.history), "front_ours": int(non_dominated_mask(
               ours_test).sum()), "front_theirs": len(theirs), "hv_ours": hv_ours,
           "hv_theirs": hv_theirs, "hv_ratio": hv_ours / hv_theirs if hv_theirs else float("inf"),
           "monotone": monotone_share(ps), "query_ms": query_ms(ps),
           "task_model_tau": ps.info.get("task_model_tau"), "latency_queries": queries,
           "best_error": [float(ours_test[:, 0].min()), float(theirs_test[:, 0].min())]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, short training")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--run-dir", type=Path, default=Path("bench_out/paretoset"))
    parser.add_argument("--supernet-steps", type=int, default=600)
    parser.add_argument("--paretoset-steps", type=int, default=500)
    parser.add_argument("--task-samples", type=int, default=200)
    parser.add_argument("--profile-samples", type=int, default=40)
    parser.add_argument("--estimator", default="predictor",
                        help="the task-loss gradient: predictor (default), soft, "
                             "straight-through (16 preferences per step, else 4)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.paretoset_steps, args.task_samples = 1, 300, 120
        args.profile_samples = 24
    torch.set_num_threads(1)
    sn, data, latency_model = prepared(args)
    rows = [run_seed(args, sn, data, latency_model, seed) for seed in range(args.seeds)]
    ratio = statistics.mean(r["hv_ratio"] for r in rows)
    monotone = statistics.mean(r["monotone"] for r in rows)
    query = statistics.median(r["query_ms"] for r in rows)
    within = [abs(m / a - 1) <= LATENCY_TOLERANCE for r in rows
              for a, m, _ in r["latency_queries"]]
    print(f"paretoset ({len(rows)} seed{'s' * (len(rows) > 1)}): hypervolume ratio vs "
          f"evolution at equal wall-clock {ratio:.3f}, monotone {monotone:.0%} (target >= "
          f"{MONOTONE_TARGET:.0%}), query {query:.2f} ms, latency queries within "
          f"{LATENCY_TOLERANCE:.0%}: {sum(within)}/{len(within)}"
          f"{'' if monotone >= MONOTONE_TARGET else ' (MISSED)'}")
    sys.exit(0 if monotone >= MONOTONE_TARGET else 1)


if __name__ == "__main__":
    main()
