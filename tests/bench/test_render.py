"""The committed benchmark results render again to the tables committed beside them.

The report code is shared by the IPMI, Redfish and site tables: a change to it that moves
a column, a digit or an error line shows here, without running any benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import site_report
from bench.__main__ import summarized

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
RUNS = sorted(path.parent for path in RESULTS.rglob("results.json") if path.parent.name != "site")


@pytest.mark.parametrize("folder", RUNS, ids=lambda path: str(path.relative_to(RESULTS)))
def test_a_run_renders_its_committed_tables(folder: Path) -> None:
    document = json.loads((folder / "results.json").read_text())
    summary, targets = document["summary"], document["targets"]
    tables = summarized(document, document["settings"]["deadline"])
    assert tables == (folder / "results.md").read_text()
    assert document["summary"] == summary
    assert document["targets"] == targets


def test_the_site_run_renders_its_committed_tables() -> None:
    document = json.loads((RESULTS / "site" / "results.json").read_text())
    assert site_report.markdown(document) == (RESULTS / "site" / "results.md").read_text()
