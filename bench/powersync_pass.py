"""Power passes over a fleet with powersync's client (run as a child process by the harness).

    BENCH_BMC_PASSWORD=... python -m bench.powersync_pass --host 127.0.0.1 --port-base P \
        --count N --workers 8 --mode fresh|persistent --cycles K [--op status|off]

``fresh``: every cycle opens a new session per BMC (login, Get Chassis Status, Close Session),
like an agent configured with ``session_mode = "per-cycle"``. ``persistent``: the first cycle
logs in and the sessions stay open, so later cycles cost one round trip per BMC, like the
agent's default. ``--workers`` workers pull the BMCs in turn (the agent's
``sync_power_state_workers``), each BMC under a per-node deadline (``sync_node_timeout``).

Prints one JSON line: per cycle the wall time, the process CPU (user+sys), the power read per
BMC (None on failure), error counts and the summed client statistics (datagrams).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from ipmi import IpmiError, RetryPolicy, open_bmc

STAT_FIELDS = ("sent", "received", "retransmits", "drops", "logins")


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Cycle:
    def __init__(self, count: int) -> None:
        self.powers: list[bool | None] = [None] * count
        self.errors: dict[str, int] = {}
        self.stats = dict.fromkeys(STAT_FIELDS, 0)

    def fail(self, error: str) -> None:
        self.errors[error] = self.errors.get(error, 0) + 1

    def add_stats(self, session: Any) -> None:
        snapshot = session.statistics()
        for field in STAT_FIELDS:
            self.stats[field] += int(getattr(snapshot, field, 0))


async def power_off_and_confirm(session: Any) -> bool:
    """Chassis Control off, then read the power every 0.5 s until the BMC reports off."""
    await session.set_power("off")
    while await session.get_power():  # noqa: ASYNC110 -- polling the BMC is the point
        await trio.sleep(0.5)
    return False


async def read_power(session: Any) -> bool:
    return bool(await session.get_power())


def retry_policy(args: argparse.Namespace) -> RetryPolicy:
    """One policy for every session, as the agent shares one. The adaptive options are
    passed only when given, so that a client without them can run this too."""
    return RetryPolicy(
        first_timeout=args.retry_timeout,
        backoff=2.0,
        max_timeout=max(4.0, args.retry_timeout),
        retries=args.retries,
        **({} if args.adaptive is None else {"adaptive": args.adaptive}),
        **({} if args.min_timeout is None else {"min_timeout": args.min_timeout}),
    )


class Pass:
    """The fleet's sessions and a fixed set of workers, as the agent runs them: each worker
    pulls the next BMC, logs in when it has no session, and runs the operation under the
    per-node deadline. A session's context is entered by one task and left by another,
    which ``open_bmc`` allows (it holds no cancel scope across its yield)."""

    def __init__(self, args: argparse.Namespace, password: str) -> None:
        self.args = args
        self.password = password
        self.retry = retry_policy(args)
        self.sessions: dict[int, tuple[AbstractAsyncContextManager[Any], Any]] = {}
        self.operation: Callable[[Any], Awaitable[bool]] = (
            power_off_and_confirm if args.op == "off" else read_power
        )

    def connect(self, index: int) -> AbstractAsyncContextManager[Any]:
        args = self.args
        return open_bmc(
            args.host,
            args.port_base + index,
            username=args.username,
            password=self.password,
            cipher_suites=tuple(args.cipher_suites),
            retry=self.retry,
        )

    async def close(self, index: int, cycle: Cycle | None) -> None:
        context, session = self.sessions.pop(index)
        with trio.CancelScope(shield=True):
            await context.__aexit__(None, None, None)
        if cycle is not None:  # a fresh session's Close Session belongs to its cycle
            cycle.add_stats(session)

    async def one(self, index: int, cycle: Cycle) -> None:
        error = "deadline"
        with trio.move_on_after(self.args.deadline):
            try:
                if index not in self.sessions:
                    context = self.connect(index)
                    self.sessions[index] = (context, await context.__aenter__())
                cycle.powers[index] = await self.operation(self.sessions[index][1])
            except IpmiError as exc:
                error = type(exc).__name__
            else:
                if self.args.mode == "fresh":
                    await self.close(index, cycle)
                return
        cycle.fail(error)
        if index in self.sessions:
            await self.close(index, cycle)

    async def worker(self, queue: deque[int], cycle: Cycle) -> None:
        while queue:
            await self.one(queue.popleft(), cycle)

    async def cycle(self, cycle: Cycle) -> None:
        queue = deque(range(self.args.count))
        async with trio.open_nursery() as nursery:
            for _ in range(min(self.args.workers, self.args.count)):
                nursery.start_soon(self.worker, queue, cycle)

    def totals(self) -> dict[str, int]:
        """Statistics summed over the open (long-lived) sessions."""
        sums = Cycle(0)
        for _, session in self.sessions.values():
            sums.add_stats(session)
        return sums.stats


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fleet = Pass(args, os.environ["BENCH_BMC_PASSWORD"])
    report: list[dict[str, Any]] = []
    counted = fleet.totals()
    for number in range(args.cycles):
        if number:
            await trio.sleep(args.pause)
        cycle = Cycle(args.count)
        cpu0, wall0 = cpu_now(), time.monotonic()
        await fleet.cycle(cycle)
        wall, cpu = time.monotonic() - wall0, cpu_now() - cpu0
        # Long-lived sessions: their datagrams this cycle, read after the timed part.
        now = fleet.totals()
        for field in STAT_FIELDS:
            cycle.stats[field] += now[field] - counted.get(field, 0)
        counted = now
        report.append(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "powers": cycle.powers,
                "errors": cycle.errors,
                "stats": cycle.stats,
            }
        )
    for index in list(fleet.sessions):  # close the long-lived sessions
        await fleet.close(index, None)
    return {"cycles": report}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port-base", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--username", default="admin")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--mode", choices=["fresh", "persistent"], default="fresh")
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between cycles")
    parser.add_argument("--op", choices=["status", "off"], default="status")
    parser.add_argument("--deadline", type=float, default=15.0, help="per node, seconds")
    parser.add_argument("--retry-timeout", type=float, default=1.0)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument(
        "--adaptive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="RTT-adaptive first retransmission timeout for reads (default: the client's)",
    )
    parser.add_argument(
        "--min-timeout", type=float, default=None, help="floor of the adaptive timeout, s"
    )
    parser.add_argument("--cipher-suites", type=int, nargs="+", default=[17, 3])
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per live session
    started_cpu = cpu_now()
    result = trio.run(run, args)
    result["startup_cpu_s"] = started_cpu
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
