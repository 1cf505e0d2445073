"""Headroom for refinement on Fashion-MNIST (issue 14, point 1): test accuracy of sub-networks
as they are inside the trained supernet (extracted, BatchNorm recalibrated) vs the same
architectures fine-tuned alone for a fixed number of steps (labels + distillation from the
supernet's largest sub-network, AdamW, cosine schedule), selected on val, reported on test.

A task where fine-tuning cannot gain anything (digits: 98-100 %) cannot show that refinement
pays; this measures how much a standalone fine-tune recovers on this one.

    OMP_NUM_THREADS=1 python scripts/bench_headroom.py                 # ~25 min on 2 cores
    OMP_NUM_THREADS=1 python scripts/bench_headroom.py --quick         # a few minutes
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

QUICK = {"steps": 200, "finetune_steps": 60, "subnets": 3}


def trained_supernet(args):
    from hybridmoo.data import make_data
    from hybridmoo.supernet import load_supernet, train_supernet

    run_dir = args.out / f"supernet_{args.data}_{args.model}_{args.steps}"
    if (run_dir / "supernet.json").is_file():
        return load_supernet(run_dir), make_data(args.data, args.image_size), 0.0
    start = time.monotonic()
    trained = train_supernet({"model": args.model, "image_size": args.image_size,
                              "steps": args.steps, "data": args.data, "seed": args.seed,
                              "run_dir": str(run_dir), "save_every": args.steps},
                             progress=False)
    return trained.supernet, trained.data, time.monotonic() - start


def finetune(net: torch.nn.Module, teacher: torch.nn.Module, data, steps: int, seed: int,
             lr: float) -> torch.nn.Module:
    """``net`` trained alone for ``steps`` steps; the checkpoint with the best val accuracy
    (checked 4 times) is returned."""
    from hybridmoo.data import epoch_batches
    from hybridmoo.supernet.training import accuracy

    net = copy.deepcopy(net)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    val = torch.utils.data.TensorDataset(*(t[:2000] for t in data.val.tensors))
    best, best_acc = copy.deepcopy(net.state_dict()), accuracy(net.eval(), val)
    step, epoch = 0, 0
    while step < steps:
        for x, y in epoch_batches(data.train, 64, seed, epoch):
            net.train()
            out = net(x)
            with torch.no_grad():
                soft = teacher(x).softmax(-1)
            loss = 0.5 * F.cross_entropy(out, y) + 0.5 * F.cross_entropy(out, soft)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % max(steps // 4, 1) == 0 or step == steps:
                acc = accuracy(net.eval(), val)
                if acc > best_acc:
                    best, best_acc = copy.deepcopy(net.state_dict()), acc
            if step >= steps:
                break
        epoch += 1
    net.load_state_dict(best)
    return net.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"smaller: {QUICK}")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, help="supernet training steps (default 1500)")
    parser.add_argument("--finetune-steps", type=int, help="standalone steps (default 200)")
    parser.add_argument("--subnets", type=int, help="sub-networks besides the largest and "
                        "smallest (default 4)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_out/headroom"))
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else {"steps": 1500, "finetune_steps": 200,
                                                 "subnets": 4}).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    from hybridmoo.supernet.training import accuracy, calibration_batches, prepare_subnet

    sn, data, train_s = trained_supernet(args)
    print(f"supernet: {args.model} on {args.data}, {args.steps} steps"
          + (f", trained in {train_s:.0f} s" if train_s else " (cached)"), flush=True)
    calib = calibration_batches(data, 64, args.seed, 4)
    fp32 = {n: 32 for n in sn.space.names if n.endswith("_bits")}
    rng = np.random.default_rng(args.seed)
    configs = [("largest", sn.largest()), ("smallest", {**sn.smallest(), **fp32})]
    configs += [(f"sample{i}", {**sn.space.sample_spread(rng), **fp32})
                for i in range(args.subnets)]
    teacher = prepare_subnet(sn, sn.largest(), calib).eval()
    rows = []
    for name, config in configs:
        net = prepare_subnet(sn, config, calib).eval()
        start = time.monotonic()
        tuned = finetune(net, teacher, data, args.finetune_steps, args.seed, args.lr)
        row = {"subnet": name, "params": sum(p.numel() for p in net.parameters()),
               "in_supernet_test": 100 * accuracy(net, data.test),
               "finetuned_test": 100 * accuracy(tuned, data.test),
               "finetune_s": time.monotonic() - start}
        row["gain"] = row["finetuned_test"] - row["in_supernet_test"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| sub-network | params | test acc. in the supernet | fine-tuned alone "
          f"({args.finetune_steps} steps) | gain |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['subnet']} | {r['params']:,} | {r['in_supernet_test']:.2f} % | "
              f"{r['finetuned_test']:.2f} % | {r['gain']:+.2f} |")
    gains = [r["gain"] for r in rows]
    print(f"headroom on {args.data}: mean test-accuracy gain of a standalone fine-tune "
          f"{np.mean(gains):+.2f} points (min {min(gains):+.2f}, max {max(gains):+.2f}) over "
          f"{len(rows)} sub-networks of a {args.steps}-step supernet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
