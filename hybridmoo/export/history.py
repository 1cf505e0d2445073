"""``history.csv``: every journaled evaluation of a run as one table row, in evaluation order.

Columns: ``evaluation`` (1, 2, ... as in the report and the manifests' lineage), ``key``,
``origin``, ``parents`` (keys separated by spaces), ``ok`` (True / False), ``reason`` (why an
evaluation failed), one column per objective (``accuracy [%]``; empty for a failed one),
``elapsed_s``, and ``config`` as JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from hybridmoo.objectives import EvalResult, Objective

COLUMNS = ("evaluation", "key", "origin", "parents", "ok", "reason")
"""The columns before the objectives' (``elapsed_s`` and ``config`` follow them)."""


def history_csv(history: Sequence[EvalResult], objectives: Sequence[Objective]) -> str:
    """The CSV text of ``history`` (see the module docstring)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*COLUMNS, *(objective_column(o) for o in objectives), "elapsed_s",
                     "config"])
    for n, r in enumerate(history, 1):
        writer.writerow([n, r.key, r.candidate.origin, " ".join(r.candidate.parents), r.ok,
                         r.reason or "",
                         *(r.values.get(o.name, "") if r.ok else "" for o in objectives),
                         r.elapsed_s, json.dumps(r.config, separators=(",", ":"))])
    return buf.getvalue()


def objective_column(o: Objective) -> str:
    """``name [unit]``, or the name alone for an objective without a unit."""
    return f"{o.name} [{o.unit}]" if o.unit else o.name
