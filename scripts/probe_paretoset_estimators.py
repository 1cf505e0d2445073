"""Why the Pareto set model's task loss comes from a fitted predictor (issue 19).

On the Fashion-MNIST supernet of scripts/bench_paretoset.py (cached under ``--run-dir``):

1. the straight-through gradient of the task loss through the relaxed supernet, at a random
   sub-network with every block kept: for each one-dimension switch, does its sign agree
   with the sign of the loss change the switch really makes (the secant, 2 x 512 training
   images, the same for both)?
2. a Pareto set model trained with each estimator ("straight-through", "soft", "predictor")
   for ``--steps`` steps: how many distinct configs it gives for 20 evenly spaced
   preferences, and the latency its "task only" and "latency only" configs are predicted to
   have.

    OMP_NUM_THREADS=1 python scripts/probe_paretoset_estimators.py --run-dir bench_out/paretoset
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def sign_agreement(sn, data) -> tuple[int, int]:
    from hybridmoo.data.batches import epoch_batches
    from hybridmoo.paretoset.costs import one_hot
    from hybridmoo.paretoset.relaxed import RelaxedSupernet, frozen
    from hybridmoo.supernet.training import fp32

    relaxed = RelaxedSupernet(sn)
    batches = list(itertools.islice(epoch_batches(data.train, 512, 3, 0), 2))
    sn.train()

    def loss(weights) -> torch.Tensor:
        return sum(F.cross_entropy(relaxed(x, weights), y) for x, y in batches) / len(batches)

    config = fp32(sn.space.sample(np.random.default_rng(5)))
    config.update({k: d.value(d.size - 1) for k, d in sn.space.dims.items()
                   if k.endswith("depth")})
    weights = {k: v.requires_grad_(True) for k, v in one_hot(sn.space, config).items()}
    with frozen(sn.model):
        loss(weights).backward()
        with torch.no_grad():
            base = float(loss(one_hot(sn.space, config)))
            agree = total = 0
            for name, d in sn.space.dims.items():
                if name.endswith("bits"):
                    continue
                here = d.index(config[name])
                for i in range(d.size):
                    if i == here:
                        continue
                    secant = float(loss(one_hot(sn.space, {**config, name: d.value(i)}))) - base
                    tangent = float(weights[name].grad[i] - weights[name].grad[here])
                    total += 1
                    agree += int(np.sign(secant) == np.sign(tangent))
    return agree, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("bench_out/paretoset"))
    parser.add_argument("--supernet-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_paretoset import prepared
    from pymoo.util.ref_dirs import get_reference_directions

    from hybridmoo.paretoset import ParetoSetSettings, train_paretoset
    from hybridmoo.supernet.training import calibration_batches

    args.profile_samples = 24
    sn, data, latency_model = prepared(args)
    sn.calibrate(calibration_batches(data, 64, 0, 8))
    agree, total = sign_agreement(sn, data)
    print(f"straight-through gradient sign = sign of the real switch: {agree} of {total}")
    prefs = get_reference_directions("energy", 3, 20, seed=1)
    for estimator in ("straight-through", "soft", "predictor"):
        settings = ParetoSetSettings(steps=args.steps, estimator=estimator,
                                     preferences=4 if estimator != "predictor" else 16)
        ps = train_paretoset(sn, data, run_dir=args.run_dir / f"probe_{estimator}",
                             settings=settings, latency_model=latency_model, progress=False)
        distinct = len({str(sorted(c.items())) for c in ps.configs_for(prefs)})
        fast, slow = (ps.predicted(ps.config_for(p))["latency_ms"] for p in ([0, 1, 0],
                                                                               [1, 0, 0]))
        print(f"{estimator}: {distinct} distinct configs for 20 preferences; predicted "
              f"latency {slow:.3f} ms (task only) to {fast:.3f} ms (latency only); "
              f"{ps.info['seconds']:.0f}s")


if __name__ == "__main__":
    main()
