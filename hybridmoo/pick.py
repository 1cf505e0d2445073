"""Choose one exported Pareto point for deployment limits (``hybridmoo pick``).

:func:`pick` reads the exported front of a pipeline run (``RUN_DIR/export/front.json``, see
:mod:`hybridmoo.export.front`), keeps the points that meet every limit given and returns the
most accurate of them (ties: the faster, then the smaller). The limits compare the values the
search selected on, in the front's units: ``latency_ms`` in milliseconds, ``size_bytes``
against ``max_size_mb`` x 1,000,000 bytes (decimal MB), ``accuracy`` in percent (the val
split). With ``out`` the point's checkpoint directory is copied there;
:func:`hybridmoo.load_subnet` loads it.

``import hybridmoo`` imports this module (so ``hybridmoo.pick`` is the function, never this
module); torch comes with :mod:`hybridmoo.export`, imported by :func:`pick` when it runs.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridmoo.errors import ConfigError
from hybridmoo.files import sha256_file
from hybridmoo.rundir import EXPORT_DIR
from hybridmoo.units import format_ms, format_percent, format_size

ACCURACY, LATENCY, SIZE = "accuracy", "latency_ms", "size_bytes"
MB = 1e6
"""Bytes in the MB of ``max_size_mb`` (decimal, as :mod:`hybridmoo.units` shows sizes)."""


class NoPointQualifies(ConfigError):
    """No front point meets the limits; the message names them and the closest point(s)."""


@dataclass(frozen=True)
class PickedPoint:
    """The front point :func:`pick` chose.

    ``metrics`` are its values by name as front.json records them (``accuracy`` in %,
    ``latency_ms``, ``size_bytes``, ``test_accuracy`` when the export measured it), ``units``
    their units; ``checkpoint`` is the directory to load (``out`` when it was copied there,
    else its directory in the export, ``exported``); ``copied`` is False when there was no
    ``out`` or it already held this checkpoint; ``qualifying`` of ``front_size`` front points
    met every limit (``limits``, in words)."""

    rank: int
    key: str
    origin: str
    config: dict[str, Any]
    metrics: dict[str, float]
    units: dict[str, str]
    checkpoint: Path
    exported: Path
    qualifying: int
    front_size: int
    limits: tuple[str, ...]
    copied: bool = False


@dataclass(frozen=True)
class _Limit:
    metric: str
    bound: float  # in the metric's own unit
    at_most: bool  # value <= bound (else value >= bound)
    text: str  # "latency_ms <= 1 ms"

    def met(self, value: float) -> bool:
        return value <= self.bound if self.at_most else value >= self.bound

    def violation(self, value: float) -> float:
        """How far ``value`` misses the bound, relative to the bound (0 when met)."""
        miss = value - self.bound if self.at_most else self.bound - value
        return max(0.0, miss) / max(abs(self.bound), 1e-12)


def pick(run_dir: str | os.PathLike[str], *, max_latency_ms: float | None = None,
         max_size_mb: float | None = None, min_accuracy: float | None = None,
         out: str | os.PathLike[str] | None = None) -> PickedPoint:
    """The most accurate exported front point of ``run_dir`` (a run directory, or its export
    directory) with ``latency_ms <= max_latency_ms``, ``size_bytes <= max_size_mb * 1e6`` and
    ``accuracy >= min_accuracy`` (percent, 0..100); limits left None are not checked. Its
    checkpoint's digests are checked; with ``out`` (a new or empty directory, or one holding a
    copy of this same point) it is copied there. :class:`NoPointQualifies` when no point
    meets the limits, ConfigError for bad limits or a run without an exported front."""
    from hybridmoo.export.front import INDEX_JSON, read_front

    limits = _limits(max_latency_ms, max_size_mb, min_accuracy)
    export_dir = find_export(run_dir)
    index = read_front(export_dir)
    points = [_point(p, n, export_dir) for n, p in enumerate(index["points"])]
    if not points:
        raise ConfigError(f"{export_dir / INDEX_JSON}: the exported front has no points")
    units = _units(index)
    needed = {ACCURACY} | {limit.metric for limit in limits}
    for name in sorted(needed):
        if any(name not in p["values"] for p in points):
            held = sorted(set.intersection(*(set(p["values"]) for p in points)))
            raise ConfigError(f"{export_dir / INDEX_JSON}: the front has no {name} metric "
                              f"(it holds {', '.join(held) or 'none'}); pick needs {name}")
    if units.get(ACCURACY, "%") != "%":
        raise ConfigError(f"{export_dir / INDEX_JSON}: accuracy is in {units[ACCURACY]!r}; "
                          "pick compares accuracy in percent")
    qualifying = [p for p in points if all(lim.met(p["values"][lim.metric]) for lim in limits)]
    if not qualifying:
        raise NoPointQualifies(_no_point_message(points, limits))
    best = min(qualifying, key=_preference)
    source = export_dir / best["path"]
    _check_checkpoint(source, best, export_dir)
    checkpoint, copied = source, False
    if out is not None:
        checkpoint = Path(out)
        copied = copy_checkpoint(source, checkpoint, best["key"])
    return PickedPoint(rank=best["rank"], key=best["key"], origin=best["origin"],
                       config=best["config"], metrics=best["values"], units=units,
                       checkpoint=checkpoint, exported=source, qualifying=len(qualifying),
                       front_size=len(points), limits=tuple(lim.text for lim in limits),
                       copied=copied)


def find_export(run_dir: str | os.PathLike[str]) -> Path:
    """The export directory of ``run_dir``: ``run_dir`` itself when it holds front.json, else
    ``run_dir/export``; ConfigError when neither holds an exported front."""
    from hybridmoo.export.front import INDEX_JSON

    path = Path(run_dir)
    if path.is_file() and path.name == INDEX_JSON:
        return path.parent
    if not path.exists():
        raise ConfigError(f"{path}: no such run directory")
    if not path.is_dir():
        raise ConfigError(f"{path}: not a run directory (a file)")
    for candidate in (path, path / EXPORT_DIR):
        if (candidate / INDEX_JSON).is_file():
            return candidate
    raise ConfigError(f"{path}: no exported front (no {INDEX_JSON} there or in {EXPORT_DIR}/); "
                      f"export the run first: hybridmoo export {path}")


def copy_checkpoint(source: Path, out: Path, key: str) -> bool:
    """Copy the checkpoint directory ``source`` to ``out`` (a new or empty directory) and check
    the copy's digests; returns False, copying nothing, when ``out`` already holds this same
    checkpoint (the same manifest, every file intact). Any other non-empty ``out`` is refused."""
    from hybridmoo.export.files import MANIFEST, read_manifest

    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {out} exists and is not a directory")
    if out.resolve().is_relative_to(source.resolve()) and out.resolve() != source.resolve():
        raise ConfigError(f"output directory {out} lies inside the checkpoint directory {source}")
    if out.is_dir() and any(out.iterdir()):
        if (out / MANIFEST).is_file() and (
                sha256_file(out / MANIFEST) == sha256_file(source / MANIFEST)):
            read_manifest(out)  # a damaged copy of the same point is an error, not replaced
            return False
        raise ConfigError(f"output directory {out} is not empty and holds no copy of point "
                          f"{key[:8]}; give a new or empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source, tmp)
        read_manifest(tmp)
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _limits(max_latency_ms: float | None, max_size_mb: float | None,
            min_accuracy: float | None) -> list[_Limit]:
    limits = []
    if max_latency_ms is not None:
        bound = _number(max_latency_ms, "max_latency_ms", low=0.0, strict=True)
        limits.append(_Limit(LATENCY, bound, True, f"{LATENCY} <= {bound:g} ms"))
    if max_size_mb is not None:
        mb = _number(max_size_mb, "max_size_mb", low=0.0, strict=True)
        limits.append(_Limit(SIZE, mb * MB, True, f"size <= {mb:g} MB"))
    if min_accuracy is not None:
        bound = _number(min_accuracy, "min_accuracy", low=0.0, strict=False, high=100.0)
        limits.append(_Limit(ACCURACY, bound, False, f"{ACCURACY} >= {bound:g}%"))
    return limits


def _number(value: Any, name: str, *, low: float, strict: bool,
            high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if (value <= low if strict else value < low) or (high is not None and value > high):
        what = (f"in [{low:g}, {high:g}] (percent)" if high is not None
                else f"{'>' if strict else '>='} {low:g}")
        raise ConfigError(f"{name} must be {what}, got {value:g}")
    return value


def _point(p: Any, n: int, export_dir: Path) -> dict[str, Any]:
    """A front.json point, checked, with ``values``: metric name -> number."""
    from hybridmoo.export.files import safe_name
    from hybridmoo.export.front import INDEX_JSON

    where = f"{export_dir / INDEX_JSON} point {n}"
    if not isinstance(p, dict) or not isinstance(p.get("metrics"), dict):
        raise ConfigError(f"{where}: not a front point (no 'metrics')")
    values = {}
    for name, m in p["metrics"].items():
        value = m.get("value") if isinstance(m, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[str(name)] = float(value)
    key = p.get("key")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{where}: no key")
    rank = p.get("rank")
    return {"rank": rank if isinstance(rank, int) else n, "key": key,
            "origin": str(p.get("origin", "")), "config": dict(p.get("config") or {}),
            "values": values, "path": safe_name(p.get("path"), where),
            "manifest_sha256": p.get("manifest_sha256")}


def _units(index: dict[str, Any]) -> dict[str, str]:
    units = {}
    for p in index["points"]:
        for name, m in p["metrics"].items():
            if isinstance(m, dict) and isinstance(m.get("unit"), str):
                units.setdefault(str(name), m["unit"])
    return units


def _preference(p: dict[str, Any]) -> tuple[float, float, float, int]:
    """Most accurate first; ties: lower latency, then smaller size, then the front's rank."""
    v = p["values"]
    return (-v[ACCURACY], v.get(LATENCY, 0.0), v.get(SIZE, 0.0), p["rank"])


