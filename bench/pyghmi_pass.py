"""One power pass over a fleet with pyghmi's client (run as a child process by the harness).

    BENCH_BMC_PASSWORD=... python -m bench.pyghmi_pass --host 127.0.0.1 --port-base P \
        --count N --workers 8 [--op status|off]

Each BMC gets a fresh ``pyghmi.ipmi.command.Command`` (a full RMCP+ login) and an explicit
logout, from a pool of ``--workers`` threads (pyghmi is thread based). Prints one JSON line:
the power read per port (None on error) and the process's own wall/CPU for the pass.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time

from bench.child import Stopwatch, add_fleet_arguments, count_error, print_report


def one(host: str, port: int, username: str, password: str, op: str) -> tuple[bool | None, str]:
    from pyghmi.ipmi import command

    try:
        cmd = command.Command(bmc=host, port=port, userid=username, password=password)
        if op == "status":
            state = cmd.get_power()["powerstate"]
        else:
            # the same confirmation loop as every contender: act, then poll every 0.5 s
            cmd.set_power(op, wait=False)
            give_up = time.monotonic() + 30
            state = cmd.get_power()["powerstate"]
            while state != op and time.monotonic() < give_up:
                time.sleep(0.5)
                state = cmd.get_power()["powerstate"]
        cmd.ipmi_session.logout()
    except Exception as exc:  # pyghmi raises IpmiException, struct.error, socket errors...
        return None, type(exc).__name__
    return state == "on", ""


def main() -> None:
    parser = argparse.ArgumentParser()
    add_fleet_arguments(parser)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--op", choices=["status", "off"], default="status")
    args = parser.parse_args()
    password = os.environ["BENCH_BMC_PASSWORD"]
    ports = list(range(args.port_base, args.port_base + args.count))
    with (
        Stopwatch() as watch,
        concurrent.futures.ThreadPoolExecutor(args.workers) as pool,
    ):
        results = list(
            pool.map(lambda p: one(args.host, p, args.username, password, args.op), ports)
        )
    errors: dict[str, int] = {}
    for _, error in results:
        if error:
            count_error(errors, error)
    print_report(
        {
            "powers": [power for power, _ in results],
            "errors": errors,
            "inproc_wall_s": watch.wall_s,
            "inproc_cpu_s": watch.cpu_s,
        }
    )
    sys.stdout.flush()
    os._exit(0)  # pyghmi's keepalive thread would keep the process alive otherwise


if __name__ == "__main__":
    main()
