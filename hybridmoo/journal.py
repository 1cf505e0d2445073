"""The run directory's journal: one JSON line per evaluation, fsynced, replayed on resume.

Layout of a run directory::

    run.json        what the run was started with (space, objectives, algorithm, seed, ...)
    journal.jsonl   one EvalResult per line, in evaluation order
    round.json      the last refinement round started (its survivors and preferences), so a
                    round a crash cut short is finished on resume with the same survivors
    .lock           held while a process works on the directory
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from hybridmoo.errors import RunDirError
from hybridmoo.files import write_atomic
from hybridmoo.objectives import EvalResult

RUN_FILE = "run.json"
JOURNAL_FILE = "journal.jsonl"
ROUND_FILE = "round.json"
LOCK_FILE = ".lock"


class Journal:
    """Append-only record of a run. Use as a context manager: it holds the directory's lock."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / JOURNAL_FILE
        self._lock: FileLock | None = None
        self._file: Any = None
        self._discarded = False
        self._created: list[Path] = []  # directories this journal made, deepest first
        self.warnings: list[str] = []

    def __enter__(self) -> Journal:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"run directory {self.run_dir} is not a directory (a file is "
                              "in the way)")
        self._created = [d for d in (self.run_dir, *self.run_dir.parents) if not d.exists()]
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {self.run_dir}: "
                              f"{exc.strerror or exc}") from None
        self._lock = FileLock(str(self.run_dir / LOCK_FILE))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunDirError(
                f"run directory {self.run_dir} is in use by another hybridmoo process"
            ) from None
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.release()
        if self._discarded or (exc_type is not None and not self.exists()):
            # nothing of a run is left (a setup error, a refused resume): leave no trace
            (self.run_dir / LOCK_FILE).unlink(missing_ok=True)
            for d in [self.run_dir, *self._created] if self._discarded else self._created:
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()

    def exists(self) -> bool:
        return (self.run_dir / RUN_FILE).exists() or self.path.exists()

    def start(self, settings: Mapping[str, Any], resume: bool) -> list[EvalResult]:
        """Begin a new run or reopen an old one; returns the results already recorded."""
        if not resume:
            if self.exists():
                raise RunDirError(
                    f"run directory {self.run_dir} already holds a run; resume it "
                    "(resume=True, CLI --resume) or choose another directory"
                )
            write_atomic(self.run_dir / RUN_FILE, json.dumps(settings, indent=2))
            return []
        if not (self.run_dir / RUN_FILE).exists():
            raise RunDirError(f"cannot resume: {self.run_dir} holds no run ({RUN_FILE} missing)")
        old = json.loads((self.run_dir / RUN_FILE).read_text())
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k)
                         and k not in RESUMABLE_CHANGES)
        if changed:
            raise RunDirError(
                f"cannot resume {self.run_dir}: the run was started with different {changed}"
            )
        write_atomic(self.run_dir / RUN_FILE, json.dumps(settings, indent=2))
        return self.read()

    def read(self) -> list[EvalResult]:
        """Every recorded result; a truncated last line (a crash mid-write) is dropped, reported."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        results: list[EvalResult] = []
        good_bytes = 0
        for i, line in enumerate(lines):
            if not line.strip():
                good_bytes += len(line) + 1
                continue
            try:
                results.append(EvalResult.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                if i == len(lines) - 1:  # last line without newline: cut short by a crash
                    message = (f"{self.path}: dropped a truncated last line "
                               f"({len(line)} bytes) left by an interrupted run")
                    self.warnings.append(message)
                    warnings.warn(message, stacklevel=2)
                    with open(self.path, "r+b") as f:
                        f.truncate(good_bytes)
                    break
                raise RunDirError(f"{self.path} line {i + 1} is corrupt: {exc}") from None
            good_bytes += len(line) + 1
        return results

    def discard(self) -> None:
        """Remove what this run wrote (used when a new run stops on a setup error)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for name in (JOURNAL_FILE, RUN_FILE, ROUND_FILE):
            (self.run_dir / name).unlink(missing_ok=True)
        self._discarded = True

    def write_round(self, data: Mapping[str, Any]) -> None:
        """Keep the refinement round that starts now (atomically, durable on return)."""
        write_atomic(self.run_dir / ROUND_FILE, json.dumps(data, separators=(",", ":")))

    def last_round(self) -> dict[str, Any] | None:
        """The last round :meth:`write_round` kept, or None."""
        path = self.run_dir / ROUND_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{path} is corrupt: {exc}") from None
        return data if isinstance(data, dict) else None

    def append(self, result: EvalResult) -> None:
        """Write one result and make it durable before returning."""
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._file.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


# settings that may differ when a run is resumed (a larger budget continues a finished run)
RESUMABLE_CHANGES = frozenset({"max_evals", "backend", "workers"})
