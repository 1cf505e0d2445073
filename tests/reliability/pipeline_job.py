"""A supernet pipeline run through the CLI as a child process by the pipeline fault tests (not
a test module).

    python tests/reliability/pipeline_job.py CONFIG.yaml [--resume]

runs ``hybridmoo search --config CONFIG.yaml --quiet [--resume]`` and exits with its exit
code. A fault from the environment stops it at an exact point, so the kill point is not a race:

    PIPE_KILL=POINT:N       SIGKILL at the N-th time the run reaches POINT
    PIPE_INTERRUPT=POINT:N  SIGINT (Ctrl-C) there instead

POINT is one of:

    train-step      the start of a supernet training step
    train-saved     right after a training checkpoint was written
    journal         right before a journal line is written
    refine-round    right after a refinement round refined its survivors (nothing saved yet)
    export-point    right after an exported point's directory was written
    report          when the report starts writing

Each point wraps one of hybridmoo's own functions (the only way to stop a process at an exact
line from outside); the signal itself is real.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def _fault() -> tuple[str, int, int] | None:
    for name, sig in (("PIPE_KILL", signal.SIGKILL), ("PIPE_INTERRUPT", signal.SIGINT)):
        if os.environ.get(name):
            point, n = os.environ[name].rsplit(":", 1)
            return point, int(n), sig
    return None


def _stopping(fn: Callable[..., Any], at: int, sig: int, after: bool) -> Callable[..., Any]:
    count = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if not after and count[0] == at:
            os.kill(os.getpid(), sig)
        out = fn(*args, **kwargs)
        if after and count[0] == at:
            os.kill(os.getpid(), sig)
        return out

    return wrapped


def _inject() -> None:
    fault = _fault()
    if fault is None:
        return
    point, n, sig = fault
    import hybridmoo.export.front as front
    import hybridmoo.journal as journal
    import hybridmoo.refine as refine
    import hybridmoo.report as report
    import hybridmoo.supernet.training as training

    targets = {  # point: (owner, attribute, stop after the call rather than before)
        "train-step": (training, "sandwich_step", False),
        "train-saved": (training, "_save", True),
        "journal": (journal.Journal, "append", False),
        "refine-round": (refine.Refiner, "refine", True),
        "export-point": (front, "export_point", True),
        "report": (report, "write_report", False),
    }
    owner, name, after = targets[point]
    setattr(owner, name, _stopping(getattr(owner, name), n, sig, after))


def main(argv: list[str]) -> int:
    import torch

    from hybridmoo.cli import main as cli

    torch.set_num_threads(1)
    _inject()
    return cli(["search", "--config", argv[0], "--quiet", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
