"""``hybridmoo pick``: the exported front point to deploy under latency / size / accuracy
limits, printed with where its checkpoint is and how to load it. Exit status 1 when no point
meets the limits (one line naming them and the closest points), 2 on bad input."""

from __future__ import annotations

import argparse
import sys

from hybridmoo.cli_output import PROG
from hybridmoo.errors import one_line

NO_POINT_EXIT = 1


def cmd_pick(args: argparse.Namespace) -> int:
    from hybridmoo.pick import NoPointQualifies, describe_point, pick

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
