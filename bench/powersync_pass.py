"""Power passes over a fleet with powersync's client (run as a child process by the harness).

    BENCH_BMC_PASSWORD=... python -m bench.powersync_pass --host 127.0.0.1 --port-base P \
        --count N --workers 8 --mode fresh|persistent --cycles K [--op status|off]

``fresh``: every cycle opens a new session per BMC (login, Get Chassis Status, Close Session),
like an agent configured with ``session_mode = "per-cycle"``. ``persistent``: the first cycle
logs in and the sessions stay open, so later cycles cost one round trip per BMC, like the
agent's default. At most ``--workers`` BMC conversations are in flight (the agent's
``sync_power_state_workers``), each under a per-node deadline (``sync_node_timeout``).

Prints one JSON line: per cycle the wall time, the process CPU (user+sys), the power read per
BMC (None on failure), error counts and the summed client statistics (datagrams).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import trio

try:
    from ipmi import IpmiError, RetryPolicy, open_bmc
except ImportError:  # before the package exports its public names
    from ipmi.client import RetryPolicy, open_bmc  # type: ignore[no-redef]
    from ipmi.errors import IpmiError  # type: ignore[no-redef]

STAT_FIELDS = ("sent", "received", "retransmits", "drops", "logins")


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Cycle:
    def __init__(self, count: int) -> None:
        self.start = trio.Event()
        self.done = trio.Event()
        self.remaining = count
        self.powers: list[bool | None] = [None] * count
        self.errors: dict[str, int] = {}
        self.stats = dict.fromkeys(STAT_FIELDS, 0)

    def finish(self, index: int, power: bool | None, error: str = "") -> None:
        self.powers[index] = power
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()

    def add_stats(self, before: dict[str, int], after: dict[str, int]) -> None:
        for field in STAT_FIELDS:
            self.stats[field] += after[field] - before[field]


def stats_of(session: Any) -> dict[str, int]:
    snapshot = session.statistics()
    return {field: int(getattr(snapshot, field, 0)) for field in STAT_FIELDS}


ZERO = dict.fromkeys(STAT_FIELDS, 0)


async def power_off_and_confirm(session: Any) -> bool:
    """Chassis Control off, then read the power every 0.5 s until the BMC reports off."""
    await session.set_power("off")
    while await session.get_power():  # noqa: ASYNC110 -- polling the BMC is the point
        await trio.sleep(0.5)
    return False


async def run_node(
    args: argparse.Namespace,
    index: int,
    cycles: list[Cycle],
    limiter: trio.CapacityLimiter,
    password: str,
) -> None:
    port = args.port_base + index
    retry = RetryPolicy(
        first_timeout=args.retry_timeout,
        backoff=2.0,
        max_timeout=max(4.0, args.retry_timeout),
        retries=args.retries,
        **({} if args.adaptive is None else {"adaptive": args.adaptive}),
        **({} if args.min_timeout is None else {"min_timeout": args.min_timeout}),
    )

    def connect() -> Any:
        return open_bmc(
            args.host,
            port,
            username=args.username,
            password=password,
            cipher_suites=tuple(args.cipher_suites),
            retry=retry,
        )

    operation: Callable[[Any], Any]
    if args.op == "off":
        operation = power_off_and_confirm
    else:

        async def operation(session: Any) -> bool:
            return bool(await session.get_power())

    # A session's whole life is inside one cancel scope (its nursery must nest inside), whose
    # deadline is moved to "now + per-node deadline" for each cycle's work and lifted while
    # the session waits for the next cycle. The limiter is held only while working.
    number = 0
    while number < len(cycles):
        cycle = cycles[number]
        await cycle.start.wait()
        await limiter.acquire()
        holding, finished, error = True, False, "deadline"
        session: Any = None
        counted = dict(ZERO)
        with trio.CancelScope(deadline=trio.current_time() + args.deadline) as life:
            try:
                async with connect() as session:
                    while True:
                        power = await operation(session)
                        now_stats = stats_of(session)
                        cycle.add_stats(counted, now_stats)
                        counted = now_stats
                        cycle.finish(index, power)
                        finished = True
                        limiter.release()
                        holding = False
                        number += 1
                        if args.mode == "fresh" or number == len(cycles):
                            break
                        life.deadline = math.inf
                        cycle = cycles[number]
                        await cycle.start.wait()
                        await limiter.acquire()
                        holding, finished = True, False
                        life.deadline = trio.current_time() + args.deadline
            except IpmiError as exc:
                error = type(exc).__name__
        if session is not None and args.mode == "fresh":
            # a fresh session's Close Session belongs to its cycle; a long-lived one's to
            # the process's teardown, after the last measured cycle
            cycle.add_stats(counted, stats_of(session))
        if holding:
            limiter.release()
        if not finished:
            cycle.finish(index, None, error)
            number += 1


async def run(args: argparse.Namespace) -> dict[str, Any]:
    password = os.environ["BENCH_BMC_PASSWORD"]
    cycles = [Cycle(args.count) for _ in range(args.cycles)]
    limiter = trio.CapacityLimiter(args.workers)
    report: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        for index in range(args.count):
            nursery.start_soon(run_node, args, index, cycles, limiter, password)
        await trio.lowlevel.checkpoint()
        for number, cycle in enumerate(cycles):
            if number:
                await trio.sleep(args.pause)
            cpu0, wall0 = cpu_now(), time.monotonic()
            cycle.start.set()
            if cycle.remaining:
                await cycle.done.wait()
            wall, cpu = time.monotonic() - wall0, cpu_now() - cpu0
            report.append(
                {
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "powers": cycle.powers,
                    "errors": cycle.errors,
                    "stats": cycle.stats,
                }
            )
        nursery.cancel_scope.cancel()  # close the long-lived sessions
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
