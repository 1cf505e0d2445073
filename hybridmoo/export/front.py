"""A whole Pareto front exported at once: one directory per point plus an index::

    OUT/front.json   objectives, and per point: rank, key, origin, parents, config,
                     metrics with units, the point's directory and its manifest's SHA-256
    OUT/front.csv    the same as a table (one row per point)
    OUT/history.csv  every evaluation of the run, failed ones too, in evaluation order
                     (hybridmoo.export.history), when export_front is given the history
    OUT/00_1a2b3c4d/ export_point's directory (rank, then the first 8 hex digits of the key)

Everything is written into a temporary directory beside ``OUT`` that replaces ``OUT`` only when
complete, so an interrupted export never leaves a half-written front behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridmoo.baseline import Baseline, compare, describe
from hybridmoo.errors import ConfigError
from hybridmoo.evaluate.measure import device_name
from hybridmoo.export.files import MANIFEST
from hybridmoo.export.history import history_csv
from hybridmoo.export.point import export_point
from hybridmoo.files import sha256_file, write_atomic
from hybridmoo.objectives import TEST_PREFIX, EvalResult, Objective, ranked

INDEX_JSON = "front.json"
INDEX_CSV = "front.csv"
HISTORY_CSV = "history.csv"
_HEX = re.compile(r"^[0-9a-f]{8,}$")


@dataclass
class FrontPoint:
    """A front record to export with its network. ``device`` names where its metrics were
    measured (default: this machine's CPU); ``lineage`` and ``extra`` add to the manifest.
    ``test`` holds objective values measured again on the test split (the record's own were
    measured on the validation split the search selected on): both are exported, labelled
    by their ``split``, the test ones as ``test_<name>``."""

    net: nn.Module
    result: EvalResult
    device: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)


def export_front(points: Sequence[FrontPoint], out_dir: str | os.PathLike[str], *,
                 objectives: Sequence[Objective], example: torch.Tensor,
                 calibration: Sequence[torch.Tensor] | None = None,
                 history: Sequence[EvalResult] | None = None,
                 baseline: Baseline | None = None,
                 hypervolume: tuple[float, str] | None = None) -> Path:
    """Export every point to ``out_dir`` (replacing an earlier export there) and write the
    front.json / front.csv index, and history.csv of ``history`` (every evaluation of the
    run) when given; returns front.json's path. Points are ranked by the first objective,
    best first. With ``baseline`` (:mod:`hybridmoo.baseline`) front.json holds it and every
    point's comparison with it (``vs_baseline``); ``hypervolume``: the front's value and what
    its reference is."""
    out_dir = Path(out_dir)
    objectives = tuple(objectives)
    for p in points:
        if not isinstance(p, FrontPoint) or not p.result.ok:
            raise ConfigError("export_front takes FrontPoints of successful evaluations")
        missing = [o.name for o in objectives if o.name not in p.result.values]
        if missing:
            raise ConfigError(f"front record {p.result.key[:8]} has no value for {missing}")
    order = {id(r): i for i, r in enumerate(ranked([p.result for p in points], objectives))}
    ranked_points = sorted(points, key=lambda p: order[id(p.result)])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        rows = [_export_one(rank, p, tmp, objectives, example, calibration)
                for rank, p in enumerate(ranked_points)]
        if baseline is not None:
            for row, p in zip(rows, ranked_points, strict=True):
                versus = compare(p.result.values, baseline.values, objectives)
                row["vs_baseline"] = {"values": versus,
                                      "text": describe(versus, objectives)}
        index = {"format": 1, "objectives": [vars(o) for o in objectives], "points": rows}
        if baseline is not None:
            index["baseline"] = baseline.to_json()
        if hypervolume is not None:
            index["hypervolume"] = {"value": hypervolume[0], "reference": hypervolume[1]}
        write_atomic(tmp / INDEX_JSON, (json.dumps(index, indent=1) + "\n").encode())
        write_atomic(tmp / INDEX_CSV, _csv(rows, objectives).encode())
        if history is not None:
            write_atomic(tmp / HISTORY_CSV, history_csv(history, objectives).encode())
        _swap(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / INDEX_JSON


def read_front(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A front.json index (or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such front index") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise ConfigError(f"{path}: not a front index (no 'points' list)")
    return data


def point_dir_name(rank: int, key: str) -> str:
    """``00_1a2b3c4d``: the rank and the key's first 8 hex digits (never free text)."""
    return f"{rank:02d}_{key[:8]}" if _HEX.match(key) else f"{rank:02d}_point"


def _export_one(rank: int, p: FrontPoint, root: Path, objectives: Sequence[Objective],
                example: torch.Tensor, calibration: Sequence[torch.Tensor] | None
                ) -> dict[str, Any]:
    r = p.result
    name = point_dir_name(rank, r.key)
    metrics = point_metrics(p, objectives)
    lineage = {"key": r.key, "origin": r.candidate.origin,
               "parents": list(r.candidate.parents), **p.lineage}
    export_point(p.net, root / name, config=r.config, metrics=metrics, lineage=lineage,
                 example=example, calibration=calibration,
                 device_name=p.device or device_name("cpu"),
                 extra={**p.extra, **({"evaluation_info": r.info} if r.info else {})})
    return {"rank": rank, "key": r.key, "origin": r.candidate.origin,
            "parents": list(r.candidate.parents), "config": r.config, "metrics": metrics,
            "path": name, "manifest_sha256": sha256_file(root / name / MANIFEST)}


def point_metrics(p: FrontPoint, objectives: Sequence[Objective]) -> dict[str, dict[str, Any]]:
    """The manifest's metrics of ``p``: each objective's value, unit and direction, and for
    those in ``p.test`` the split each value was measured on plus ``test_<name>``."""
    out: dict[str, dict[str, Any]] = {}
    for o in objectives:
        out[o.name] = {"value": p.result.values[o.name], "unit": o.unit, "direction": o.direction}
        if o.name in p.test:
            out[o.name]["split"] = "val"
    for o in objectives:
        if o.name in p.test:
            out[f"{TEST_PREFIX}{o.name}"] = {"value": float(p.test[o.name]), "unit": o.unit,
                                             "direction": o.direction, "split": "test"}
    return out


def _csv(rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> str:
    names = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    units = {o.name: o.unit for o in objectives}
    units.update({f"{TEST_PREFIX}{o.name}": o.unit for o in objectives})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "key", "origin", "path",
                     *(f"{n} [{units[n]}]" if units.get(n) else n for n in names)])
    for row in rows:
        writer.writerow([row["rank"], row["key"], row["origin"], row["path"],
                         *(row["metrics"].get(n, {}).get("value", "") for n in names)])
    return buf.getvalue()


def _remove_leftovers(out_dir: Path) -> None:
    """Remove the temporary directories of earlier exports to ``out_dir`` whose process is
    gone (killed mid-export) or is this one."""
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}\.(tmp|old)-([0-9]+)$")
    for path in out_dir.parent.iterdir():
        match = pattern.match(path.name)
        if match and not _alive(int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover: ours to replace
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap(new: Path, target: Path) -> None:
    """Put the directory ``new`` at ``target``, an earlier ``target`` going only after."""
    old = None
    if target.exists():
        if not target.is_dir():
            raise ConfigError(f"{target} exists and is not a directory")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
