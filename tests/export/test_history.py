"""history.csv: one row per journaled evaluation, failed ones with their reason."""

import csv
import io
import json

from hybridmoo.export.history import history_csv
from hybridmoo.objectives import EvalResult, Objective
from hybridmoo.space import Candidate

OBJECTIVES = (Objective("accuracy", "max", "%"), Objective("macs"))


def test_rows_keep_order_lineage_failures_and_configs():
    first = EvalResult(Candidate({"width": 0.5, "act": "relu"}, "init"),
                       {"accuracy": 91.25, "macs": 1200.0}, elapsed_s=1.5)
    failed = EvalResult(Candidate({"width": 1.0, "act": "gelu"}, "evo", (first.key,)), ok=False,
                        reason="RuntimeError: out of memory, again", elapsed_s=0.25)
    refined = EvalResult(Candidate({"width": 0.5, "act": "relu"}, "refine", (first.key,)),
                         {"accuracy": 92.0, "macs": 1100.0})
    rows = list(csv.reader(io.StringIO(history_csv([first, failed, refined], OBJECTIVES))))
    assert rows[0] == ["evaluation", "key", "origin", "parents", "ok", "reason", "accuracy [%]",
                       "macs", "elapsed_s", "config"]
    assert rows[1] == ["1", first.key, "init", "", "True", "", "91.25", "1200.0", "1.5",
                       '{"width":0.5,"act":"relu"}']
    assert rows[2][:6] == ["2", failed.key, "evo", first.key, "False",
                           "RuntimeError: out of memory, again"]
    assert rows[2][6:8] == ["", ""]  # a failed evaluation has no objective values
    assert json.loads(rows[2][9]) == {"width": 1.0, "act": "gelu"}
    assert rows[3][2:4] == ["refine", first.key] and len(rows) == 4


def test_an_empty_history_is_the_header_alone():
    assert history_csv([], OBJECTIVES).splitlines() == [
        "evaluation,key,origin,parents,ok,reason,accuracy [%],macs,elapsed_s,config"]
