"""Tiny supernet training run as a child process by the crash tests (not a test module).

    python tests/reliability/train_job.py RUN_DIR

Faults from the environment (the child kills itself at an exact point of the checkpointing):

    TRAIN_KILL_AFTER_RENAME=N   SIGKILL right after the N-th ``os.replace`` of the run
    TRAIN_KILL_BEFORE_RENAME=N  SIGKILL right before the N-th ``os.replace`` (temp files written)

A checkpoint is two renames (the tensor file, then the JSON), so odd N after / even N before
cut a checkpoint in half. Wrapping ``os.replace`` is the only way to stop a process between two
system calls deterministically; the kill itself is a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

TINY = {"model": "test_resnet", "image_size": 32, "batch_size": 16, "steps": 4,
        "random_subnets": 1, "calib_batches": 1, "save_every": 1, "warmup_steps": 1}


def _inject() -> None:
    after = os.environ.get("TRAIN_KILL_AFTER_RENAME")
    before = os.environ.get("TRAIN_KILL_BEFORE_RENAME")
    if after is None and before is None:
        return
    replace, count = os.replace, [0]

    def dying_replace(src, dst, **kwargs):  # type: ignore[no-untyped-def]
        count[0] += 1
        if before is not None and count[0] == int(before):
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst, **kwargs)
        if after is not None and count[0] == int(after):
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = dying_replace


def main(argv: list[str]) -> int:
    from hybridmoo.supernet.training import train_supernet

    torch.set_num_threads(1)
    _inject()
    train_supernet({**TINY, "run_dir": argv[0]}, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
