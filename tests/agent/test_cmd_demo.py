"""``powersync demo``: the simulator and the agent's own IPMI client, nothing else needed."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.demo import run_demo

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_story_numbers() -> None:
    out = io.StringIO()
    numbers = await run_demo(out, nodes=40, flips=4, dead=2, seed=3)
    text = out.getvalue()
    cycles = {cycle["label"]: cycle for cycle in numbers["cycles"]}
    assert cycles["first look"]["ok"] == 40
    assert cycles["first look"]["changed"] == 40
    assert cycles["force_power_state_during_sync=true"]["forced"] == 4
    assert cycles["force_power_state_during_sync=false"]["changed"] == 4
    assert cycles["dead BMCs, attempt 2"]["maintenance"] == 2
    assert cycles["recovery"]["recovered"] == 2
    assert numbers["mismatches_left"] == 0
    assert numbers["in_maintenance"] == 0
    # 20 nodes with an instance recorded first, then 2 of the 4 recorded flips had one
    # (at most), each queued for Nova; every event is accounted for.
    counts = numbers["notifications"]
    assert counts["pending"] + counts["superseded"] >= 20
    assert "drove the hardware back" in text
    assert "fault 'power failure'" in text
    assert "NoResponseError" in text  # the real BMC error text reaches the reason
    # A fifth (8) speak Redfish: all read and recorded in the first cycle, one forced back.
    assert numbers["redfish_nodes"] == 8
    assert numbers["redfish_recorded"] == 8
    assert numbers["redfish_forced"] == 1
    assert "32 simulated IPMI v2.0 BMCs" in text and "8 Redfish services over HTTPS" in text
    assert "sim-0032..sim-0039 with driver redfish" in text


@pytest.mark.slow
def test_demo_command_runs_as_a_user_would() -> None:
    # What README's first command runs: the installed entry point, default size, exit 0.
    env = dict(os.environ, PATH="/usr/bin:/bin")  # no ipmitool/ipmi_sim from /usr/sbin needed
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Started 240 simulated IPMI v2.0 BMCs" in result.stdout
    assert "and 60 Redfish services over HTTPS" in result.stdout
    assert "Mismatches left between store and hardware: 0." in result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == ""
