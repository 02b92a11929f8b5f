"""``python -m bench.site`` runs end to end on a tiny fleet and writes every configuration.

Structure only (every configuration present, with numbers; every node read in the steady
cycles; a takeover measured): the timings themselves are the harness's output, quoted in
docs/benchmarks.md, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.pg import find_bindir
from tests.conftest import in_ci, require_module

ROOT = Path(__file__).resolve().parents[2]
SIZE = 20


def require_postgres() -> None:
    if find_bindir() is None:
        message = "PostgreSQL not installed (apt-get install -y postgresql)"
        if in_ci():
            pytest.fail(message + " -- CI must never skip the PostgreSQL benchmark")
        pytest.skip(message)


@pytest.mark.peers
@pytest.mark.slow
def test_site_bench_measures_every_configuration(tmp_path: Path) -> None:
    require_postgres()
    require_module("psycopg")
    out = tmp_path / "site"
    argv = [sys.executable, "-m", "bench.site", "--sizes", str(SIZE), "--cycles", "2"]
    argv += ["--interval", "1", "--heartbeat-interval", "0.5", "--heartbeat-timeout", "2.5"]
    argv += ["--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=55, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    document = json.loads((out / "results.json").read_text())
    assert document["machine"]["nproc"] >= 1
    results = {r["configuration"]: r for r in document["results"]}
    assert set(results) == {"sqlite-1", "postgresql-1", "postgresql-2"}
    for name, result in results.items():
        steady = result["steady"]
        assert result["size"] == SIZE
        assert steady["every_node_read"], (name, steady["nodes_per_site_cycle"])
        assert steady["statuses"] >= SIZE
        assert all(f["wall_s"] > 0 for f in result["first_cycle"])
        for key in ("wall_s_median", "wall_s_max", "store_s_per_cycle_median"):
            assert steady[key] > 0, (name, key)
        assert steady["agent_cpu_per_status_ms"] is not None
        if result["backend"] == "postgresql":
            assert steady["server_cpu_s_per_cycle"] is not None
    assert results["sqlite-1"]["steady"]["server_cpu_s_per_cycle"] is None
    assert results["postgresql-2"]["agents"] == 2
    takeover = results["postgresql-2"]["takeover"]
    for key in ("leases_after_s", "every_bmc_asked_after_s", "full_cycle_ended_after_s"):
        assert takeover[key] > 0, key
    assert takeover["bound_s"] == 2.5 + 0.5 + 1

    table = (out / "results.md").read_text()
    for name in results:
        assert f"| {name} | {SIZE} |" in table
