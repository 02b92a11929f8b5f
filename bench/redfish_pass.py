"""Redfish status passes by one client library (run as a child process by the harness).

    BENCH_BMC_PASSWORD=... python -m bench.redfish_pass --fleet F.json \
        --client powersync|sushy --mode live|percycle --cycles 2 --workers 8

``F.json`` names the fleet: ``{"urls": [...], "systems": [...], "ca_file": ...,
"username": ..., "control": SOCKET|null}`` (node i is ``systems[i]`` at ``urls[i]``).

- ``powersync``: ``redfish.open_redfish`` per node, ``--workers`` trio tasks pulling the
  nodes in turn (the agent's ``sync_power_state_workers``), each under a per-node deadline.
  ``live`` keeps the sessions open across cycles; ``percycle`` logs in and out every cycle.
- ``sushy``: the way Ironic's redfish power interface uses it: one ``sushy.Sushy`` per node,
  kept between calls, with its default auth (a Redfish session, else basic), and
  ``get_system(id).power_state`` per status, from ``--workers`` threads. Live only.

Prints one JSON line: per cycle the wall time, the process CPU (user+sys, every thread),
the power read per node (None on failure), error counts, and where the fleet has a control
socket the requests, logins and TLS handshakes the servers saw during that cycle (read
between cycles, outside the timed part).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import time
from collections import deque
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from bench.redfish_fleets import SERVER_FIELDS
from redfish import RedfishError, RedfishSession, open_redfish
from redfish.sim import send_control

CLIENT_FIELDS = ("requests", "retries", "logins", "tls_handshakes", "connections")


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_counters(fleet: dict[str, Any]) -> dict[str, int] | None:
    if not fleet.get("control"):
        return None
    statistics = send_control(fleet["control"], {"op": "status"})["statistics"]
    return {name: int(statistics[name]) for name in SERVER_FIELDS}


def difference(after: dict[str, int] | None, before: dict[str, int] | None) -> Any:
    if after is None or before is None:
        return None
    return {name: after[name] - before[name] for name in after}


class Cycle:
    def __init__(self, count: int) -> None:
        self.powers: list[bool | None] = [None] * count
        self.errors: dict[str, int] = {}
        self.client = dict.fromkeys(CLIENT_FIELDS, 0)

    def fail(self, error: str) -> None:
        self.errors[error] = self.errors.get(error, 0) + 1

    def add_stats(self, session: RedfishSession) -> None:
        snapshot = session.statistics()
        for name in CLIENT_FIELDS:
            self.client[name] += int(getattr(snapshot, name))


# ---------------------------------------------------------------- powersync's client


class PowersyncPass:
    """The fleet's sessions and ``--workers`` tasks, as the agent runs them. A session's
    context is entered by one task and left by another (``open_redfish`` allows it)."""

    def __init__(self, args: argparse.Namespace, fleet: dict[str, Any], password: str) -> None:
        self.args = args
        self.fleet = fleet
        self.password = password
        self.sessions: dict[int, tuple[AbstractAsyncContextManager[RedfishSession], Any]] = {}

    async def close(self, index: int, cycle: Cycle | None) -> None:
        context, session = self.sessions.pop(index)
        with trio.CancelScope(shield=True):
            await context.__aexit__(None, None, None)
        if cycle is not None:  # a per-cycle session's logout belongs to its cycle
            cycle.add_stats(session)

    async def one(self, index: int, cycle: Cycle) -> None:
        error = "deadline"
        with trio.move_on_after(self.args.deadline):
            try:
                if index not in self.sessions:
                    context = open_redfish(
                        self.fleet["urls"][index],
                        username=self.fleet["username"],
                        password=self.password,
                        system_id=self.fleet["systems"][index],
                        verify=self.fleet["ca_file"],
                    )
                    self.sessions[index] = (context, await context.__aenter__())
                cycle.powers[index] = await self.sessions[index][1].get_power()
            except RedfishError as exc:
                error = type(exc).__name__
            else:
                if self.args.mode == "percycle":
                    await self.close(index, cycle)
                return
        cycle.fail(error)
        if index in self.sessions:
            await self.close(index, cycle)

    async def worker(self, queue: deque[int], cycle: Cycle) -> None:
        while queue:
            await self.one(queue.popleft(), cycle)

    async def cycle(self, cycle: Cycle) -> None:
        queue = deque(range(len(self.fleet["urls"])))
        async with trio.open_nursery() as nursery:
            for _ in range(min(self.args.workers, len(queue))):
                nursery.start_soon(self.worker, queue, cycle)

    def live_totals(self) -> dict[str, int]:
        sums = Cycle(0)
        for _, session in self.sessions.values():
            sums.add_stats(session)
        return sums.client


async def powersync_cycles(
    args: argparse.Namespace, fleet: dict[str, Any], password: str
) -> list[dict[str, Any]]:
    runner = PowersyncPass(args, fleet, password)
    report: list[dict[str, Any]] = []
    counted = runner.live_totals()
    for number in range(args.cycles):
        if number:
            await trio.sleep(args.pause)
        cycle = Cycle(len(fleet["urls"]))
        before = server_counters(fleet)
        cpu0, wall0 = cpu_now(), time.monotonic()
        await runner.cycle(cycle)
        wall, cpu = time.monotonic() - wall0, cpu_now() - cpu0
        now = runner.live_totals()  # live sessions: their counts this cycle
        for name in CLIENT_FIELDS:
            cycle.client[name] += now[name] - counted[name]
        counted = now
        report.append(cycle_report(cycle, wall, cpu, difference(server_counters(fleet), before)))
    for index in list(runner.sessions):
        await runner.close(index, None)
    return report


def cycle_report(cycle: Cycle, wall: float, cpu: float, server: Any) -> dict[str, Any]:
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "powers": cycle.powers,
        "errors": cycle.errors,
        "client": cycle.client,
        "server": server,
    }


# ---------------------------------------------------------------- sushy (Ironic's way)


def sushy_cycles(
    args: argparse.Namespace, fleet: dict[str, Any], password: str
) -> list[dict[str, Any]]:
    import sushy  # type: ignore[import-untyped]
    from sushy import auth as sushy_auth

    count = len(fleet["urls"])
    connections: list[Any] = [None] * count
    logins: list[Any] = [None] * count

    def one(index: int) -> tuple[bool | None, str | None]:
        try:
            if connections[index] is None:
                # what Sushy() does without auth=; kept so that it can be closed at the end
                login = sushy_auth.SessionOrBasicAuth(username=fleet["username"], password=password)
                logins[index] = login
                connections[index] = sushy.Sushy(
                    fleet["urls"][index] + "/redfish/v1", auth=login, verify=fleet["ca_file"]
                )
            state = connections[index].get_system(fleet["systems"][index]).power_state
        except sushy.exceptions.SushyError as exc:
            return None, type(exc).__name__
        value = getattr(state, "value", state)
        return value in ("On", "PoweringOn"), None

    report: list[dict[str, Any]] = []
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        for number in range(args.cycles):
            if number:
                time.sleep(args.pause)
            cycle = Cycle(count)
            before = server_counters(fleet)
            cpu0, wall0 = cpu_now(), time.monotonic()
            outcomes = list(pool.map(one, range(count)))
            wall, cpu = time.monotonic() - wall0, cpu_now() - cpu0
            for index, (power, error) in enumerate(outcomes):
                cycle.powers[index] = power
                if error is not None:
                    cycle.fail(error)
            report.append(
                cycle_report(cycle, wall, cpu, difference(server_counters(fleet), before))
            )
            report[-1]["client"] = None  # sushy counts nothing of its own
    for login in logins:
        if login is not None:
            login.close()  # logs out (sushy ignores a failing logout with a warning)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", required=True, help="the fleet's JSON description")
    parser.add_argument("--client", choices=["powersync", "sushy"], required=True)
    parser.add_argument("--mode", choices=["live", "percycle"], default="live")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between cycles")
    parser.add_argument("--deadline", type=float, default=15.0, help="per node, seconds")
    args = parser.parse_args()
    with open(args.fleet) as handle:
        fleet = json.load(handle)
    password = os.environ["BENCH_BMC_PASSWORD"]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per live session
    startup_cpu = cpu_now()
    if args.client == "sushy":
        cycles = sushy_cycles(args, fleet, password)
    else:
        cycles = trio.run(powersync_cycles, args, fleet, password)
    print(json.dumps({"cycles": cycles, "startup_cpu_s": startup_cpu}), flush=True)


if __name__ == "__main__":
    main()
