"""Measure (not assert): CPU per status on live sessions, our client vs the sushy library,
against the Redfish simulator at ~100 BMCs; requests per status; first-cycle cost.

    PYTHONPATH=. .venv/bin/python -m tests.redfish.measure_cpu [--bmcs 100] [--cycles 5]

The simulator runs in a child process, so only the client's CPU is counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from typing import Any

import trio

from redfish import RedfishSession, open_redfish
from redfish.sim import send_control

PASSWORD = "measure-password-5"
SIM = """
import json, os, sys, trio
from redfish.sim import open_fleet

async def main(count, tls_dir, control):
    password = os.environ["SIM_PASSWORD"]
    async with open_fleet(count, password=password, tls_dir=tls_dir,
                          control_socket=control, power_on=True) as fleet:
        print(json.dumps([bmc.url for bmc in fleet.bmcs]), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)

trio.run(main, int(sys.argv[1]), sys.argv[2], sys.argv[3])
"""  # the password goes by environment, never argv


def sim_requests(control: str) -> int:
    answer = send_control(control, {"op": "list"})
    return sum(row["requests"] for row in answer["bmcs"])


async def ours(urls: list[str], ca_file: str, control: str, cycles: int) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        sessions: list[RedfishSession] = []
        cpu0 = time.process_time()
        for url in urls:
            session = await stack.enter_async_context(
                open_redfish(url, username="admin", password=PASSWORD, verify=ca_file)
            )
            sessions.append(session)
        for session in sessions:  # the first cycle's status
            await session.get_power()
        first_cpu = time.process_time() - cpu0
        first = [session.statistics() for session in sessions]
        before = sim_requests(control)
        cpu0 = time.process_time()
        for _ in range(cycles):
            for session in sessions:
                await session.get_power()
        cpu = time.process_time() - cpu0
        statuses = cycles * len(sessions)
        return {
            "cpu_ms_per_status": 1000 * cpu / statuses,
            "requests_per_status": (sim_requests(control) - before) / statuses,
            "first_cycle_cpu_ms_per_bmc": 1000 * first_cpu / len(sessions),
            "first_cycle_tls_handshakes_per_bmc": sum(s.tls_handshakes for s in first) / len(first),
            "first_cycle_logins_per_bmc": sum(s.logins for s in first) / len(first),
            "first_cycle_requests_per_bmc": sum(s.requests for s in first) / len(first),
        }


def theirs(urls: list[str], ca_file: str, control: str, cycles: int) -> dict[str, Any]:
    import sushy  # type: ignore[import-untyped]
    from sushy import auth

    cpu0 = time.process_time()
    conns = []
    logins = []
    for url in urls:
        login = auth.SessionAuth(username="admin", password=PASSWORD)
        conns.append(sushy.Sushy(url + "/redfish/v1", auth=login, verify=ca_file))
        logins.append(login)
    for conn in conns:
        conn.get_system("/redfish/v1/Systems/1").power_state  # noqa: B018
    first_cpu = time.process_time() - cpu0
    before = sim_requests(control)
    cpu0 = time.process_time()
    for _ in range(cycles):
        for conn in conns:  # what Ironic's power interface does per status
            conn.get_system("/redfish/v1/Systems/1").power_state  # noqa: B018
    cpu = time.process_time() - cpu0
    statuses = cycles * len(conns)
    result = {
        "cpu_ms_per_status": 1000 * cpu / statuses,
        "requests_per_status": (sim_requests(control) - before) / statuses,
        "first_cycle_cpu_ms_per_bmc": 1000 * first_cpu / len(conns),
    }
    for login in logins:
        login.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bmcs", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tls_dir:
        control = f"{tls_dir}/control.sock"
        sim = subprocess.Popen(
            [sys.executable, "-c", SIM, str(args.bmcs), tls_dir, control],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "SIM_PASSWORD": PASSWORD},
        )
        try:
            assert sim.stdout is not None
            urls = json.loads(sim.stdout.readline())
            ca_file = f"{tls_dir}/ca.pem"
            results = {
                "bmcs": args.bmcs,
                "cycles": args.cycles,
                "powersync": trio.run(ours, urls, ca_file, control, args.cycles),
                "sushy": theirs(urls, ca_file, control, args.cycles),
                "sim_sessions_left": send_control(control, {"op": "status"})["statistics"][
                    "sessions"
                ],
            }
        finally:
            assert sim.stdin is not None
            sim.stdin.close()
            sim.wait(timeout=30)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
