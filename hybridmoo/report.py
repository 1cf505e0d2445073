"""The run report: one self-contained ``report.html`` (figures embedded as data URIs) plus the
same figures as PNG files beside it.

- 2-D projections of the front: the first objective against each other one; every evaluated
  point in grey, the Pareto front highlighted, refined points (``origin="refine"``) drawn as
  triangles of another colour with a dashed line from the record they were refined from, the
  baseline (the starting model, :mod:`hybridmoo.baseline`) as a star;
- the hypervolume after each evaluation (:meth:`ParetoArchive.hypervolume_curve`), under the
  fixed reference of :func:`hybridmoo.baseline.fixed_reference`;
- a table of the front (numbered by rank as the export's folders are), each point against
  the baseline and, for refined ones, what refinement changed, linking each exported
  checkpoint directory when an export index (``front.json``) is given, and the run's facts.

``report_run(run_dir)`` reads a run directory (``run.json``, ``journal.jsonl``,
``baseline.json`` and ``export/front.json`` when present) without taking its lock or writing
to it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridmoo.archive import ParetoArchive
from hybridmoo.baseline import (
    Baseline,
    compare,
    describe,
    fixed_reference,
    load_baseline,
    reference_text,
)
from hybridmoo.errors import ConfigError
from hybridmoo.files import write_atomic
from hybridmoo.journal import JOURNAL_FILE, RUN_FILE
from hybridmoo.objectives import TEST_PREFIX, EvalResult, Objective, ranked
from hybridmoo.rundir import BASELINE_FILE, EXPORT_DIR, REPORT_DIR
from hybridmoo.space import REFINED
from hybridmoo.units import axis_units

REPORT_FILE = "report.html"
EXPORT_INDEX = Path(EXPORT_DIR) / "front.json"
GREY, EVO, REFINE = "#b8b8b8", "#1f5fbf", "#d2421b"
_POINT_DIR = re.compile(r"^[0-9]{2,}_[0-9a-z]{1,8}$")


@dataclass
class RunData:
    """What a run directory recorded: its settings, objectives and every result."""

    settings: dict[str, Any]
    objectives: tuple[Objective, ...]
    history: list[EvalResult]
    notes: list[str] = field(default_factory=list)


def read_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read ``run.json`` and ``journal.jsonl`` (read only: a truncated last line left by a
    crash is skipped and noted, not repaired)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    try:
        settings = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        objectives = tuple(Objective(**o) for o in settings["objectives"])
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: not a run directory (no {RUN_FILE})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run_dir / RUN_FILE}: unreadable run settings: {exc!r}") from None
    history, notes = [], []
    path = run_dir / JOURNAL_FILE
    lines = path.read_bytes().split(b"\n") if path.is_file() else []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            history.append(EvalResult.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            if i == len(lines) - 1:
                notes.append(f"skipped a truncated last journal line ({len(line)} bytes)")
                break
            raise ConfigError(f"{path} line {i + 1} is corrupt: {exc}") from None
    return RunData(settings, objectives, history, notes)


def report_run(run_dir: str | os.PathLike[str],
               out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of the run in ``run_dir`` to ``out_dir`` (default
    ``run_dir/report``); returns the path of report.html."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    s = run.settings
    facts: dict[str, Any] = {"run directory": str(run_dir)}
    for key in ("algorithm", "seed", "max_evals"):
        if key in s:
            facts[key.replace("_", " ")] = s[key]
    if isinstance(s.get("space"), dict):
        facts["search space"] = f"{len(s['space'])} dimensions"
    for note in run.notes:
        facts["note"] = note
    index = run_dir / EXPORT_INDEX
    return write_report(run.history, run.objectives, out_dir or run_dir / REPORT_DIR,
                        export_index=index if index.is_file() else None,
                        title=f"hybridmoo run: {run_dir.name}", facts=facts,
                        baseline=load_baseline(run_dir / BASELINE_FILE))


def write_report(history: Sequence[EvalResult], objectives: Sequence[Objective],
                 out_dir: str | os.PathLike[str], *, export_index: Path | None = None,
                 title: str = "hybridmoo report", facts: Mapping[str, Any] | None = None,
                 baseline: Baseline | None = None) -> Path:
    """Write report.html and its PNG figures to ``out_dir``; returns report.html's path.
    ``export_index`` is an export's front.json, whose checkpoint directories the front table
    links; ``facts`` are extra (label, value) lines for the summary; ``baseline`` (the
    starting model, :mod:`hybridmoo.baseline`) is drawn on the figures and every front point
    is compared with it. The hypervolume has a fixed reference
    (:func:`hybridmoo.baseline.fixed_reference`), said on the page."""
    objectives = tuple(objectives)
    if not objectives:
        raise ConfigError("a report needs at least one objective")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = baseline.values if baseline is not None else None
    reference = fixed_reference(base, history, objectives)
    archive = ParetoArchive(objectives, reference)
    for r in history:
        archive.add(r)
    norm = (reference_text(baseline) if reference is not None
            else "normalised to the final front")
    figures = [(f"front_0_{j}.png", _projection(archive, 0, j, base),
                _pair_caption(objectives, j, baseline))
               for j in range(1, len(objectives))]
    figures.append(("hypervolume.png", _hypervolume(archive),
                    f"Hypervolume of the front after each evaluation ({norm}, reference point "
                    "1.1); triangles mark refined results."))
    images = []
    for name, png, caption in figures:
        (out_dir / name).write_bytes(png)
        images.append((name, base64.b64encode(png).decode("ascii"), caption))
    links, tests = (_export_links(export_index, out_dir) if export_index is not None
                    else ({}, {}))
    summary = _facts(archive, facts or {}, norm, baseline)
    page = _page(title, summary, images, _front_rows(archive, links, tests, base), objectives,
                 bool(links))
    path = out_dir / REPORT_FILE
    write_atomic(path, page)
    return path


# -- figures ---------------------------------------------------------------------------------


def _format_axis(axis: Any, o: Objective, values: Sequence[float]) -> None:
    """Label ``axis`` (a matplotlib x or y axis) with ``o``'s readable unit and tick text
    (:func:`hybridmoo.units.axis_units`: bytes in KB or MB, ms, %), without an offset."""
    from matplotlib.ticker import FuncFormatter

    units = axis_units(o, values)
    axis.set_label_text(units.label)
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: units.tick(value)))


def _pair_caption(objectives: Sequence[Objective], j: int, baseline: Baseline | None) -> str:
    return (f"{objectives[0].name} vs {objectives[j].name}: all evaluated points (grey), the "
            "Pareto front from evolution (circles) and refined networks (triangles, dashed "
            "line from the network they were refined from)"
            + (f"; the star is the baseline, {baseline.source}." if baseline else "."))


def _projection(archive: ParetoArchive, i: int, j: int,
                baseline: Mapping[str, float] | None = None) -> bytes:
    oi, oj = archive.objectives[i], archive.objectives[j]
    ok = [r for r in archive.history if r.ok]
    front = {id(r) for r in archive.front}
    by_key = {r.key: r for r in ok}
    fig, ax = _figure()
    xy = lambda rs: ([r.values[oj.name] for r in rs], [r.values[oi.name] for r in rs])  # noqa: E731
    ax.scatter(*xy(ok), s=12, c=GREY, label=f"evaluated ({len(ok)})", zorder=1)
    evo = [r for r in ok if id(r) in front and r.candidate.origin != REFINED]
    ax.scatter(*xy(evo), s=46, c=EVO, edgecolors="black", linewidths=0.5, zorder=3,
               label=f"Pareto front, evolution ({len(evo)})")
    refined = [r for r in ok if r.candidate.origin == REFINED]
    if refined:
        on_front = sum(id(r) in front for r in refined)
        for r in refined:
            for parent in (by_key.get(k) for k in r.candidate.parents):
                if parent is not None:
                    ax.plot([parent.values[oj.name], r.values[oj.name]],
                            [parent.values[oi.name], r.values[oi.name]], ls="--", lw=0.8,
                            c=REFINE, alpha=0.7, zorder=2)
        ax.scatter(*xy(refined), s=60, marker="^", c=REFINE, edgecolors="black",
                   linewidths=0.5, zorder=4,
                   label=f"refined, gradient MOO ({len(refined)}, {on_front} on the front)")
    xs, ys = [r.values[oj.name] for r in ok], [r.values[oi.name] for r in ok]
    if baseline is not None and oi.name in baseline and oj.name in baseline:
        ax.scatter([baseline[oj.name]], [baseline[oi.name]], s=160, marker="*", c="#d62728",
                   edgecolors="black", linewidths=0.5, zorder=5, label="baseline")
        xs, ys = [*xs, baseline[oj.name]], [*ys, baseline[oi.name]]
    _format_axis(ax.xaxis, oj, xs)
    _format_axis(ax.yaxis, oi, ys)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def _hypervolume(archive: ParetoArchive) -> bytes:
    curve = archive.hypervolume_curve()
    fig, ax = _figure()
    steps = range(1, len(curve) + 1)
    ax.plot(steps, curve, c=EVO, drawstyle="steps-post", label="hypervolume")
    marks = [(n, v) for n, (r, v) in enumerate(zip(archive.history, curve, strict=True), 1)
             if r.candidate.origin == REFINED]
    if marks:
        ax.scatter(*zip(*marks, strict=True), marker="^", c=REFINE, s=40, zorder=3,
                   label="refined result")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (normalised)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=100, layout="tight")
    FigureCanvasAgg(fig)  # Agg, without pyplot's global state
    return fig, fig.add_subplot()


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# -- html ------------------------------------------------------------------------------------


def _export_links(index: Path, out_dir: Path
                  ) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Record key -> link (relative to the report) of its exported checkpoint directory, and
    record key -> the test-split values the export measured (objective name -> value)."""
    try:
        data = json.loads(Path(index).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{index}: unreadable export index: {exc}") from None
    links, tests = {}, {}
    for p in data.get("points", []) if isinstance(data, dict) else []:
        path, key = p.get("path"), p.get("key")
        if isinstance(path, str) and isinstance(key, str) and _POINT_DIR.match(path):
            target = Path(index).parent / path
            links[key] = Path(os.path.relpath(target, out_dir)).as_posix() + "/"
            metrics = p.get("metrics") if isinstance(p.get("metrics"), dict) else {}
            tests[key] = {name.removeprefix(TEST_PREFIX): float(m["value"])
                          for name, m in metrics.items() if isinstance(m, dict)
                          and m.get("split") == "test" and isinstance(m.get("value"), int | float)}
    return links, tests


def _facts(archive: ParetoArchive, extra: Mapping[str, Any], norm: str,
           baseline: Baseline | None) -> list[tuple[str, str]]:
    history, front = archive.history, archive.front
    refined = [r for r in history if r.candidate.origin == REFINED]
    on_front = {id(r) for r in front}
    rows = [("objectives", ", ".join(f"{o.name} ({o.direction}{', ' + o.unit if o.unit else ''})"
                                     for o in archive.objectives)),
            ("evaluations", str(len(history))),
            ("failed", str(sum(not r.ok for r in history))),
            ("Pareto front", f"{len(front)} points"),
            ("refined results", f"{len(refined)} ({sum(id(r) in on_front for r in refined)} on the "
                                "front)"),
            ("hypervolume", f"{archive.hypervolume():.4f} ({norm}, reference point 1.1)")]
    if baseline is not None:
        rows.append(("baseline", f"{baseline.source}: " + ", ".join(
            f"{o.name} {_fmt(baseline.values[o.name])}{f' {o.unit}' if o.unit else ''}"
            for o in archive.objectives if o.name in baseline.values)))
    rows += [(str(k), str(v)) for k, v in extra.items()]
    return rows


def _front_rows(archive: ParetoArchive, links: Mapping[str, str],
                tests: Mapping[str, Mapping[str, float]],
                baseline: Mapping[str, float] | None) -> list[dict[str, Any]]:
    index = {id(r): n for n, r in enumerate(archive.history, 1)}
    objectives = archive.objectives
    return [{"eval": index[id(r)], "record": r, "link": links.get(r.key),
             "test": tests.get(r.key, {}),
             "versus": (describe(compare(r.values, baseline, objectives), objectives)
                        if baseline is not None else "")}
            for r in ranked(archive.front, objectives)]


def changed_text(record: EvalResult) -> str:
    """What refinement changed against the parent (``info["changed"]``), in words."""
    changed = record.info.get("changed")
    if not isinstance(changed, Mapping):
        return ""
    parts = [f"{k} {a}→{b}" for k, (a, b) in changed.get("structure", {}).items()]
    if changed.get("weights"):
        parts.append("weights")
    return ", ".join(parts) or "nothing"


def _page(title: str, facts: list[tuple[str, str]], images: list[tuple[str, str, str]],
          rows: list[dict[str, Any]], objectives: Sequence[Objective], linked: bool) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>{e(title)}</h1>", "<h2>Run</h2>", '<table class="facts">']
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts]
    out.append("</table><h2>Figures</h2>")
    for name, data, caption in images:
        out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(name)}">'
                   f"<figcaption>{e(caption)} <span class=\"file\">({e(name)})</span>"
                   "</figcaption></figure>")
    out.append(f"<h2>Pareto front ({len(rows)} points)</h2>")
    out.append('<p><span class="badge refine">refine</span> ← parent = refined by gradient MOO; '
               '<span class="badge evo">init / evo</span> = found by the search.</p>')
    tested = [o for o in objectives if any(o.name in row["test"] for row in rows)]
    label = lambda o, split="": (f"{o.name}{f' [{o.unit}]' if o.unit else ''}{split} "  # noqa: E731
                                 f"{'↑' if o.direction == 'max' else '↓'}")
    compared = any(row["versus"] for row in rows)
    head = ["#", "evaluation", "origin", "key",
            *(label(o, ", val" if o in tested else "") for o in objectives),
            *(label(o, ", test") for o in tested), *(["vs baseline"] if compared else []),
            "changed by refinement", "config"] + (["checkpoint"] if linked else [])
    out.append('<table class="front"><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
    for n, row in enumerate(rows):
        r = row["record"]
        origin = r.candidate.origin
        kind = "refine" if origin == REFINED else "evo"
        source = "".join(f" ← <code>{e(k[:8])}</code>" for k in r.candidate.parents
                         if kind == "refine")
        cells = [str(n), str(row["eval"]), f'<span class="badge {kind}">{e(origin)}</span>{source}',
                 f"<code>{e(r.key[:8])}</code>",
                 *(e(_fmt(r.values[o.name])) for o in objectives),
                 *(e(_fmt(row["test"][o.name])) if o.name in row["test"] else "" for o in tested),
                 *([e(row["versus"])] if compared else []), e(changed_text(r)),
                 f"<code>{e(', '.join(f'{k}={v}' for k, v in r.config.items()))}</code>"]
        if linked:
            link = row["link"]
            cells.append(f'<a href="{e(link)}">{e(link.rstrip("/").rsplit("/", 1)[-1])}</a>'
                         if link else "not exported")
        out.append(f'<tr class="origin-{kind}" data-origin="{e(origin)}">'
                   + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.5g}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}table.front td code{font-size:0.8em}
figure{display:inline-block;margin:0.5em;max-width:660px}img{max-width:100%}
figcaption{font-size:0.85em;color:#555}.file{color:#999}
tr.origin-refine{background:#fdeee9}.badge{padding:1px 6px;border-radius:4px;color:#fff}
.badge.refine{background:#d2421b}.badge.evo{background:#1f5fbf}
"""
