"""Store measurements for docs/store.md (a script, not a test: nothing here asserts timing).

    .venv/bin/python -m tests.store.bench_store [--nodes 10000] [--repeat 3] [--dir DIR]
        [--backends sqlite,json,postgresql] [--dsn DSN]

PostgreSQL: the database at --dsn (it must be empty), or else a throw-away local server
started like the tests do (tests/store/pgserver.py: fsync off, so its numbers show the
protocol and query cost, not the disk).

For each backend: import N nodes in one batch, then time one sync cycle's observations for
all N nodes written with one apply() batch, in two shapes:
  steady   every node observed unchanged (power_state, last_seen_at, sync_failures)
  storm    every node changed: fields + a history row + a Nova outbox row (site power event)
and report the file size per 1,000 nodes (inventory only, and after the storms) and the time
to open the file again afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from store import HistoryRecord, NodeChange, Store, open_store
from tests.store.pgserver import PgServer, find_bindir


@contextmanager
def local_postgres() -> Iterator[str]:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL not installed: pass --dsn or --backends sqlite,json")
    server = PgServer(bindir)
    server.init()
    server.start()
    try:
        with server.database() as dsn:
            yield dsn
    finally:
        server.cleanup()


BACKENDS = ("sqlite", "json", "postgresql")


def file_size(path: str) -> int:
    return sum(
        os.path.getsize(path + suffix)
        for suffix in ("", "-wal", "-shm")
        if os.path.exists(path + suffix)
    )


def timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def measure(
    backend: str, directory: str, count: int, repeat: int, dsn: str | None = None
) -> dict[str, float]:
    path = dsn if backend == "postgresql" and dsn else os.path.join(directory, f"bench.{backend}")
    specs = [
        {
            "name": f"node-{i:05d}",
            "bmc_address": "127.0.0.1",
            "bmc_port": 20000 + i % 40000,
            "bmc_username": "admin",
            "bmc_password": "password-1234",
            "instance_uuid": str(uuid.UUID(int=i + 1)),
        }
        for i in range(count)
    ]
    result: dict[str, float] = {}
    store: Store
    with open_store(path, backend) as store:
        result["import_s"] = timed(lambda: store.add_nodes(specs))
    if backend != "postgresql":
        result["inventory_bytes_per_1000"] = file_size(path) / count * 1000
    with open_store(path, backend) as store:
        uuids = [node.uuid for node in store.list_nodes()]
        result["list_nodes_s"] = timed(store.list_nodes)
        now = time.time()
        steady = [
            NodeChange(u, {"power_state": "power on", "last_seen_at": now, "sync_failures": 0})
            for u in uuids
        ]
        result["apply_steady_s"] = statistics.median(
            timed(lambda: store.apply(steady)) for _ in range(repeat)
        )
        storms = []
        for round_number in range(repeat):
            state = "power off" if round_number % 2 == 0 else "power on"
            storm = [
                NodeChange(
                    u,
                    {"power_state": state, "last_seen_at": now, "sync_failures": 0},
                    HistoryRecord("power on", state, "sync", "hardware state changed"),
                    state,
                )
                for u in uuids
            ]
            storms.append(timed(lambda storm=storm: store.apply(storm)))
        result["apply_storm_s"] = statistics.median(storms)
        result["due_notifications_s"] = timed(lambda: store.due_notifications(limit=count))
    if backend != "postgresql":
        result["after_storms_bytes_per_1000"] = file_size(path) / count * 1000
    # A cold open: SQLite runs its quick_check, JSON parses and validates every node.
    result["reopen_s"] = timed(lambda: open_store(path, backend).close())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to create the files (default: tmp)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--dsn", default=None, help="an empty PostgreSQL database")
    args = parser.parse_args()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory(dir=args.dir) as directory, ExitStack() as stack:
        dsn = args.dsn
        if "postgresql" in backends and dsn is None:
            dsn = stack.enter_context(local_postgres())
        for backend in backends:
            result = measure(backend, directory, args.nodes, args.repeat, dsn)
            print(
                f"{backend:6} nodes={args.nodes} "
                + " ".join(
                    f"{key}={value:.3f}" if key.endswith("_s") else f"{key}={value:,.0f}"
                    for key, value in result.items()
                )
            )


if __name__ == "__main__":
    main()
