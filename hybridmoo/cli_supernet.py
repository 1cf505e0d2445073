"""The supernet commands of the command line: ``demo``, a pipeline ``search``,
``train-supernet``, ``profile``, ``export`` and ``report``. Heavy libraries are imported inside
each command, so ``hybridmoo --help`` stays fast."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from hybridmoo.cli_output import (
    fresh_dir,
    make_console,
    pipeline_summary,
    set_resume_hint,
)
from hybridmoo.errors import ConfigError

DEMO_OUT = "runs/demo"


def cmd_demo(args: argparse.Namespace) -> int:
    from hybridmoo.demo import demo_config
    from hybridmoo.pipeline import run_pipeline

    run_dir = fresh_dir(Path(args.out))
    cfg = demo_config(run_dir, max_evals=args.max_evals, seed=args.seed,
                      algorithm=args.algorithm, steps=args.steps)
    console = make_console()
    if not args.quiet:
        console.print(f"demo: a {cfg.train.model} supernet on the built-in digits data, "
                      f"{cfg.train.steps} training steps, then a search of {cfg.max_evals} "
                      f"sub-networks with gradient refinement rounds; run directory {run_dir}")
    args.resume_hint = None  # the demo has no --resume: a new run starts each time
    start = time.monotonic()
    result = run_pipeline(cfg, progress=False if args.quiet else None)
    pipeline_summary(console, result, args.quiet, time.monotonic() - start)
    return 0


def run_pipeline_config(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from hybridmoo.pipeline import run_pipeline
    from hybridmoo.pipeline_config import load_pipeline_config
    from hybridmoo.rundir import PIPELINE_FILE

    cfg = load_pipeline_config(args.config, overrides)
    set_resume_hint(args, cfg.run_dir, "search", PIPELINE_FILE)
    console = make_console()
    if not args.quiet:
        console.print(f"supernet pipeline: {cfg.train.model} on {cfg.train.data}, then "
                      f"max_evals={cfg.max_evals}, seed={cfg.seed}"
                      + (" (resuming)" if args.resume else ""))
    start = time.monotonic()
    result = run_pipeline(cfg, resume=args.resume, overwrite=args.overwrite,
                          progress=False if args.quiet else None)
    pipeline_summary(console, result, args.quiet, time.monotonic() - start)
    return 0


def cmd_train_supernet(args: argparse.Namespace) -> int:
    from hybridmoo.supernet.checkpoint import META_FILE
    from hybridmoo.supernet.train_config import load_train_config
    from hybridmoo.supernet.training import train_supernet

    config = load_train_config(args.config, {"steps": args.steps, "run_dir": args.run_dir})
    set_resume_hint(args, config.run_dir, "train-supernet", META_FILE)
    distributed = distributed_training(args)
    console = make_console()
    if not args.quiet:
        console.print(f"training a supernet of {config.model} on {config.data}: "
                      f"{config.steps} steps, batch {config.batch_size}, seed {config.seed}"
                      + (f", {args.workers or 1} Ray Train worker(s)" if distributed else "")
                      + (" (resuming)" if args.resume else ""))
    progress = False if args.quiet else None
    if distributed:
        from hybridmoo.supernet.distributed import train_supernet_distributed

        result = train_supernet_distributed(config, workers=args.workers or 1, use_gpu=args.gpu,
                                            address=args.ray_address, resume=args.resume,
                                            progress=progress)
    else:
        result = train_supernet(config, resume=args.resume, progress=progress)
    sn = result.supernet
    console.print(f"space: {len(sn.space)} dims, {sn.space.size:,} sub-networks "
                  f"({sn.spec.family} spec)")
    console.print(f"trained: {result.step} steps in {result.seconds:.1f} s, last loss "
                  f"{result.losses[-1]:.4f}" if result.losses else "trained: 0 steps")
    for name, value in result.metrics.items():
        console.print(f"{name.replace('_', ' ')}: {value:.4f}")
    if result.run_dir is not None:
        console.print(f"checkpoint: {result.run_dir}")
    return 0


def distributed_training(args: argparse.Namespace) -> bool:
    """train-supernet on Ray Train workers: asked for by --backend ray, more than one
    worker, --ray-address or --gpu (which --backend local refuses); MissingExtraError when
    asked for without Ray installed."""
    wants = [flag for flag, given in (("--backend ray", args.backend == "ray"),
                                      ("--workers > 1", (args.workers or 1) > 1),
                                      ("--ray-address", args.ray_address is not None),
                                      ("--gpu", args.gpu)) if given]
    if args.backend == "local" and wants:
        raise ConfigError(f"{', '.join(wants)} needs --backend ray (Ray Train workers), not "
                          "--backend local")
    if wants:
        from hybridmoo.backends.ray_cluster import require_ray

        require_ray(f"train-supernet {', '.join(wants)}")
    return bool(wants)


def cmd_profile(args: argparse.Namespace) -> int:
    from hybridmoo.data import make_data
    from hybridmoo.evaluate import profile, resolve_device
    from hybridmoo.supernet import load_supernet, load_train_config, make_supernet

    resolve_device(args.device)  # before any slow work
    if args.config is not None:
        cfg = load_train_config(args.config)
        data = make_data(cfg.data, cfg.image_size)
        sn = make_supernet(cfg.model, cfg.num_classes or data.num_classes, spec=cfg.spec,
                           image_size=cfg.image_size, checkpoint=cfg.checkpoint)
        home = Path(cfg.run_dir) if cfg.run_dir else Path(".")
    else:
        sn, data, home = load_supernet(args.supernet), None, Path(args.supernet)
    out = Path(args.out) if args.out else home / "latency_model.json"
    console = make_console()
    if not args.quiet:
        console.print(f"profiling {sn.spec.family} supernet on {args.device}: {args.samples} "
                      f"fit + {args.test_samples} held-out sub-networks, batch {args.batch_size}")
    result = profile(sn, device=args.device, samples=args.samples,
                     test_samples=args.test_samples, batch_size=args.batch_size,
                     seed=args.seed, runtime=args.runtime, data=data,
                     sampling=args.sampling, progress=False if args.quiet else None)
    result.model.save(out)
    console.print(f"device: {result.model.device}")
    console.print(f"latency noise: median CV {result.cv_median:.3f}, max CV {result.cv_max:.3f} "
                  f"over repeats")
    console.print(f"Kendall tau (predicted vs measured, {len(result.test)} held-out "
                  f"sub-networks): {result.kendall_tau:.3f}")
    console.print(f"latency model: {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hybridmoo.export import export_run, read_front

    index = export_run(args.run_dir)
    points = read_front(index)["points"]
    make_console().print(f"exported {len(points)} Pareto points: {index}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hybridmoo.report import report_run

    path = report_run(args.run_dir, args.out)
    make_console().print(f"report: {path}")
    return 0
