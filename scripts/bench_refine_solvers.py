"""Refine the same survivors with several gradient solvers and compare the refined sets.

A test_resnet supernet is trained briefly on digits (sandwich rule); random sub-networks are
measured (accuracy on val, MACs, size in bytes); the front's points, spread over MACs, are the
survivors. Each solver refines them under the preference of their front position. Reported:
the hypervolume of each refined set (true measured metrics, one normalisation for all rows),
and how well each keeps its preference: the cosine between a survivor's preference and its
normalised improvement over (error, MACs, size), and EPO's non-uniformity of its final
normalised losses (0 = exactly on the preference ray).

    OMP_NUM_THREADS=1 python scripts/bench_refine_solvers.py --solvers linear mgda pcgrad epo
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hybridmoo.archive import hypervolume, non_dominated_mask
from hybridmoo.data import digits, epoch_batches
from hybridmoo.evaluate.measure import count_macs, size_bytes
from hybridmoo.gradmoo.epo import non_uniformity
from hybridmoo.objectives import EvalResult, Objective, minimization_matrix
from hybridmoo.refine import Refiner, RefineSettings
from hybridmoo.space import Candidate
from hybridmoo.supernet import make_supernet
from hybridmoo.supernet.training import (
    accuracy,
    calibration_batches,
    prepare_subnet,
    sandwich_step,
)

OBJECTIVES = (Objective("accuracy", "max", "%"), Objective("macs", "min"),
              Objective("size_bytes", "min", "B"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--solvers", nargs="+", default=["linear", "mgda", "pcgrad", "epo"])
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--survivors", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=RefineSettings.lr)
    parser.add_argument("--divisor", type=int, default=RefineSettings.divisor)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = digits(32)
    start = time.perf_counter()
    sn = train(data, args.train_steps, args.seed)
    calib = calibration_batches(data, 64, args.seed, 4)
    sn.calibrate(calib)
    measure = make_measure(data)
    rng = np.random.default_rng(args.seed)
    configs = [sn.largest(), *(sn.space.sample(rng) for _ in range(args.candidates))]
    measured = [EvalResult(Candidate(c), pick(measure(prepare_subnet(sn, c, calib))))
                for c in configs]
    survivors = spread_front(measured, args.survivors)
    print(f"trained + measured {len(measured)} candidates in {time.perf_counter() - start:.0f}s;"
          f" {len(survivors)} survivors")
    for s in survivors:
        print("  survivor", {k: round(v, 1) for k, v in s.values.items()})
    rows = {}
    for solver in args.solvers:
        t = time.perf_counter()
        settings = RefineSettings(steps=args.steps, solver=solver, lr=args.lr,
                                  divisor=args.divisor, seed=args.seed)
        refined = Refiner(sn, data, settings, measure=lambda n: pick(measure(n))).refine(
            survivors, OBJECTIVES)
        rows[solver] = ([r for r, _ in refined], time.perf_counter() - t)
    report(survivors, rows)


def train(data, steps: int, seed: int):
    sn = make_supernet("test_resnet", num_classes=10, image_size=32)
    optimizer = torch.optim.Adam(sn.model.parameters(), lr=3e-3)
    smallest = {k: (32 if k.endswith("_bits") else v) for k, v in sn.smallest().items()}
    batches = (b for epoch in range(1000) for b in epoch_batches(data.train, 64, seed, epoch))
    for _, (x, y) in zip(range(steps), batches, strict=False):
        sandwich_step(sn, optimizer, x, y, [smallest], True)
    return sn


def make_measure(data):
    example = data.val.tensors[0][:1]

    def measure(net):
        return {"accuracy": 100.0 * accuracy(net, data.val), "macs": count_macs(net, example),
                "size_bytes": size_bytes(net, example)}
    return measure


def pick(values):
    return {o.name: float(values[o.name]) for o in OBJECTIVES}


def spread_front(results: list[EvalResult], n: int) -> list[EvalResult]:
    F = minimization_matrix(results, OBJECTIVES)
    front = [r for r, keep in zip(results, non_dominated_mask(F), strict=True) if keep]
    front.sort(key=lambda r: r.values["macs"])
    picks = np.unique(np.linspace(0, len(front) - 1, min(n, len(front))).round().astype(int))
    return [front[i] for i in picks]


def report(survivors: list[EvalResult], rows: dict) -> None:
    F0 = minimization_matrix(survivors, OBJECTIVES)
    every = [F0] + [minimization_matrix([r for r in res if r.ok], OBJECTIVES)
                    for res, _ in rows.values()]
    allF = np.vstack([f for f in every if len(f)])
    ideal, nadir = allF.min(axis=0), allF.max(axis=0)
    span = np.where(nadir > ideal, nadir - ideal, 1.0)
    print("\n| set | ok | hypervolume | mean acc % | mean MMACs | mean KB | cos(pref, gain) |"
          " EPO non-uniformity | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| survivors | {len(survivors)} | {hypervolume(F0, ideal, nadir):.4f} | "
          f"{np.mean([s.values['accuracy'] for s in survivors]):.1f} | "
          f"{np.mean([s.values['macs'] for s in survivors]) / 1e6:.2f} | "
          f"{np.mean([s.values['size_bytes'] for s in survivors]) / 1e3:.1f} | - | - | - |")
    for solver, (results, seconds) in rows.items():
        ok = [r for r in results if r.ok]
        F = minimization_matrix(ok, OBJECTIVES)
        cosines, mus = [], []
        for r in ok:
            parent = next(i for i, s in enumerate(survivors) if s.key == r.candidate.parents[0])
            gain = (F0[parent] - minimization_matrix([r], OBJECTIVES)[0]) / span
            pref = np.array(r.info["preference"])
            if np.linalg.norm(gain) > 0:
                cosines.append(float(pref @ gain / (np.linalg.norm(pref) * np.linalg.norm(gain))))
            mus.append(non_uniformity(np.array(r.info["final_losses"]), pref))
        means = {k: np.mean([r.values[k] for r in ok]) if ok else float("nan")
                 for k in ("accuracy", "macs", "size_bytes")}
        print(f"| {solver} | {len(ok)}/{len(results)} | {hypervolume(F, ideal, nadir):.4f} | "
              f"{means['accuracy']:.1f} | {means['macs'] / 1e6:.2f} | "
              f"{means['size_bytes'] / 1e3:.1f} | "
              f"{np.mean(cosines) if cosines else float('nan'):.3f} | "
              f"{np.mean(mus) if mus else float('nan'):.4f} | {seconds:.0f} |")
    for solver, (results, _) in rows.items():
        for r in results:
            if not r.ok:
                print(f"  {solver} failed: {r.reason}")


if __name__ == "__main__":
    main()
