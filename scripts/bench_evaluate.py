"""Benchmark of the evaluator and the latency model (numbers for docs/benchmarks.md).

1. Latency model: ``profile`` a supernet (``--samples`` measured sub-networks for the fit,
   ``--test-samples`` held-out ones): the median / max coefficient of variation of the repeated
   latency runs and Kendall tau of predicted vs measured latency.
2. Evaluator cost: for ``--candidates`` random sub-networks, the evaluator's accuracy pass
   (``eval_s``) and its whole evaluation (accuracy + latency + size + MACs) against a bare loop
   of forward passes of the same extracted network over the same batches, timed alternately;
   BatchNorm recalibration (``bn_recal_s``) is reported on its own. With ``--device cuda``
   the same comparison gives images/s of the evaluator against the bare loop.

    python scripts/bench_evaluate.py --model test_resnet --image-size 32
    python scripts/bench_evaluate.py --device cuda --model resnet18 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from hybridmoo.data import digits, eval_batches
from hybridmoo.evaluate import SubnetEvaluator, profile, resolve_device
from hybridmoo.supernet import make_supernet


def bare_loop(net: torch.nn.Module, dataset, batch_size: int, device: torch.device) -> float:
    """Seconds of forward passes over every batch: the evaluator's floor."""
    start = time.perf_counter()
    with torch.no_grad():
        for x, _ in eval_batches(dataset, batch_size):
            net(x.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def evaluator_cost(ev: SubnetEvaluator, n: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    dataset = getattr(ev.data, ev.split)
    ev.prepare(ev.supernet.largest())  # one-time set-up outside the timings (a warm worker)
    rows = []
    for _ in range(n):
        config = ev.supernet.space.sample(rng)
        net = ev.prepare(config)
        device = next(net.parameters()).device
        bare_loop(net, dataset, ev.eval_batch_size, device)  # warm-up
        bare = bare_loop(net, dataset, ev.eval_batch_size, device)
        start = time.perf_counter()
        out = ev(config)
        total = time.perf_counter() - start
        floor = min(bare, bare_loop(net, dataset, ev.eval_batch_size, device))
        rows.append({"bare_s": floor, "eval_s": out["eval_s"], "bn_recal_s": out["bn_recal_s"],
                     "latency_s": out["latency_s"], "total_s": total,
                     "eval_ratio": out["eval_s"] / floor,
                     "total_minus_bn_ratio": (total - out["bn_recal_s"]) / floor,
                     "kind": out["latency_kind"]})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "kind"}
    med["images"] = len(dataset)
    med["eval_images_per_s"] = len(dataset) / med["eval_s"]
    med["bare_images_per_s"] = len(dataset) / med["bare_s"]
    med["int8_candidates"] = sum(r["kind"] == "onnxruntime-int8" for r in rows)
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="test_resnet")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--test-samples", type=int, default=50)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnxruntime"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampling", default="spread", choices=("spread", "uniform"))
    p.add_argument("--skip-profile", action="store_true")
    p.add_argument("--out", help="also write the numbers as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    data = digits(args.image_size)
    sn = make_supernet(args.model, num_classes=10, image_size=args.image_size)
    report: dict[str, object] = {"model": args.model, "image_size": args.image_size,
                                 "device": str(device)}
    if not args.skip_profile:
        result = profile(sn, device=args.device, samples=args.samples,
                         test_samples=args.test_samples, repeats=args.repeats, data=data,
                         runtime=args.runtime, seed=args.seed, sampling=args.sampling)
        report["profile"] = {**result.model.quality, "seconds": result.seconds,
                             "device_name": result.model.device}
        q = result.model.quality
        print(f"latency model: Kendall tau {q['kendall_tau']:.3f} on {q['test_samples']} "
              f"held-out sub-networks ({args.sampling}), MAPE {q['mape']:.3f}; latency CV median "
              f"{q['cv_median']:.3f}, max {q['cv_max']:.3f} ({args.repeats} repeats); "
              f"{result.seconds:.0f} s on {result.model.device}")
    ev = SubnetEvaluator(sn, data, device=args.device, repeats=args.repeats,
                         runtime=args.runtime, seed=args.seed)
    cost = evaluator_cost(ev, args.candidates, args.seed + 7)
    report["evaluator"] = cost
    print(f"evaluator ({args.candidates} random candidates, {cost['int8_candidates']} INT8, "
          f"{cost['images']} val images), medians: accuracy pass {cost['eval_s'] * 1e3:.1f} ms "
          f"vs bare forward loop {cost['bare_s'] * 1e3:.1f} ms = {cost['eval_ratio']:.2f}x; "
          f"whole evaluation without BN recalibration {cost['total_minus_bn_ratio']:.2f}x "
          f"(latency measurement {cost['latency_s'] * 1e3:.0f} ms); BN recalibration "
          f"{cost['bn_recal_s'] * 1e3:.1f} ms; images/s evaluator "
          f"{cost['eval_images_per_s']:.0f} vs bare {cost['bare_images_per_s']:.0f}")
    if not args.skip_profile:  # the same candidates, latency predicted by the fitted model
        ev = SubnetEvaluator(sn, data, device=args.device, latency=result.model,
                             runtime=args.runtime, seed=args.seed)
        predicted = evaluator_cost(ev, args.candidates, args.seed + 7)
        report["evaluator_predicted_latency"] = predicted
        print(f"evaluator with the latency model: whole evaluation without BN recalibration "
              f"{predicted['total_minus_bn_ratio']:.2f}x the bare forward loop (accuracy pass "
              f"{predicted['eval_ratio']:.2f}x)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
