"""``hybridmoo pick``: the exported front point to deploy under latency / size / accuracy
limits, printed with where its checkpoint is and how to load it. Exit status 1 when no point
meets the limits (one line naming them and the closest points), 2 on bad input. With
``--from-model``, the network the run's Pareto set model gives for one limit or a preference
(extracted, measured and exported); ``hybridmoo paretoset`` trains that model."""

from __future__ import annotations

import argparse
import sys

from hybridmoo.cli_output import PROG
from hybridmoo.errors import ConfigError, one_line

NO_POINT_EXIT = 1


def cmd_pick(args: argparse.Namespace) -> int:
    from hybridmoo.pick import NoPointQualifies, describe_point, pick

    if args.from_model:
        return _pick_from_model(args)
    if args.preference is not None:
        raise ConfigError("--preference asks a Pareto set model: add --from-model")

    try:
        chosen = pick(args.run_dir, max_latency_ms=args.max_latency_ms,
                      max_size_mb=args.max_size_mb, min_accuracy=args.min_accuracy,
                      out=args.out)
    except NoPointQualifies as exc:
        print(f"{PROG} pick: {one_line(str(exc))}", file=sys.stderr)
        return NO_POINT_EXIT
    m = chosen.metrics
    among = (f"{chosen.qualifying} of {chosen.front_size} front points meet "
             f"{' and '.join(chosen.limits)}" if chosen.limits
             else f"no limits given: the most accurate of {chosen.front_size} front points")
    test = f" (test split: {m['test_accuracy']:.2f}%)" if "test_accuracy" in m else ""
    print(f"picked {chosen.exported.name} (key {chosen.key[:12]}, origin {chosen.origin}); "
          f"{among}")
    print(f"  {describe_point(m)}{test}")
    where = chosen.checkpoint
    if args.out is None:
        print(f"checkpoint: {where}")
    elif chosen.copied:
        print(f"checkpoint: {where} (copied from {chosen.exported})")
    else:
        print(f"checkpoint: {where} (already holds this point; nothing copied)")
    onnx = sorted(p.name for p in where.glob("*.onnx"))
    print(f'load it: hybridmoo.load_subnet("{where}") -> torch nn.Module in eval mode'
          + (f"; ONNX for onnxruntime: {', '.join(onnx)}" if onnx else ""))
    return 0


def _pick_from_model(args: argparse.Namespace) -> int:
    from hybridmoo.paretoset.run import pick_from_model
    from hybridmoo.pick import NoPointQualifies, describe_point

    asks = [a for a in (args.preference, args.max_latency_ms, args.max_size_mb)
            if a is not None]
    if len(asks) != 1 or args.min_accuracy is not None:
        raise ConfigError("--from-model takes one of --max-latency-ms, --max-size-mb or "
                          "--preference (a Pareto set model meets one limit at a time)")
    try:
        chosen = pick_from_model(args.run_dir, preference=args.preference,
                                 max_latency_ms=args.max_latency_ms,
                                 max_size_mb=args.max_size_mb, out=args.out)
    except NoPointQualifies as exc:
        print(f"{PROG} pick: {one_line(str(exc))}", file=sys.stderr)
        return NO_POINT_EXIT
    predicted = chosen.predicted
    print(f"the Pareto set model's network for {chosen.asked}: predicted "
          f"{predicted['latency_ms']:.3f} ms, {predicted['size_bytes'] / 1e6:.3f} MB")
    print(f"  measured: {describe_point(chosen.measured)}")
    print(f"checkpoint: {chosen.checkpoint}")
    print(f'load it: hybridmoo.load_subnet("{chosen.checkpoint}") -> torch nn.Module in eval '
          f"mode")
    return 0


def cmd_paretoset(args: argparse.Namespace) -> int:
    from hybridmoo.paretoset import ParetoSetSettings
    from hybridmoo.paretoset.run import train_for_run

    options = {k: v for k, v in (("steps", args.steps), ("solver", args.solver),
                                 ("seed", args.seed)) if v is not None}
    ps = train_for_run(args.run_dir, ParetoSetSettings.from_dict(options), resume=args.resume)
    tau = ps.info.get("task_model_tau")
    print(f"trained a Pareto set model: {ps.info['step']} steps in {ps.info['seconds']:.0f}s"
          + (f", task-loss predictor Kendall tau {tau:.2f} on held-out sub-networks"
             if tau is not None else ""))
    print(f"ask it: hybridmoo pick {args.run_dir} --from-model --max-latency-ms MS")
    return 0

