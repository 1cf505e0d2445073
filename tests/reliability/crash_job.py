"""A deterministic search run as a child process by the crash tests (not a test module).

    python tests/reliability/crash_job.py RUN_DIR ALGORITHM OUT_JSON [--resume]

It searches ``SPACE`` with ``toy_evaluate`` (one evaluation at a time, fixed seed) and writes
the history (without timings) and the front to ``OUT_JSON``. Faults are injected from the
environment; the child kills itself, so the kill point is exact, not a race:

    CRASH_KILL_AFTER=N  SIGKILL when evaluation N+1 starts (the journal holds N lines)
    CRASH_TEAR_AFTER=N  write the first half of journal line N+1, then SIGKILL (a torn write:
                        this wraps ``Journal.append``, the only way to stop a process inside one
                        ``write`` call deterministically)
    CRASH_HOLD_AFTER=N  at evaluation N+1, create RUN_DIR.ready and sleep (holds the lock)
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hybridmoo import search
from hybridmoo.journal import JOURNAL_FILE, Journal
from hybridmoo.testing.proposers import OBJECTIVES, SPACE, toy_evaluate

MAX_EVALS = 40
SEED = 3
OPTIONS = {"surrogate": {"n_init": 6, "inner_pop": 16, "inner_gens": 4, "n_trees": 10},
           "nsga2": {"pop_size": 8}}


def journal_lines(run_dir: Path) -> int:
    path = run_dir / JOURNAL_FILE
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return None if value is None else int(value)


def evaluate(config: dict[str, Any]) -> dict[str, float]:
    run_dir = Path(os.environ["CRASH_RUN_DIR"])
    done = journal_lines(run_dir)
    if _env_int("CRASH_KILL_AFTER") == done:
        os.kill(os.getpid(), signal.SIGKILL)
    if _env_int("CRASH_HOLD_AFTER") == done:
        Path(f"{run_dir}.ready").touch()
        time.sleep(120)
    if config["op"] == "skip" and config["width"] == 8:  # failures are journaled and replayed
        raise RuntimeError("skip x 8 is broken")
    if config["op"] == "conv1" and config["depth"] == 1:
        return {"error": math.nan, "cost": 1.0}
    return toy_evaluate(config)


def _tear_journal(after: int) -> None:
    append = Journal.append

    def torn_append(self: Journal, result: Any) -> None:
        if journal_lines(self.run_dir) == after:
            line = json.dumps(result.to_json(), separators=(",", ":")).encode() + b"\n"
            with open(self.path, "ab") as f:
                f.write(line[: len(line) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        append(self, result)

    Journal.append = torn_append  # type: ignore[method-assign]


def record(result: Any) -> dict[str, Any]:
    """Everything of a result except its wall-clock time."""
    data = result.to_json()
    data.pop("elapsed_s")
    return data


def main(argv: list[str]) -> int:
    run_dir, algorithm, out = Path(argv[0]), argv[1], Path(argv[2])
    os.environ["CRASH_RUN_DIR"] = str(run_dir)
    tear = _env_int("CRASH_TEAR_AFTER")
    if tear is not None:
        _tear_journal(tear)
    result = search(SPACE, evaluate, OBJECTIVES, algorithm=algorithm,
                    algorithm_options=OPTIONS.get(algorithm), max_evals=MAX_EVALS, seed=SEED,
                    run_dir=run_dir, resume="--resume" in argv, progress=False)
    out.write_text(json.dumps({"history": [record(r) for r in result.history],
                               "front": [r.key for r in result.front],
                               "stop_reason": result.stop_reason,
                               "warnings": result.warnings}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
