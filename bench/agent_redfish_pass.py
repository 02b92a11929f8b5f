"""Sync cycles of the real agent over Redfish nodes, in a child process.

    BENCH_BMC_PASSWORD=... python -m bench.agent_redfish_pass --prepare --store T.sqlite \
        --fleet F.json                                   # once: a store of redfish nodes
    BENCH_BMC_PASSWORD=... python -m bench.agent_redfish_pass --store T.sqlite \
        --fleet F.json --session-mode persistent|per-cycle --cycles 2 --workers 8

As bench.agent_pass does for IPMI: a copy of the prepared store, then ``--cycles`` cycles
of ``SyncService.run_cycle`` with the agent's own drivers (``driver = "redfish"`` nodes,
Ironic's ``redfish_address`` / ``redfish_system_id`` / ``redfish_verify_ca``), with
``sync_jitter_window = 0``. ``F.json`` is bench.redfish_pass's fleet description. Prints one
JSON line: per cycle the wall time, the process CPU, the power state recorded per node, the
summary, and the requests, logins and TLS handshakes the servers saw (their control socket).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import trio

from bench.agent_pass import agent_config, node_name, sync_cycles
from bench.child import cpu_now, open_files_for_every_session, print_report
from bench.redfish_fleets import control_counters


def prepare(store_path: str, fleet: dict[str, Any], password: str) -> None:
    from store import open_store

    with open_store(store_path) as store:
        store.add_nodes(
            [
                {
                    "name": node_name(index),
                    "bmc_address": "127.0.0.1",
                    "bmc_port": int(url.rsplit(":", 1)[1]),
                    "bmc_username": fleet["username"],
                    "bmc_password": password,
                    "driver": "redfish",
                    "driver_info": {
                        "redfish_address": url,
                        "redfish_system_id": fleet["systems"][index],
                        "redfish_verify_ca": fleet["ca_file"],
                    },
                }
                for index, url in enumerate(fleet["urls"])
            ]
        )


async def cycles(args: argparse.Namespace, fleet: dict[str, Any], workdir: Path) -> Any:
    from agent.bmc.pool import open_bmc_pool
    from agent.drivers import configured_drivers
    from agent.storeio import AsyncStore
    from agent.sync.service import SyncService
    from store import open_store

    config, store_path = agent_config(args, workdir)  # the [ipmi] defaults: no IPMI node
    drivers = configured_drivers(config)
    with open_store(str(store_path)) as store:
        async with open_bmc_pool(
            drivers.open, keepalive_interval=drivers.keepalive_interval
        ) as pool:

            def pool_counters() -> dict[str, int]:
                counters = pool.statistics()
                return {"logins": counters.logins, "failures": counters.failures}

            service = SyncService(config, AsyncStore(store), pool, drivers=drivers)
            return await sync_cycles(
                service,
                store,
                len(fleet["urls"]),
                args,
                pool_counters,
                lambda: control_counters(fleet.get("control")),
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--fleet", required=True, help="the fleet's JSON description")
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--session-mode", choices=["persistent", "per-cycle"], default="persistent")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.5)
    parser.add_argument("--deadline", type=float, default=15.0)
    args = parser.parse_args()
    with open(args.fleet) as handle:
        fleet = json.load(handle)
    password = os.environ["BENCH_BMC_PASSWORD"]
    if args.prepare:
        prepare(args.store, fleet, password)
        return
    open_files_for_every_session()
    startup_cpu = cpu_now()
    with tempfile.TemporaryDirectory(prefix="bench-agent-redfish-") as workdir:
        report = trio.run(cycles, args, fleet, Path(workdir))
    print_report({"cycles": report, "startup_cpu_s": startup_cpu})


if __name__ == "__main__":
    main()
