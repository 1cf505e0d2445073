"""What the command line prints: the front table, a pipeline run's summary, the console."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridmoo.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from hybridmoo.objectives import Objective
    from hybridmoo.search import SearchResult

PROG = "hybridmoo"
MAX_ROWS = 50  # front rows shown; the journal holds them all


def print_front(console: Console, result: SearchResult, objectives: Sequence[Objective],
                dims: list[str], quiet: bool, reference: bool = False,
                hypervolume: tuple[float, str] | None = None) -> None:
    """The front as a table (config + objective values), then hypervolume (``hypervolume``:
    a value and what its normalisation is, instead of the search's own), stop reason,
    journal."""
    from rich.table import Table

    from hybridmoo.objectives import ranked
    from hybridmoo.space import REFINED

    front, history = result.front, result.history
    failed = result.failed
    refined = sum(r.candidate.origin == REFINED for r in history)
    evaluated = f"{len(history) - refined} evaluated" + (
        f" + {refined} refined" if refined else "")
    if not quiet and front:
        rows = ranked(front, objectives)
        rank = {id(r): i for i, r in enumerate(rows)}
        # configs with identical values (e.g. isomorphic architectures) share one row
        points: dict[tuple[float, ...], list[Any]] = {}
        for r in rows:
            points.setdefault(tuple(r.values[o.name] for o in objectives), []).append(r)
        ties = len(points) < len(rows)
        title = f"Pareto front: {len(front)} points of {evaluated}"
        if ties:
            title += f", {len(points)} distinct"
        table = Table()
        table.add_column("#", justify="right")  # the rank, as in the export's NN_key folders
        table.add_column("key")
        for name in dims:
            table.add_column(name)
        for o in objectives:
            arrow = "↓" if o.direction == "min" else "↑"
            unit = f" [{o.unit}]" if o.unit else ""
            table.add_column(f"{o.name}{unit} {arrow}", justify="right")
        if ties:
            table.add_column("ties", justify="right")
        for same in list(points.values())[:MAX_ROWS]:
            r = same[0]
            table.add_row(f"{rank[id(r)]:02d}", r.key[:8], *(str(r.config[d]) for d in dims),
                          *(fmt(r.values[o.name]) for o in objectives),
                          *([f"+{len(same) - 1}" if len(same) > 1 else ""] if ties else []))
        console.print(title)  # not the table's title: rich would wrap it to the table's width
        console.print(table)
        if ties:
            console.print("ties: more configs with the same values")
        if len(points) > MAX_ROWS:
            console.print(f"... and {len(points) - MAX_ROWS} more front points (see the journal)")
    if not front:
        console.print("no feasible result: the front is empty")
    norm = "fixed reference" if reference else "normalised to the front's own range"
    value, norm = hypervolume or (result.hypervolume, norm)
    console.print(f"hypervolume: {value:.4f} ({norm}, reference point 1.1)")
    console.print(f"{evaluated}, failed: {len(failed)}"
                  + (f" (e.g. {failed[-1].reason})" if failed else ""))
    console.print(f"stopped: {result.stop_reason}")
    if result.run_dir is not None:
        from hybridmoo.journal import JOURNAL_FILE

        console.print(f"journal: {result.run_dir / JOURNAL_FILE}")
    else:
        console.print("journal: none (no run_dir given)")
    for warning in result.warnings:
        console.print(f"warning: {warning}")


def pipeline_summary(console: Console, result: Any, quiet: bool, seconds: float) -> None:
    """A pipeline run's training metrics, front (objectives and origin), export and report."""
    for name, value in result.train_metrics.items():
        console.print(f"supernet {name.replace('_', ' ')}: {value:.4f}")
    from hybridmoo.baseline import compare, describe
    from hybridmoo.objectives import ranked

    search = result.search
    objectives = search.archive.objectives
    baseline = result.baseline
    print_front(console, search, objectives, [], quiet, hypervolume=result.hypervolume)
    refined = [r for r in search.front if r.candidate.origin == "refine"]
    console.print(f"front: {len(search.front)} points, {len(refined)} from gradient refinement")
    if baseline is not None:
        console.print(f"baseline, {baseline.source}: " + ", ".join(
            f"{o.name} {fmt(baseline.values[o.name])}" for o in objectives
            if o.name in baseline.values))
        if not quiet:
            for rank, r in enumerate(ranked(search.front, objectives)[:MAX_ROWS]):
                console.print(f"  {rank:02d} {r.key[:8]}: " + describe(
                    compare(r.values, baseline.values, objectives), objectives))
    if result.export_dir is not None:
        console.print(f"exported checkpoints: {result.export_dir}")
    if result.report is not None:
        console.print(f"report: {result.report}")
    console.print(f"total time: {seconds:.0f} s")


def set_resume_hint(args: Any, run_dir: Any, command: str, marker: str) -> None:
    """``--resume`` (and ``--overwrite``) need a run directory (ConfigError otherwise); with
    one, remember how to resume for the message an interrupt prints, which offers it only once
    the file ``marker`` (what a resume needs) exists in the run directory."""
    for flag in ("resume", "overwrite"):
        if getattr(args, flag, False) and run_dir is None:
            raise ConfigError(f"{args.config}: --{flag} needs a run directory: set run_dir in "
                              "the config or give --run-dir")
    if run_dir is not None:
        args.resume_hint = f"{PROG} {command} --config {args.config} --resume" + (
            f" --run-dir {args.run_dir}" if args.run_dir else "")
        args.resume_marker = Path(run_dir) / marker


def make_console() -> Console:
    from rich.console import Console

    console = Console(highlight=False, markup=False)
    if not console.is_terminal:  # a pipe or a log file: do not squeeze tables into 80 columns
        console = Console(highlight=False, markup=False, width=200)
    return console


def fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def fresh_dir(out: Path) -> Path:
    """``out`` when it does not exist yet (or is empty), else a new timestamped directory in it."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return out
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = out / stamp, 1
    while candidate.exists():
        n += 1
        candidate = out / f"{stamp}-{n}"
    return candidate
