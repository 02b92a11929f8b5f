"""The benchmark harness runs end to end on a tiny fleet and writes valid results.

Structure and correctness only (every contender read every node); never timing: the
numbers themselves are the harness's output, in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_module, require_tool
from tests.redfish.peers import require_sushy_emulator

ROOT = Path(__file__).resolve().parents[2]
CONTENDERS = (
    "ipmitool-seq",
    "ipmitool-par8",
    "ipmipower",
    "pyghmi-par8",
    "powersync-fresh",
    "powersync-longlived",
    "agent-fresh",
    "agent-longlived",
)


@pytest.mark.peers
@pytest.mark.slow
def test_quick_run_reads_every_node_and_writes_results(tmp_path: Path) -> None:
    for tool in ("ipmi_sim", "ipmitool", "ipmipower"):
        require_tool(tool)
    require_module("pyghmi")
    require_module("matplotlib")
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "bench", "--quick", "--ipmi-sim", "3", "--sizes", "6"]
    argv += ["--no-count-datagrams", "--power-off", "3", "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    document = json.loads((out / "results.json").read_text())
    assert {"machine", "settings", "runs", "summary", "skipped"} <= set(document)
    assert document["machine"]["nproc"] >= 1
    runs = document["runs"]
    status_runs = [run for run in runs if run["op"] == "status"]
    seen = {(run["fleet"], run["size"], run["contender"]) for run in status_runs}
    for fleet, size in (("ipmi_sim", 3), ("powersync_sim", 6)):
        for contender in CONTENDERS:
            assert (fleet, size, contender) in seen, (fleet, size, contender)
    for run in runs:
        assert run["expected"] == run["size"], run
        assert run["correct"] == run["expected"], (run["contender"], run["errors"])
        assert run["wall_s"] > 0 and run["cpu_s"] >= 0
        assert run["maxrss_kb"] > 0, run["contender"]
    for run in runs:
        if run["op"] == "off":
            assert run["extra"]["really_off"] == run["size"], run["contender"]
    longlived = [r for r in status_runs if r["contender"] == "powersync-longlived"]
    for run in longlived:
        # a live session answers a status in one round trip: 2 datagrams per node
        assert 2 * run["size"] <= run["datagrams"] <= 2 * run["size"] + 4, run
    summary = document["summary"]
    assert {row["contender"] for row in summary if row["op"] == "status"} == set(CONTENDERS)
    off_rows = {row["contender"] for row in summary if row["op"] == "off"}
    assert {"ipmitool-par8", "ipmipower", "pyghmi-par8", "powersync"} <= off_rows
    for row in summary:
        assert row["correct_min"] == row["expected"]
        if row["op"] == "status":
            assert row["wall_vs_powersync"] is not None
    table = (out / "results.md").read_text()
    for contender in CONTENDERS:
        assert f"| {contender} |" in table
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


REDFISH_CONTENDERS = (
    "sushy-par8",
    "curl-par8",
    "powersync-redfish-live",
    "powersync-redfish-percycle",
    "agent-redfish-live",
    "agent-redfish-percycle",
)


@pytest.mark.peers
def test_redfish_run_reads_every_node_on_both_fleets(tmp_path: Path) -> None:
    """4 simulated Redfish BMCs and a 2-system sushy-emulator: every Redfish contender reads
    every node, a live session costs one request per status, and the IPMI fleets stay off."""
    require_tool("curl")
    require_module("sushy")
    require_module("bcrypt")
    require_sushy_emulator()
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "bench", "--ipmi-sim", "0", "--sizes"]
    argv += ["--redfish-sizes", "4", "--sushy-emulator", "2", "--repeats", "1"]
    argv += ["--contenders", *REDFISH_CONTENDERS, "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    document = json.loads((out / "results.json").read_text())
    runs = document["runs"]
    assert {run["fleet"] for run in runs} == {"redfish_sim", "sushy_emulator"}
    seen = {(run["fleet"], run["size"], run["contender"]) for run in runs}
    for fleet, size in (("redfish_sim", 4), ("sushy_emulator", 2)):
        for contender in REDFISH_CONTENDERS:
            assert (fleet, size, contender) in seen, (fleet, size, contender)
    for run in runs:
        assert run["correct"] == run["expected"] == run["size"], (run["contender"], run)
        assert run["maxrss_kb"] > 0 and run["cpu_s"] >= 0, run["contender"]
        if run["fleet"] == "redfish_sim":
            requests = run["extra"]["requests_per_status"]
            if run["contender"].endswith("-live") or run["contender"].startswith("sushy"):
                assert requests == 1.0, (run["contender"], run["extra"])
            if run["contender"].endswith("-percycle"):
                # service root, login, the system, logout
                assert requests == 4.0, (run["contender"], run["extra"])
    summary = {(row["fleet"], row["contender"]): row for row in document["summary"]}
    assert summary[("redfish_sim", "sushy-par8")]["cpu_vs_sushy"] == 1.0
    table = (out / "results.md").read_text()
    for contender in REDFISH_CONTENDERS:
        assert f"| {contender} |" in table
    assert "1 request per status on a live session" in table
