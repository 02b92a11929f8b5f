"""The powersync Redfish simulator in its own process, for the benchmark's Redfish fleet.

    BENCH_BMC_PASSWORD=... python -m bench.redfish_sim_host --count 1000 --port-base P \
        --workdir D

Serves ``--count`` HTTPS Redfish services on consecutive ports of 127.0.0.1 (one CA in
``D/ca.pem``) with the control socket ``D/control.sock`` (``redfish.sim.control``: the
harness and the contenders read the request, login and TLS handshake counters there).
Prints one JSON line once every BMC listens, and exits when stdin closes. A process of
its own keeps the fleet's CPU out of the contenders' numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import trio

from bench.child import add_fleet_arguments
from bench.fleets import expected_power
from redfish.sim import ServiceOptions, open_fleet


async def serve(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    async with open_fleet(
        args.count,
        host=args.host,
        port_base=args.port_base,
        username=args.username,
        password=os.environ["BENCH_BMC_PASSWORD"],
        tls_dir=str(workdir),
        # sessions outlive a benchmark's pauses; each client holds one per BMC
        options=ServiceOptions(max_sessions=8, idle_timeout=600.0),
        seed=1,
        control_socket=str(workdir / "control.sock"),
    ) as fleet:
        for bmc in fleet.bmcs:
            bmc.set_power(expected_power(bmc.index))
        ready = {
            "ok": True,
            "count": len(fleet.bmcs),
            "ca_file": fleet.ca_file,
            "system": fleet.bmcs[0].system_path,
        }
        print(json.dumps(ready), flush=True)
        # stdin closing is the harness saying stop
        await trio.to_thread.run_sync(sys.stdin.read)


def main() -> None:
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    trio.run(serve, args)


if __name__ == "__main__":
    main()
