"""``powersync run`` with timers: the daemon an operator runs, recording every sync cycle.

    python -m bench.site_agent --record CYCLES.jsonl -- --config agent.toml run

Runs ``agent.cli.main.main(ARGS)`` in this process (the same parser, config, store, pool,
membership and sync loop as ``powersync --config F run``) after wrapping two methods without
changing what they do:

- ``AsyncStore.run``, through which every store call of the daemon goes: the time each call
  spends inside the store (in the store's worker thread: the SQL, the driver's adaptation,
  the round trips to the server, the commit; not the wait for the thread) is added to a
  total per store method;
- ``SyncService.run_cycle``: one JSON line when a sync cycle starts (``"event": "start"``)
  and one when it ends (``"event": "cycle"``): wall-clock start and end, process CPU
  (user + sys, every thread) at both, the store time and calls during the cycle, per method,
  the cycle's node counts, and the BMC pool's logins so far.

The harness (bench.site) reads the lines as they come; what the daemon logs goes to stderr
as usual.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

from agent.storeio import AsyncStore
from agent.sync.report import CycleReport
from agent.sync.service import SyncService

R = TypeVar("R")


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StoreTimes:
    """Seconds and calls per store method, added to from the store's worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, method: str, seconds: float) -> None:
        with self._lock:
            self.seconds[method] = self.seconds.get(method, 0.0) + seconds
            self.calls[method] = self.calls.get(method, 0) + 1

    def snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        with self._lock:
            return dict(self.seconds), dict(self.calls)


def since(
    before: tuple[dict[str, float], dict[str, int]], after: tuple[dict[str, float], dict[str, int]]
) -> dict[str, Any]:
    """Store time and calls between two snapshots, per method and in total."""
    seconds = {m: s - before[0].get(m, 0.0) for m, s in after[0].items()}
    calls = {m: c - before[1].get(m, 0) for m, c in after[1].items()}
    active = sorted(m for m, c in calls.items() if c)
    return {
        "store_s": sum(seconds[m] for m in active),
        "store_calls": sum(calls[m] for m in active),
        "store_by_method": {m: {"s": round(seconds[m], 6), "calls": calls[m]} for m in active},
    }


def install(record: IO[str]) -> StoreTimes:
    """Wrap AsyncStore.run and SyncService.run_cycle; cycle lines go to ``record``."""
    times = StoreTimes()
    original_run = AsyncStore.run
    original_cycle = SyncService.run_cycle

    async def timed_run(self: AsyncStore, function: Callable[..., R], *args: Any, **kw: Any) -> R:
        method = getattr(function, "__name__", "call")

        def timed() -> R:
            started = time.perf_counter()
            try:
                return function(*args, **kw)
            finally:
                times.add(method, time.perf_counter() - started)

        return await original_run(self, timed)

    def write(line: dict[str, Any]) -> None:
        record.write(json.dumps(line) + "\n")
        record.flush()

    async def timed_cycle(self: SyncService) -> CycleReport:
        before, cpu0, wall0 = times.snapshot(), process_cpu_s(), time.time()
        write({"event": "start", "at": wall0, "cpu_s": cpu0})
        report = await original_cycle(self)
        wall1, cpu1 = time.time(), process_cpu_s()
        summary = report.summary()
        write(
            {
                "event": "cycle",
                "cycle": summary["cycle"],
                "started": wall0,
                "ended": wall1,
                "wall_s": wall1 - wall0,
                "duration_s": summary["duration"],  # the daemon's own measure of the pass
                "cpu_start_s": cpu0,
                "cpu_end_s": cpu1,
                "nodes": summary["nodes"],
                "ok": summary["ok"],
                "failed": summary["failed"],
                "changed": summary["changed"],
                "logins": self.pool.statistics().logins,
                **since(before, times.snapshot()),
            }
        )
        return report

    AsyncStore.run = timed_run  # type: ignore[method-assign]
    SyncService.run_cycle = timed_cycle  # type: ignore[method-assign]
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.site_agent")
    parser.add_argument("--record", required=True, help="JSON lines, one per cycle start/end")
    parser.add_argument("daemon_args", nargs=argparse.REMAINDER, help="-- powersync's arguments")
    args = parser.parse_args(argv)
    daemon_args = args.daemon_args[1:] if args.daemon_args[:1] == ["--"] else args.daemon_args
    from agent.cli.main import main as powersync_main

    with open(args.record, "a", encoding="utf-8") as record:
        install(record)
        return powersync_main(daemon_args)


if __name__ == "__main__":
    sys.exit(main())
