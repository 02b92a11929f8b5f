"""Client CPU per power status against N ipmi_sim BMCs: powersync's client, ipmipower, ipmitool.

    .venv/bin/python -m tests.peers.measure_client_cpu [--count 50] [--repeats 3]

Method (as in the lab notes): every client runs in child processes, and its CPU is the
user+sys time of those children (``getrusage(RUSAGE_CHILDREN)`` deltas), so interpreter or
process start-up is counted for everyone. For powersync the child also reports the CPU it
spent on the statuses alone (``RUSAGE_SELF`` around the work, i.e. without interpreter
start-up and imports), for fresh sessions and for live ones. The median of ``--repeats``
runs is printed as one JSON object. Not a test: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.peers import clients
from tests.peers.ipmi_sim import IpmiSimBmc, ipmi_sim_fleet

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "bench-Secret-1"

# Runs in a child interpreter: N statuses over fresh sessions, then over live sessions.
_OURS = r"""
import json, os, resource, sys, time
import trio
from ipmi import open_bmc

host = sys.argv[1]
ports = [int(p) for p in sys.argv[2].split(",")]
rounds = int(sys.argv[3])
suites = tuple(int(s) for s in sys.argv[4].split(","))
password = os.environ["PEER_BMC_PASSWORD"]

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

async def fresh(results, port):
    async with open_bmc(host, port, username="admin", password=password,
                        cipher_suites=suites) as bmc:
        results[port] = await bmc.get_power()
        results[("stats", port)] = bmc.statistics()

async def main():
    out = {}
    results = {}
    c0, t0 = cpu(), time.monotonic()
    async with trio.open_nursery() as nursery:
        for port in ports:
            nursery.start_soon(fresh, results, port)
    out["fresh_cpu"] = cpu() - c0
    out["fresh_wall"] = time.monotonic() - t0
    out["fresh_answers"] = sum(1 for p in ports if p in results)
    out["fresh_datagrams_sent"] = sum(results[("stats", p)].sent for p in ports)
    async with trio.open_nursery() as nursery:
        sessions = {}
        async def opener(port, task_status=trio.TASK_STATUS_IGNORED):
            async with open_bmc(host, port, username="admin", password=password,
                                cipher_suites=suites) as bmc:
                sessions[port] = bmc
                task_status.started()
                await trio.sleep_forever()
        for port in ports:
            await nursery.start(opener, port)
        answers = 0
        c0, t0 = cpu(), time.monotonic()
        for _ in range(rounds):
            async with trio.open_nursery() as inner:
                async def ask(bmc):
                    nonlocal answers
                    await bmc.get_power()
                    answers += 1
                for bmc in sessions.values():
                    inner.start_soon(ask, bmc)
        out["live_cpu"] = cpu() - c0
        out["live_wall"] = time.monotonic() - t0
        out["live_answers"] = answers
        out["live_datagrams_sent"] = sum(b.statistics().sent for b in sessions.values())
        nursery.cancel_scope.cancel()
    print(json.dumps(out))

trio.run(main)
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """(child CPU seconds, wall seconds, result) of ``run``."""
    cpu0, wall0 = children_cpu(), time.monotonic()
    result = run()
    return children_cpu() - cpu0, time.monotonic() - wall0, result


def run_ipmitool(bmcs: list[IpmiSimBmc]) -> int:
    answered = 0
    for bmc in bmcs:
        result = clients.ipmitool(bmc.host, bmc.port, username="admin", password=PASSWORD).run()
        answered += result.power is not None
    return answered


def run_ipmipower(bmcs: list[IpmiSimBmc]) -> int:
    command = clients.ipmipower_fleet(
        [(bmc.host, bmc.port) for bmc in bmcs], username="admin", password=PASSWORD
    )
    result = command.run()
    return sum(1 for line in result.stdout.splitlines() if line.endswith((": on", ": off")))


def run_ours(bmcs: list[IpmiSimBmc], rounds: int, suites: str) -> dict[str, Any]:
    ports = ",".join(str(bmc.port) for bmc in bmcs)
    completed = subprocess.run(
        [sys.executable, "-c", _OURS, bmcs[0].host, ports, str(rounds), suites],
        cwd=ROOT,
        env={**os.environ, "PEER_BMC_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    document: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10, help="live-session status rounds")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {}

    def sample(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    with (
        tempfile.TemporaryDirectory() as tmp,
        ipmi_sim_fleet(args.count, directory=Path(tmp), password=PASSWORD) as bmcs,
    ):
        n = len(bmcs)
        for _ in range(args.repeats):
            cpu, wall, answered = measured(lambda: run_ipmitool(bmcs))
            assert answered == n, f"ipmitool answered {answered} of {n}"
            sample("ipmitool_seq_cpu_ms_per_status", cpu / n * 1e3)
            sample("ipmitool_seq_wall_s", wall)
            cpu, wall, answered = measured(lambda: run_ipmipower(bmcs))
            assert answered == n, f"ipmipower answered {answered} of {n}"
            sample("ipmipower_cpu_ms_per_status", cpu / n * 1e3)
            sample("ipmipower_wall_s", wall)
            for suites in ("17,3", "3"):
                cpu, wall, ours = measured(lambda s=suites: run_ours(bmcs, args.rounds, s))
                assert ours["fresh_answers"] == n and ours["live_answers"] == n * args.rounds
                tag = "ours_" + suites.replace(",", "_")
                sample(f"{tag}_process_cpu_ms_per_status_incl_startup", cpu / n * 1e3)
                sample(f"{tag}_fresh_cpu_ms_per_status", ours["fresh_cpu"] / n * 1e3)
                sample(f"{tag}_fresh_wall_s", ours["fresh_wall"])
                sample(f"{tag}_fresh_datagrams_sent_per_status", ours["fresh_datagrams_sent"] / n)
                sample(f"{tag}_live_cpu_ms_per_status", ours["live_cpu"] / (n * args.rounds) * 1e3)
                sample(f"{tag}_live_wall_s_per_round", ours["live_wall"] / args.rounds)
    summary = {name: round(statistics.median(values), 4) for name, values in samples.items()}
    summary["bmcs"] = args.count
    summary["repeats"] = args.repeats
    print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