def _check_checkpoint(directory: Path, point: dict[str, Any], export_dir: Path) -> None:
    from hybridmoo.export.files import MANIFEST, read_manifest
    from hybridmoo.export.front import INDEX_JSON

    read_manifest(directory)  # every file's digest
    expected = point["manifest_sha256"]
    if isinstance(expected, str) and sha256_file(directory / MANIFEST) != expected:
        raise ConfigError(f"{directory}: its manifest is not the one {export_dir / INDEX_JSON} "
                          "lists (changed after export)")


def describe_point(values: dict[str, float]) -> str:
    """``accuracy 91.23%, latency 0.421 ms, size 12.3 KB`` (the metrics a point has)."""
    parts = []
    if ACCURACY in values:
        parts.append(f"accuracy {format_percent(values[ACCURACY])}")
    if LATENCY in values:
        parts.append(f"latency {format_ms(values[LATENCY])}")
    if SIZE in values:
        parts.append(f"size {format_size(values[SIZE])}")
    return ", ".join(parts)


_BEST = {LATENCY: ("fastest", format_ms), SIZE: ("smallest", format_size),
         ACCURACY: ("most accurate", format_percent)}


def _no_point_message(points: list[dict[str, Any]], limits: list[_Limit]) -> str:
    """Which limits no point meets and the points that come closest to them."""
    n = f"{len(points)} front point{'s' if len(points) != 1 else ''}"
    unmet = [lim for lim in limits if not any(lim.met(p["values"][lim.metric]) for p in points)]
    parts = []
    for lim in unmet:
        word, fmt = _BEST[lim.metric]
        best = (min if lim.at_most else max)(points, key=lambda p, m=lim.metric: p["values"][m])
        others = describe_point({k: v for k, v in best["values"].items() if k != lim.metric})
        parts.append(f"no front point has {lim.text}; the {word} is "
                     f"{fmt(best['values'][lim.metric])} ({others}, {best['path']})")
    if unmet:
        return f"{'; '.join(parts)} (of {n})"
    closest = min(points, key=lambda p: (sum(lim.violation(p["values"][lim.metric])
                                             for lim in limits), _preference(p)))
    return (f"no front point meets {' and '.join(lim.text for lim in limits)} at once (of {n}); "
            f"the closest is {closest['path']}: {describe_point(closest['values'])}")
