"""Renders the mutation score (`make mutation`) into RESULTS.md.

Not one of `make bench`'s benchmarks: a full mutation run takes about an hour on two
cores. tests/mutation/run.sh runs mutmut and tests/mutation/score.py scores it; the
figures of a run are kept in benchmarks/results/mutation.json, which this renders.
"""

from __future__ import annotations

from typing import Any

NAME = "mutation"
TARGET = "mutants detected by the unit and functional tests >= 90% for each core module"


def markdown(result: dict[str, Any]) -> list[str]:
    from benchmarks.common import md_table

    res = result["results"]
    rows = [
        [
            m["module"],
            m["mutants"],
            m["equivalents"],
            m.get("before") or "not run",
            m.get("after") or "not run",
            m.get("run_s") or "-",
        ]
        for m in res["modules"]
    ]
    header = ["module", "mutants", "listed equivalents", "before", "after", "full run (s)"]
    return [res["how"], "", md_table(header, rows), "", res["notes"]]
