"""The powersync simulator in its own process, driven by the harness over stdin/stdout.

    BENCH_BMC_PASSWORD=... python -m bench.sim_host --count 1000 --port-base P

Prints ``{"ok": true, ...}`` once every BMC listens, then answers one JSON line per command
line on stdin:

    {"cmd": "reset_power"}                       every BMC back to the known pattern
    {"cmd": "powers"}                            {"powers": [true, false, ...]}
    {"cmd": "faults", "dead": [...], "latency_ms": 10, "loss": 0.05}   (absent = none)
    {"cmd": "stats"}                             the fleet's counters
    {"cmd": "requests"}                          {"requests": [...]}: datagrams answered per BMC

It exits when stdin closes. Running the fleet in a process of its own keeps its CPU out of
the contenders' numbers (and lets the harness read it from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import trio

from bench.child import add_fleet_arguments
from bench.fleets import expected_power
from ipmi.sim.faults import Faults
from ipmi.sim.fleet import Fleet, open_fleet


def handle(fleet: Fleet, request: dict[str, Any]) -> dict[str, Any]:
    command = request.get("cmd")
    if command == "reset_power":
        for bmc in fleet.bmcs:
            bmc.set_power(expected_power(bmc.index))
        return {"ok": True}
    if command == "powers":
        return {"ok": True, "powers": [bmc.power_on for bmc in fleet.bmcs]}
    if command == "faults":
        latency = float(request.get("latency_ms", 0.0)) / 1000
        faults = Faults(
            loss=float(request.get("loss", 0.0)),
            latency=latency,
            jitter=latency / 5,
            dead=frozenset(request.get("dead", ())),
        )
        return {"ok": True, "faults": fleet.set_faults(faults).to_json()}
    if command == "stats":
        return {"ok": True, "stats": fleet.statistics()}
    if command == "requests":
        return {"ok": True, "requests": [bmc.requests for bmc in fleet.bmcs]}
    return {"ok": False, "error": f"unknown command {command!r}"}


async def serve(args: argparse.Namespace) -> None:
    password = os.environ["BENCH_BMC_PASSWORD"]
    async with open_fleet(
        args.count,
        host=args.host,
        port_base=args.port_base,
        username=args.username,
        password=password,
        cipher_suites=(17, 3),
        seed=1,
    ) as fleet:
        for bmc in fleet.bmcs:
            bmc.set_power(expected_power(bmc.index))
        print(json.dumps({"ok": True, "count": len(fleet.bmcs)}), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        async with stdin:
            while True:
                chunk = await stdin.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        reply = handle(fleet, json.loads(line))
                    except (ValueError, TypeError) as exc:
                        reply = {"ok": False, "error": str(exc)}
                    print(json.dumps(reply), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    args = parser.parse_args()
    trio.run(serve, args)


if __name__ == "__main__":
    main()
