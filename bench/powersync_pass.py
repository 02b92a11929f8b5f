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
import os
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from bench.child import add_fleet_arguments, cpu_now, open_files_for_every_session, print_report
from bench.session_pass import SessionPass
from ipmi import IpmiError, RetryPolicy, open_bmc

STAT_FIELDS = ("sent", "received", "retransmits", "drops", "logins")


async def power_off_and_confirm(session: Any) -> bool:
    """Chassis Control off, then read the power every 0.5 s until the BMC reports off."""
    await session.set_power("off")
    while await session.get_power():  # noqa: ASYNC110 -- polling the BMC is the point
        await trio.sleep(0.5)
    return False


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


class IpmiPass(SessionPass):
    """IPMI sessions by ``open_bmc``, one per BMC, sharing one retry policy."""

    fields = STAT_FIELDS
    failures = (IpmiError,)

    def __init__(self, args: argparse.Namespace, password: str) -> None:
        super().__init__(
            args.count, workers=args.workers, deadline=args.deadline, keep=args.mode != "fresh"
        )
        self.args = args
        self.password = password
        self.retry = retry_policy(args)

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

    async def operate(self, session: Any) -> bool:
        if self.args.op == "off":
            return await power_off_and_confirm(session)
        return bool(await session.get_power())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fleet = IpmiPass(args, os.environ["BENCH_BMC_PASSWORD"])
    return {"cycles": await fleet.measure(args.cycles, args.pause, "stats")}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
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
    open_files_for_every_session()
    started_cpu = cpu_now()
    result = trio.run(run, args)
    result["startup_cpu_s"] = started_cpu
    print_report(result)


if __name__ == "__main__":
    main()
