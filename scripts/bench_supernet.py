"""Supernet benchmarks (issues 3 and 17): what sub-networks cost through the supernet, and
supernet training on digits.

1. cost (issue 17): per model, one training step (forward + backward, gradients accumulating
   into allocated buffers, as within a sandwich step) of the largest, a mid and the smallest
   FP32 config run through the supernet (sliced, and masked for reference) vs the same config
   extracted, measured side by side (interleaved rounds, median of per-round ratios); a
   sandwich step (largest + smallest + mid + a random config) vs the sum of its extracted
   sub-networks' steps; and train_supernet's images/s with masking (before) and slicing
   (after) in the same run.
2. digits: a supernet trained with the sandwich rule for --steps steps vs the same model
   trained alone (largest only) for the same steps, both from random init; test accuracy of
   the largest and smallest sub-networks and, over --subnets random FP32 sub-networks, the
   Spearman correlation of accuracy with parameter count (BatchNorm recalibrated each time).

    python scripts/bench_supernet.py --quick
    python scripts/bench_supernet.py --cost-only --models resnet50,vit_small_patch16_224 \
        --image-size 224 --device cuda
    python scripts/bench_supernet.py --digits --model test_resnet --steps 600

Prints markdown rows with the command that made them; the last line of --quick states the
worst supernet / extracted ratio and exits 1 above the target. Never downloads weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import timm
import torch
import torch.nn.functional as F

from hybridmoo.supernet import make_supernet
from hybridmoo.supernet.train_config import TrainConfig
from hybridmoo.supernet.training import (
    evaluate_subnet,
    fp32,
    prepare_training,
    train_supernet,
)

TARGET = 1.15  # supernet step / extracted step, every config and the sandwich
MODELS = ("resnet18", "mobilenetv3_large_100", "vit_tiny_patch16_224")


def step_time(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              y: torch.Tensor) -> float:
    """Seconds of one forward + backward (gradients accumulate)."""
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    F.cross_entropy(fn(x), y).backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def mid_config(sn) -> dict:
    """Every dimension at its middle choice, FP32."""
    out = {}
    for name, dim in sn.space.dims.items():
        values = getattr(dim, "values", None)
        out[name] = values[len(values) // 2] if values else (dim.lo + dim.hi) // 2
    return fp32(out)


def build(model: str, image_size: int, device: str):
    kwargs = {"img_size": image_size} if "vit" in model else {}
    torch.manual_seed(0)
    net = timm.create_model(model, num_classes=10, **kwargs).to(device)
    return make_supernet(net, image_size=image_size).train()


def bench_cost(model: str, image_size: int, batch: int, rounds: int, device: str) -> dict:
    """Per config: supernet (slice, mask) and extracted step ms, median ratios; the sandwich."""
    sn = build(model, image_size, device)
    masked = build(model, image_size, device)
    masked.load_state_dict(sn.state_dict())
    masked.execution = "mask"
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rng = np.random.default_rng(0)
    configs = {"largest": sn.largest(), "mid": mid_config(sn), "smallest": fp32(sn.smallest())}
    sandwich = [configs["largest"], configs["smallest"], configs["mid"],
                fp32(sn.space.sample(rng))]
    nets = {name: sn.extract(c).train() for name, c in configs.items()}
    parts = [sn.extract(c).train() for c in sandwich]
    variants: dict[str, Callable[[], float]] = {}
    for name, config in configs.items():
        variants[f"{name}/slice"] = lambda c=config: step_time(lambda v: sn(v, c), x, y)
        variants[f"{name}/mask"] = lambda c=config: step_time(lambda v: masked(v, c), x, y)
        variants[f"{name}/extracted"] = lambda n=nets[name]: step_time(n, x, y)
    variants["sandwich/slice"] = lambda: sum(step_time(lambda v, c=c: sn(v, c), x, y)
                                             for c in sandwich)
    variants["sandwich/extracted"] = lambda: sum(step_time(n, x, y) for n in parts)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(rounds + 2):  # two warm-up rounds: every gradient buffer exists after them
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for key in order:
            t = variants[key]()
            if i >= 2:
                times[key].append(t)
    out = {"model": model, "rows": []}
    for name in (*configs, "sandwich"):
        ext = times[f"{name}/extracted"]
        row = {"config": name, "slice_ms": 1e3 * statistics.median(times[f"{name}/slice"]),
               "extracted_ms": 1e3 * statistics.median(ext),
               "ratio": statistics.median(
                   a / b for a, b in zip(times[f"{name}/slice"], ext, strict=True))}
        if f"{name}/mask" in times:
            row["mask_ms"] = 1e3 * statistics.median(times[f"{name}/mask"])
            row["mask_ratio"] = statistics.median(
                a / b for a, b in zip(times[f"{name}/mask"], ext, strict=True))
        if name != "sandwich":
            row["plan"] = sn.execution_plan(configs[name]).summary()
        out["rows"].append(row)
    return out


def bench_training(model: str, image_size: int, batch: int, steps: int, rounds: int,
                   device: str) -> dict:
    """train_supernet images/s with masking and with slicing, alternated ``rounds`` times."""
    common = {"model": model, "image_size": image_size, "steps": steps, "batch_size": batch,
              "save_every": 0, "seed": 0, "data": "digits"}
    cfg = TrainConfig(**common)
    rates: dict[str, list[float]] = {"mask": [], "slice": []}
    for i in range(rounds):
        for mode in (("mask", "slice") if i % 2 == 0 else ("slice", "mask")):
            data, sn = prepare_training(cfg)
            sn.execution = mode
            result = train_supernet(cfg, device=device, progress=False, prepared=(data, sn),
                                    stop_at=steps)
            rates[mode].append(steps * batch / result.seconds)
    return {mode: statistics.median(v) for mode, v in rates.items()}


def bench_digits(model: str, steps: int, batch: int, subnets: int, seed: int) -> dict:
    from scipy.stats import spearmanr

    common = {"model": model, "image_size": 32, "steps": steps, "batch_size": batch,
              "save_every": 0, "seed": seed}
    sandwich = train_supernet(common, progress=False)
    alone = train_supernet({**common, "sandwich": False}, progress=False)
    cfg = TrainConfig(**common)
    sn, data = sandwich.supernet, sandwich.data
    out = {"sandwich_s": sandwich.seconds, "alone_s": alone.seconds,
           "largest": evaluate_subnet(sn, sn.largest(), data, cfg, "test"),
           "alone": evaluate_subnet(alone.supernet, alone.supernet.largest(), alone.data, cfg,
                                    "test"),
           "smallest": evaluate_subnet(sn, fp32(sn.smallest()), data, cfg, "test")}
    rng = np.random.default_rng(seed + 1)
    for kind in ("uniform", "spread"):
        sizes, accs = [], []
        for _ in range(subnets):
            draw = sn.space.sample if kind == "uniform" else sn.space.sample_spread
            config = fp32(draw(rng))
            sizes.append(sum(p.numel() for p in sn.extract(config).parameters()))
            accs.append(evaluate_subnet(sn, config, data, cfg, "test"))
        out[f"spearman_{kind}"] = float(spearmanr(sizes, accs).statistic)
        out[f"range_{kind}"] = (min(accs), max(accs))
    return out


def print_cost(results: list[dict], device: str, image_size: int, batch: int) -> float:
    print(f"\n| model | config | supernet sliced ms | extracted ms | ratio | masked ms "
          f"(ratio) | execution plan |  ({device}, {image_size} px, batch {batch})")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for r in results:
        for row in r["rows"]:
            mask = (f"{row['mask_ms']:.1f} ({row['mask_ratio']:.2f})" if "mask_ms" in row
                    else "-")
            print(f"| {r['model']} | {row['config']} | {row['slice_ms']:.1f} | "
                  f"{row['extracted_ms']:.1f} | {row['ratio']:.3f} | {mask} | "
                  f"{row.get('plan', 'sum of 4 sub-network steps')} |")
            worst = max(worst, row["ratio"])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the three models on CPU, few rounds: minutes on 2 cores")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--train-steps", type=int, default=20,
                        help="train_supernet steps per throughput measurement (0: skip)")
    parser.add_argument("--train-image-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cost-only", action="store_true", help="no training throughput")
    parser.add_argument("--digits", action="store_true",
                        help="the supernet-training-on-digits benchmark (issue 3) instead")
    parser.add_argument("--model", default="test_resnet", help="for --digits")
    parser.add_argument("--steps", type=int, default=600, help="for --digits")
    parser.add_argument("--subnets", type=int, default=20, help="for --digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"command: `python {' '.join(sys.argv)}`")
    if args.digits:
        return print_digits(args)
    if args.quick:
        args.rounds, args.train_steps = 11, min(args.train_steps, 8)
    models = [m for m in args.models.split(",") if m]
    results = []
    for model in models:
        results.append(bench_cost(model, args.image_size, args.batch, args.rounds,
                                  args.device))
        print(f"{model}: cost measured", flush=True)
    worst = print_cost(results, args.device, args.image_size, args.batch)
    if args.train_steps and not args.cost_only:
        print(f"\n| model | train_supernet images/s masked (before) | sliced (after) | "
              f"speed-up |  ({args.device}, {args.train_image_size} px, batch {args.batch}, "
              f"{args.train_steps} steps, median of 3)")
        print("|---|---|---|---|")
        for model in models:
            t = bench_training(model, args.train_image_size, args.batch, args.train_steps, 3,
                               args.device)
            print(f"| {model} | {t['mask']:.1f} | {t['slice']:.1f} | "
                  f"{t['slice'] / t['mask']:.2f} |", flush=True)
    verdict = "met" if worst <= TARGET else "MISSED"
    print(f"worst supernet/extracted step ratio {worst:.3f} over {len(models)} models x 3 "
          f"configs and the sandwich (target <= {TARGET}: {verdict})")
    if worst > TARGET:
        sys.exit(1)


def print_digits(args: argparse.Namespace) -> None:
    d = bench_digits(args.model, args.steps, args.batch, args.subnets, args.seed)
    print("\n| model | steps | largest (sandwich) | same model alone | smallest | "
          f"Spearman acc~params, {args.subnets} uniform / spread subnets (acc range) | "
          "train s sandwich / alone |")
    print("|---|---|---|---|---|---|---|")
    ranges = " / ".join(f"{d['spearman_' + k]:.3f} ({d['range_' + k][0]:.3f}-"
                        f"{d['range_' + k][1]:.3f})" for k in ("uniform", "spread"))
    print(f"| {args.model} | {args.steps} | {d['largest']:.4f} | {d['alone']:.4f} | "
          f"{d['smallest']:.4f} | {ranges} | {d['sandwich_s']:.0f} / {d['alone_s']:.0f} |")


if __name__ == "__main__":
    main()
