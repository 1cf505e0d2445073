"""What a run directory holds, and how a new, resumed or overwritten run may use it.

A search run directory holds ``run.json`` + ``journal.jsonl`` (:mod:`hybridmoo.journal`); a
supernet pipeline run adds ``pipeline.json``, ``supernet/``, ``refined/``, ``export/`` and
``report/`` (:mod:`hybridmoo.pipeline`). These are the only entries ``--overwrite`` removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from hybridmoo.errors import ConfigError, RunDirError
from hybridmoo.journal import JOURNAL_FILE, LOCK_FILE, ROUND_FILE, RUN_FILE
from hybridmoo.space import REFINED

PIPELINE_FILE = "pipeline.json"
PIPELINE_LOCK_FILE = ".pipeline.lock"  # held by a pipeline for all its stages
SUPERNET_DIR = "supernet"
REFINED_DIR = "refined"
EXPORT_DIR = "export"
REPORT_DIR = "report"
PARETOSET_DIR = "paretoset"  # a Pareto set model trained on the run's supernet
BASELINE_FILE = "baseline.json"  # the starting model, measured (hybridmoo.baseline)
RUN_ENTRIES = (PIPELINE_FILE, RUN_FILE, JOURNAL_FILE, ROUND_FILE, SUPERNET_DIR, REFINED_DIR,
               EXPORT_DIR, REPORT_DIR, BASELINE_FILE, PARETOSET_DIR)
"""Everything hybridmoo writes into a run directory, but its lock files."""
LOCK_FILES = (LOCK_FILE, PIPELINE_LOCK_FILE)

START_OVER = "start over with --overwrite (deletes it)"
_KEY = re.compile(r"^[0-9a-f]{16,128}$")  # record keys are hex digests


def refined_dir(run_dir: str | os.PathLike[str], key: str) -> Path:
    """Where the weights of the refined network with record key ``key`` live; a key that is
    not a hex digest (it must never become a path of its own) is a ConfigError."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ConfigError(f"{run_dir}: refined record key {key!r} is not a hex digest")
    return Path(run_dir) / REFINED_DIR / key


def holds_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a search or pipeline run (finished or not)."""
    return (run_dir / PIPELINE_FILE).is_file() or (run_dir / RUN_FILE).is_file()


def check_pipeline_dir(run_dir: Path, settings: Mapping[str, Any], *, resume: bool,
                       overwrite: bool, resumable: tuple[str, ...]) -> None:
    """RunDirError (one line saying what to do) unless a pipeline with ``settings`` may start
    (``resume`` False), continue (``resume``) or replace what is there (``overwrite``) in
    ``run_dir``. Reads only: nothing is written or removed here."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} is not a directory (a file is in the way)")
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite deletes it: give one")
    path = run_dir / PIPELINE_FILE
    if overwrite:
        check_can_overwrite(run_dir)
        return
    if not path.is_file():
        if resume:
            what = ("a search run, not a supernet pipeline" if (run_dir / RUN_FILE).is_file()
                    else "no pipeline run")
            raise RunDirError(f"cannot resume: {run_dir} holds {what} ({PIPELINE_FILE} "
                              "missing); run it without --resume")
        if (run_dir / RUN_FILE).is_file():
            raise RunDirError(f"run directory {run_dir} already holds a search run; "
                              f"{START_OVER}, or choose another run_dir")
        return
    old = json.loads(path.read_text())
    changed = sorted(k for k in set(old) | set(settings)
                     if old.get(k) != settings.get(k) and k not in resumable)
    if changed:
        verb = "cannot resume" if resume else "cannot start"
        raise RunDirError(f"{verb} {run_dir}: it holds a pipeline run started with different "
                          f"{changed}; {START_OVER}, or choose another run_dir")
    if not resume:
        raise RunDirError(f"run directory {run_dir} already holds a run of this config "
                          f"({pipeline_stage(run_dir, old)}); continue it with --resume, "
                          f"{START_OVER}, or choose another run_dir")


def check_can_overwrite(run_dir: Path) -> None:
    """RunDirError unless ``run_dir`` is missing, empty, or holds a hybridmoo run: --overwrite
    never deletes a folder of other files."""
    if not run_dir.exists() or holds_run(run_dir):
        return
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} is not a directory (a file is in the way)")
    others = sorted(p.name for p in run_dir.iterdir() if p.name not in LOCK_FILES)
    if others:
        raise RunDirError(f"--overwrite: {run_dir} holds no hybridmoo run but other files "
                          f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); "
                          "refusing to delete them")


def clear_run(run_dir: Path) -> None:
    """Remove every entry hybridmoo writes (:data:`RUN_ENTRIES`) from ``run_dir``; other files
    stay. Refused while another process holds the search lock."""
    check_can_overwrite(run_dir)
    if not run_dir.is_dir():
        return
    with hold_lock(run_dir, LOCK_FILE):
        for name in RUN_ENTRIES:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


@contextmanager
def hold_lock(run_dir: Path, name: str) -> Iterator[None]:
    """Hold the OS file lock ``run_dir/name`` (it dies with its process); RunDirError at once
    when another process holds it."""
    lock = FileLock(str(run_dir / name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunDirError(f"run directory {run_dir} is in use by another hybridmoo "
                          "process") from None
    try:
        yield
    finally:
        lock.release()


def pipeline_stage(run_dir: Path, settings: Mapping[str, Any]) -> str:
    """Where the pipeline run in ``run_dir`` stands, in words (for messages)."""
    steps = int(settings.get("train", {}).get("steps", 0))
    step = trained_steps(run_dir)
    if step < steps:
        return f"supernet training at step {step} of {steps}"
    journal = run_dir / JOURNAL_FILE
    lines = journal.read_text(errors="replace").splitlines() if journal.is_file() else []
    evolved = sum(_origin(line) not in (None, REFINED) for line in lines)
    exported = not settings.get("export", True) or (run_dir / EXPORT_DIR / "front.json").is_file()
    reported = not settings.get("report", True) or (run_dir / REPORT_DIR / "report.html").is_file()
    if evolved < int(settings.get("max_evals", 0)) and not exported:
        return f"search with {evolved} of {settings.get('max_evals')} evaluations journaled"
    return "finished" if exported and reported else "exporting the front and the report"

def trained_steps(run_dir: Path) -> int:
    """Training steps in the pipeline's supernet checkpoint (0 when it has none)."""
    from hybridmoo.supernet.checkpoint import META_FILE

    meta_path = run_dir / SUPERNET_DIR / META_FILE
    if not meta_path.is_file():
        return 0
    return int(json.loads(meta_path.read_text()).get("meta", {}).get("step", 0))


def search_started(run_dir: Path) -> bool:
    """True once the search has written its ``run.json``: only then can it be resumed."""
    return (run_dir / RUN_FILE).is_file()


def _origin(line: str) -> str | None:
    """The origin of a journal line's candidate; None for a torn or foreign line."""
    try:
        return json.loads(line)["candidate"]["origin"]
    except (ValueError, KeyError, TypeError):
        return None
