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
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from bench.child import Stopwatch, cpu_now, difference, open_files_for_every_session, print_report
from bench.redfish_fleets import control_counters
from bench.session_pass import Cycle, SessionPass
from redfish import RedfishError, RedfishSession, open_redfish

CLIENT_FIELDS = ("requests", "retries", "logins", "tls_handshakes", "connections")


def server_counters(fleet: dict[str, Any]) -> dict[str, int] | None:
    return control_counters(fleet.get("control"))


# ---------------------------------------------------------------- powersync's client


class RedfishPass(SessionPass):
    """Redfish sessions by ``open_redfish``, one per node."""

    fields = CLIENT_FIELDS
    failures = (RedfishError,)

    def __init__(self, args: argparse.Namespace, fleet: dict[str, Any], password: str) -> None:
        super().__init__(
            len(fleet["urls"]),
            workers=args.workers,
            deadline=args.deadline,
            keep=args.mode != "percycle",
        )
        self.fleet = fleet
        self.password = password

    def connect(self, index: int) -> AbstractAsyncContextManager[RedfishSession]:
        return open_redfish(
            self.fleet["urls"][index],
            username=self.fleet["username"],
            password=self.password,
            system_id=self.fleet["systems"][index],
            verify=self.fleet["ca_file"],
        )

    async def operate(self, session: RedfishSession) -> bool | None:
        return await session.get_power()


async def powersync_cycles(
    args: argparse.Namespace, fleet: dict[str, Any], password: str
) -> list[dict[str, Any]]:
    runner = RedfishPass(args, fleet, password)
    return await runner.measure(args.cycles, args.pause, "client", lambda: server_counters(fleet))


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
            cycle = Cycle(count, ())
            before = server_counters(fleet)
            with Stopwatch() as watch:
                outcomes = list(pool.map(one, range(count)))
            for index, (power, error) in enumerate(outcomes):
                cycle.powers[index] = power
                if error is not None:
                    cycle.fail(error)
            report.append(cycle.entry(watch, "client"))
            report[-1]["client"] = None  # sushy counts nothing of its own
            report[-1]["server"] = difference(server_counters(fleet), before)
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
    open_files_for_every_session()
    startup_cpu = cpu_now()
    if args.client == "sushy":
        cycles = sushy_cycles(args, fleet, password)
    else:
        cycles = trio.run(powersync_cycles, args, fleet, password)
    print_report({"cycles": cycles, "startup_cpu_s": startup_cpu})


if __name__ == "__main__":
    main()
