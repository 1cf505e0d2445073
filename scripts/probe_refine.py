"""Where does refinement lose accuracy? Refine one finished front of ``bench_hybrid.py`` under
several settings that switch parts of the refinement off, and compare every refined network
with its survivor (true measured accuracy and size).

Settings (30 steps each, ``RefineSettings``' defaults otherwise):

- ``default``: weights, quantizer steps and gates all learn;
- ``frozen``: nothing learns (learning rates 1e-9): checks that extraction, hardening and
  recalibration alone give the survivor back;
- ``fine-tune``: weights and quantizer steps only (gate lr 1e-9);
- ``fine-tune lr 3e-5``, ``fine-tune no distill``: the same, gentler or without the teacher;
- ``gates``: gates only (weight lr 1e-9).

    OMP_NUM_THREADS=1 python scripts/bench_hybrid.py --seeds 1 --variants evolution \\
        --out bench_out/hybrid240   # (or any earlier bench_hybrid run directory)
    OMP_NUM_THREADS=1 python scripts/probe_refine.py --run-dir bench_out/hybrid240 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

FROZEN = 1e-9  # a learning rate that moves nothing
SETTINGS = {
    "default": {},
    "frozen": {"lr": FROZEN, "gate_lr": FROZEN},
    "fine-tune": {"gate_lr": FROZEN},
    "fine-tune lr 3e-5": {"gate_lr": FROZEN, "lr": 3e-5},
    "fine-tune no distill": {"gate_lr": FROZEN, "distill": False},
    "gates": {"lr": FROZEN},
}


def main() -> None:
    from hybridmoo.data import make_data
    from hybridmoo.evaluate import SubnetEvaluator
    from hybridmoo.objectives import EvalResult
    from hybridmoo.refine import Refiner
    from hybridmoo.supernet import load_supernet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("bench_out/hybrid240"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="evolution", help="whose final front to refine")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    sn = load_supernet(args.run_dir / f"supernet_seed{args.seed}")
    data = make_data("digits", 32)
    evaluator = SubnetEvaluator(sn, data, latency_batch=8, repeats=10, warmup=2, seed=args.seed)
    path = args.run_dir / f"front_seed{args.seed}_{args.variant}.json"
    front = [EvalResult.from_json(r) for r in json.loads(path.read_text())
             if r["candidate"].get("origin") != "refine"]  # survivors the supernet can extract
    print(f"{len(front)} survivors from {path}")
    print("\n| settings | refined | mean d accuracy (pts) | better / equal / worse accuracy "
          "| smaller | dominates its survivor | s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.settings:
        refiner = Refiner(sn, data, {**SETTINGS[name], "steps": args.steps, "seed": args.seed},
                          measure=evaluator.measure_network)
        start = time.perf_counter()
        by_key = {s.key: s for s in front}
        pairs = [(by_key[r.candidate.parents[0]], r)
                 for r, _ in refiner.refine(front, evaluator.objectives) if r.ok]
        seconds = time.perf_counter() - start
        d_acc = np.array([r.values["accuracy"] - s.values["accuracy"] for s, r in pairs])
        smaller = sum(r.values["size_bytes"] < s.values["size_bytes"] for s, r in pairs)
        dominates = sum(r.values["accuracy"] >= s.values["accuracy"]
                        and r.values["size_bytes"] < s.values["size_bytes"] for s, r in pairs)
        mean = f"{d_acc.mean():+.2f}" if len(d_acc) else "-"
        print(f"| {name} | {len(pairs)}/{len(front)} | {mean} | {(d_acc > 1e-9).sum()} / "
              f"{(np.abs(d_acc) <= 1e-9).sum()} / {(d_acc < -1e-9).sum()} | {smaller} | "
              f"{dominates} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
