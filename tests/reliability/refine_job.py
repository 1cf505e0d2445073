"""A search with refinement as work on Ray actors, run as a child process by the crash tests
(not a test module)::

    python tests/reliability/refine_job.py RUN_DIR OUT_JSON [--kill] [--resume]

Two actors on a private local cluster (127.0.0.1); refinement rounds of the toy worker
(:class:`hybridmoo.testing.refine.ToyRefineWorker`) after every 8 evaluations. Each refined
network is kept as ``RUN_DIR/refined/<key>.json`` (atomically) before its record is
journaled. With ``--kill``, the first refinement job to start SIGKILLs this process (the
driver). Writes the history and the kept networks to ``OUT_JSON``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hybridmoo import search
from hybridmoo.backends import RayBackend
from hybridmoo.files import write_atomic
from hybridmoo.search import RefineSchedule
from hybridmoo.testing.proposers import OBJECTIVES, SPACE
from hybridmoo.testing.refine import ToyRefineWorker, timed_evaluate

MAX_EVALS = 20


class Keep:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "refined"

    def __call__(self, result: Any, network: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / f"{result.key}.json", json.dumps(network))


def main(argv: list[str]) -> int:
    run_dir, out = Path(argv[0]), Path(argv[1])
    worker = ToyRefineWorker(delay=0.3, kill_pid=os.getpid() if "--kill" in argv else None)
    schedule = RefineSchedule(worker=worker, keep=Keep(run_dir), every=8, survivors=2)
    result = search(SPACE, timed_evaluate, OBJECTIVES, algorithm="random",
                    max_evals=MAX_EVALS, seed=2, backend=RayBackend(2), refine=schedule,
                    run_dir=run_dir, resume="--resume" in argv, progress=False)
    networks = {p.stem: json.loads(p.read_text()) for p in (run_dir / "refined").glob("*.json")}
    out.write_text(json.dumps({"history": [r.to_json() for r in result.history],
                               "networks": networks}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
