"""Ray backend throughput: 2 evaluator actors vs 1, Ray's per-evaluation overhead, and (--gpu)
1, 2 and 4 actors sharing one GPU.

    python scripts/bench_ray.py                # CPU part (needs 2 free cores for a fair ratio)
    python scripts/bench_ray.py --gpu          # plus the shared-GPU part

Every evaluation is a fixed single-threaded torch loop, so the work per candidate is the same
on every actor; actors are started and warmed up before the clock runs. The overhead is a
near-empty evaluate sent through a one-actor backend one at a time (submit, wait, collect),
minus the same evaluate called inline.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

from hybridmoo.backends import RayBackend
from hybridmoo.backends.ray_cluster import connect, disconnect
from hybridmoo.objectives import EvaluationTask, Objective, run_evaluation
from hybridmoo.space import Candidate

OBJECTIVES = (Objective("score"), Objective("cost"))


@dataclass(frozen=True)
class TorchLoop:
    """``iters`` steps of a 512-wide tanh MLP on a 64-row batch (one thread, or on ``device``)."""

    iters: int
    device: str = "cpu"

    def __call__(self, config: dict[str, Any]) -> dict[str, float]:
        import torch

        torch.set_num_threads(1)
        g = torch.Generator(device=self.device).manual_seed(int(config["i"]))
        size = 512 if self.device == "cpu" else 4096
        x = torch.randn(64 if self.device == "cpu" else 1024, size, generator=g,
                        device=self.device)
        w = torch.randn(size, size, generator=g, device=self.device) / size**0.5
        for _ in range(self.iters):
            x = torch.tanh(x @ w)
        return {"score": float(x.abs().mean()), "cost": float(self.iters)}


def empty(config: dict[str, Any]) -> dict[str, float]:
    return {"score": 0.0, "cost": 0.0}


def candidates(n: int, offset: int = 0) -> list[Candidate]:
    return [Candidate({"i": offset + i}) for i in range(n)]


def throughput(fn: Any, workers: int, n: int, **options: Any) -> tuple[float, float]:
    """(evaluations per second, mean evaluations running at once) of ``n`` candidates on
    ``workers`` warmed-up actors."""
    with RayBackend(workers, **options) as backend:
        task = EvaluationTask(fn, OBJECTIVES)
        backend.start(task)
        for c in candidates(workers, offset=10_000):  # start and warm every actor
            backend.submit(c)
        for _ in range(workers):
            backend.next_done()
        start = time.perf_counter()
        results = list(backend.map(task, candidates(n)))
        elapsed = time.perf_counter() - start
    assert len(results) == n and all(r.ok for r in results), results
    return n / elapsed, sum(r.elapsed_s for r in results) / elapsed


def overhead_ms(n: int) -> tuple[float, float]:
    """(ms per evaluation through a one-actor backend, ms per evaluation inline)."""
    items = candidates(n)
    start = time.perf_counter()
    for c in items:
        run_evaluation(empty, c, OBJECTIVES)
    inline = (time.perf_counter() - start) / n
    with RayBackend(1) as backend:
        backend.start(EvaluationTask(empty, OBJECTIVES))
        backend.submit(items[0])
        backend.next_done()
        start = time.perf_counter()
        for c in items:
            backend.submit(c)
            backend.next_done()
        through_ray = (time.perf_counter() - start) / n
    return through_ray * 1e3, inline * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=24, help="candidates per throughput run")
    parser.add_argument("--iters", type=int, default=1500, help="loop steps per evaluation")
    parser.add_argument("--overhead-evals", type=int, default=300)
    parser.add_argument("--gpu", action="store_true", help="also 1/2/4 actors on one GPU")
    args = parser.parse_args(argv)

    connection = connect(None, min_cpus=2)
    rows: list[tuple[str, str]] = []
    try:
        (one, busy1), (two, busy2) = (throughput(TorchLoop(args.iters), k, args.evals)
                                      for k in (1, 2))
        rows += [("CPU, 1 actor", f"{one:.2f} evals/s ({busy1:.2f} running at once)"),
                 ("CPU, 2 actors", f"{two:.2f} evals/s ({busy2:.2f} running at once)"),
                 ("speed-up 2 vs 1", f"{two / one:.2f}x")]
        ray_ms, inline_ms = overhead_ms(args.overhead_evals)
        rows += [("empty evaluate through Ray", f"{ray_ms:.2f} ms"),
                 ("empty evaluate inline", f"{inline_ms:.3f} ms"),
                 ("Ray overhead per evaluation", f"{ray_ms - inline_ms:.2f} ms")]
        if args.gpu:
            base = None
            for k in (1, 2, 4):
                rate, _ = throughput(TorchLoop(args.iters, "cuda"), k, args.evals,
                                     num_cpus=0.5, num_gpus=1 / k)
                base = base or rate
                rows.append((f"GPU, {k} actor(s), num_gpus=1/{k}",
                             f"{rate:.2f} evals/s ({rate / base:.2f}x)"))
    finally:
        disconnect(connection)
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
