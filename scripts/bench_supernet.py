"""Supernet benchmarks (issue 3): the cost of elasticity and supernet training on digits.

1. cost: forward+backward of the supernet's largest configuration vs the plain timm model,
   measured side by side (interleaved repeats, median of per-round ratios) in one process.
2. digits: a supernet trained with the sandwich rule for --steps steps vs the same model
   trained alone (largest only) for the same steps, both from random init; test accuracy of
   the largest and smallest sub-networks and, over --subnets random FP32 sub-networks, the
   Spearman correlation of accuracy with parameter count (BatchNorm recalibrated each time).

    python scripts/bench_supernet.py --model test_resnet --steps 600
    python scripts/bench_supernet.py --cost-only --model resnet50 --image-size 224 --device cuda

Prints markdown rows with the command that made them. Never downloads weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F

from hybridmoo.supernet import make_supernet
from hybridmoo.supernet.train_config import TrainConfig
from hybridmoo.supernet.training import evaluate_subnet, train_supernet


def step_time(fn, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = F.cross_entropy(fn(x), y)
    loss.backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_cost(model: str, image_size: int, batch: int, rounds: int, device: str) -> dict:
    """Median ratio (supernet largest / plain timm) of forward+backward time."""
    kwargs = {"img_size": image_size} if "vit" in model else {}
    plain = timm.create_model(model, num_classes=10, **kwargs).to(device).train()
    sn = make_supernet(timm.create_model(model, num_classes=10, **kwargs).to(device),
                       image_size=image_size).train()
    sn.set_active(sn.largest())
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    for _ in range(3):  # warm-up
        step_time(plain, x, y), step_time(sn, x, y)
    ratios, t_plain, t_sn = [], [], []
    for i in range(rounds):
        order = [(plain, t_plain), (sn, t_sn)][:: 1 if i % 2 == 0 else -1]
        for fn, times in order:
            times.append(step_time(fn, x, y))
        ratios.append(t_sn[-1] / t_plain[-1])
    plain.zero_grad(), sn.zero_grad()
    return {"plain_ms": 1e3 * statistics.median(t_plain), "supernet_ms": 1e3 *
            statistics.median(t_sn), "ratio": statistics.median(ratios),
            "images_per_s_plain": batch / statistics.median(t_plain),
            "images_per_s_supernet": batch / statistics.median(t_sn)}


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


def fp32(config: dict) -> dict:
    return {k: (32 if k.endswith("_bits") else v) for k, v in config.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=32, help="for the cost benchmark")
    parser.add_argument("--rounds", type=int, default=30, help="for the cost benchmark")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cost-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(sys.argv)
    cost = bench_cost(args.model, args.image_size, args.batch, args.rounds, args.device)
    print(f"command: `{command}`\n")
    print("| model | image | batch | device | plain fwd+bwd ms | supernet largest ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {args.image_size} | {args.batch} | {args.device} | "
          f"{cost['plain_ms']:.1f} | {cost['supernet_ms']:.1f} | {cost['ratio']:.3f} |")
    if args.cost_only:
        return
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
