"""Sync cycles of the real agent (``agent.sync.service.SyncService``) in a child process.

    BENCH_BMC_PASSWORD=... python -m bench.agent_pass --prepare --store T.sqlite \
        --host 127.0.0.1 --port-base P --count N        # once: a store holding the fleet
    BENCH_BMC_PASSWORD=... python -m bench.agent_pass --store T.sqlite ... \
        --session-mode persistent|per-cycle --cycles 2 --workers 8

Each run copies the prepared store, then runs ``--cycles`` sync cycles exactly as
``powersync sync --once`` / the daemon do (store read, per-node deadline, policy, one batch
write per cycle), with ``sync_jitter_window = 0`` so a cycle's time is its work, not its
spreading. Prints one JSON line: per cycle the wall time, process CPU, the power state the
agent recorded per node, and the cycle summary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from bench.child import (
    Stopwatch,
    add_fleet_arguments,
    count_error,
    cpu_now,
    difference,
    open_files_for_every_session,
    print_report,
)

CONFIG = """
[conductor]
sync_power_state_interval = 0
sync_power_state_workers = {workers}
sync_node_timeout = {deadline}
sync_jitter_window = 0

[ipmi]
session_mode = "{session_mode}"
retry_timeout = {retry_timeout}
adaptive_retry = {adaptive}
cipher_suites = [{suites}]

[store]
backend = "sqlite"
path = "{store}"

[nova]
send_power_notifications = false
"""


def print_memory_top(limit: int = 25) -> None:
    """Where the live memory is (run with BENCH_TRACEMALLOC=1 and python -X tracemalloc)."""
    import sys
    import tracemalloc

    snapshot = tracemalloc.take_snapshot()
    traced, _ = tracemalloc.get_traced_memory()
    print(f"traced by tracemalloc: {traced / 1024 / 1024:.1f} MB", file=sys.stderr)
    by_file: dict[str, int] = {}
    for stat in snapshot.statistics("filename"):
        name = stat.traceback[0].filename
        key = next(
            (k for k in ("trio", "agent", "ipmi", "store", "cryptography") if k in name), "other"
        )
        by_file[key] = by_file.get(key, 0) + stat.size
    for key, size in sorted(by_file.items(), key=lambda item: -item[1]):
        print(f"{size / 1024 / 1024:8.1f} MB in {key}", file=sys.stderr)
    for stat in snapshot.statistics("lineno")[:limit]:
        print(
            f"{stat.size / 1024 / 1024:8.1f} MB {stat.count:8d} {stat.traceback}", file=sys.stderr
        )


def node_name(index: int) -> str:
    return f"bench-{index:05d}"


def prepare(args: argparse.Namespace, password: str) -> None:
    from store import open_store

    with open_store(args.store) as store:
        for index in range(args.count):
            store.add_node(
                name=node_name(index),
                bmc_address=args.host,
                bmc_port=args.port_base + index,
                bmc_username=args.username,
                bmc_password=password,
                cipher_suites=tuple(args.cipher_suites),
            )


def agent_config(
    args: argparse.Namespace,
    workdir: Path,
    *,
    retry_timeout: float = 1.0,
    adaptive: bool = True,
    cipher_suites: Sequence[int] = (17, 3),
) -> tuple[Any, Path]:
    """The agent's configuration (``args``: the store, workers, deadline, session mode) over
    a copy of the prepared store, and that copy's path."""
    from agent.config.options import load_config

    store_path = workdir / "agent.sqlite"
    shutil.copyfile(args.store, store_path)
    store_path.chmod(0o600)
    config_path = workdir / "agent.toml"
    config_path.write_text(
        CONFIG.format(
            workers=args.workers,
            deadline=args.deadline,
            session_mode=args.session_mode,
            retry_timeout=retry_timeout,
            adaptive="true" if adaptive else "false",
            suites=", ".join(str(s) for s in cipher_suites),
            store=store_path,
        )
    )
    return load_config(str(config_path), environ={}), store_path


async def sync_cycles(
    service: Any,
    store: Any,
    count: int,
    args: argparse.Namespace,
    pool_counters: Callable[[], dict[str, int]],
    server: Callable[[], dict[str, int] | None] | None = None,
) -> list[dict[str, Any]]:
    """``args.cycles`` timed sync cycles, ``args.pause`` apart: per cycle the power the agent
    recorded per node (read from the store after the timed part), its summary and errors,
    the servers' counters (``server``, around the timed part) and the pool's."""
    from agent.sync.daemon import freeze_startup_heap
    from store import POWER_ON

    freeze_startup_heap()  # as the daemon does before its first cycle
    report: list[dict[str, Any]] = []
    for number in range(args.cycles):
        if number:
            await trio.sleep(args.pause)
        before = None if server is None else server()
        with Stopwatch() as watch:
            result = await service.run_cycle()
        served = None if server is None else difference(server(), before)
        recorded = {node.name: node.power_state for node in store.list_nodes()}
        states = [recorded.get(node_name(i)) for i in range(count)]
        errors: dict[str, int] = {}
        for node_result in result.results:
            if node_result.error:
                count_error(errors, node_result.error.split(":", 1)[0][:60])
        report.append(
            {
                "wall_s": watch.wall_s,
                "cpu_s": watch.cpu_s,
                "powers": [None if s is None else s == POWER_ON for s in states],
                "summary": result.summary(),
                "errors": errors,
            }
        )
        if server is not None:
            report[-1]["server"] = served
        report[-1]["pool"] = pool_counters()
    return report


async def cycles(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from agent.bmc.pool import open_bmc_pool
    from agent.drivers.ipmi import IpmiDriver
    from agent.storeio import AsyncStore
    from agent.sync.service import SyncService
    from store import open_store

    config, store_path = agent_config(
        args,
        workdir,
        retry_timeout=args.retry_timeout,
        adaptive=args.adaptive,
        cipher_suites=args.cipher_suites,
    )
    ipmi = config.ipmi
    opener = IpmiDriver(ipmi).open_session
    with open_store(str(store_path)) as store:
        async with open_bmc_pool(opener, keepalive_interval=ipmi.keepalive_interval) as pool:

            def pool_counters() -> dict[str, int]:
                counters = pool.statistics()
                return {
                    "requests": counters.requests,
                    "logins": counters.logins,
                    "retransmits": counters.retransmits,
                    "failures": counters.failures,
                }

            service = SyncService(config, AsyncStore(store), pool)
            report = await sync_cycles(service, store, args.count, args, pool_counters)
            if os.environ.get("BENCH_TRACEMALLOC"):
                print_memory_top()  # after the last cycle, its sessions still open
    return {"cycles": report}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--prepare", action="store_true")
    add_fleet_arguments(parser)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--session-mode", choices=["persistent", "per-cycle"], default="persistent")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.5)
    parser.add_argument("--deadline", type=float, default=15.0)
    parser.add_argument("--retry-timeout", type=float, default=1.0, help="first retransmit, s")
    parser.add_argument("--cipher-suites", type=int, nargs="+", default=[17, 3])
    parser.add_argument(
        "--adaptive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="RTT-adaptive retransmission of reads ([ipmi] adaptive_retry)",
    )
    args = parser.parse_args()
    password = os.environ["BENCH_BMC_PASSWORD"]
    if args.prepare:
        prepare(args, password)
        return
    open_files_for_every_session()
    startup_cpu = cpu_now()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as workdir:
        result = trio.run(cycles, args, Path(workdir))
    result["startup_cpu_s"] = startup_cpu
    print_report(result)


if __name__ == "__main__":
    main()
