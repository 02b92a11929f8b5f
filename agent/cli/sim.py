"""``powersync sim``: serve a fleet of simulated BMCs until SIGINT/SIGTERM.

    powersync sim --nodes 100 --port-base 20000 --write-inventory nodes.toml
    powersync node import nodes.toml

Without --password-file/--password-env a random password is generated; it is never printed,
only written to the 0600 inventory file, so --write-inventory is then required.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from agent.config.secrets import read_secret_env, read_secret_file
from agent.errors import ConfigError
from ipmi.errors import IpmiError
from ipmi.sim import (
    Faults,
    PowerTiming,
    SimBmc,
    open_fleet,
    parse_selection,
    write_inventory,
)
from ipmi.sim.faults import FLOAT_FIELDS, INDEX_SET_FIELDS

ALLOWED_SUITES = (3, 17)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="serve simulated IPMI v2.0 BMCs (tests, demos, benchmarks)",
        description="Serve N simulated BMCs, each on its own UDP port, until interrupted. "
        "BMC i (0-based) listens on PORT_BASE+i and is named sim-NNNN (i, zero-padded). "
        "Fault selections are 0-based indexes and ranges, e.g. 0,3,10-19.",
    )
    parser.add_argument("--nodes", type=int, required=True, metavar="N", help="number of BMCs")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback only)")
    parser.add_argument(
        "--port-base",
        type=int,
        required=True,
        metavar="P",
        help="UDP port of the first BMC (0: any free port for each)",
    )
    parser.add_argument(
        "--allow-any-address",
        action="store_true",
        help="allow a non-loopback --host (simulated BMCs on a real network)",
    )
    parser.add_argument("--username", default="admin")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password-file", metavar="FILE", help="BMC password (first line, 0600)")
    secret.add_argument("--password-env", metavar="VAR", help="environment variable holding it")
    parser.add_argument(
        "--cipher-suites",
        default="17,3",
        metavar="LIST",
        help="cipher suites the BMCs accept (3 and/or 17; default 17,3)",
    )
    parser.add_argument(
        "--write-inventory",
        metavar="FILE",
        help="write [[nodes]] for `powersync node import` (mode 0600)",
    )
    parser.add_argument(
        "--control-socket",
        metavar="PATH",
        help="serve the JSON-line control interface on this Unix socket",
    )
    parser.add_argument("--power-on", action="store_true", help="systems start powered on")
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=4,
        metavar="N",
        help="concurrent sessions per BMC (default 4)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="session idle timeout in seconds (default 60)",
    )
    timing = parser.add_argument_group("power transitions (seconds, default 0)")
    for name in ("power-on-delay", "power-off-delay", "soft-off-delay", "cycle-off-time"):
        timing.add_argument(f"--{name}", type=float, default=0.0, metavar="S")
    faults = parser.add_argument_group("faults (changeable at run time via --control-socket)")
    faults.add_argument(
        "--loss",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a datagram to a BMC is lost on the way in",
    )
    faults.add_argument(
        "--answer-loss",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a BMC's answer is lost on the way back",
    )
    faults.add_argument("--latency", type=float, default=0.0, metavar="S")
    faults.add_argument("--jitter", type=float, default=0.0, metavar="S")
    for name, text in (
        ("dead", "BMCs that never answer"),
        ("hanging", "BMCs that log in, then ignore every request"),
        ("wrong-password", "BMCs configured with another password"),
        ("flapping", "BMCs whose power toggles every --flap-interval"),
        ("slow", "BMCs answering --slow-delay late"),
        ("ignore-soft-off", "BMCs whose OS ignores soft power off"),
    ):
        faults.add_argument(f"--{name}", default="", metavar="SEL", help=text)
    faults.add_argument("--flap-interval", type=float, default=5.0, metavar="S")
    faults.add_argument("--slow-delay", type=float, default=2.0, metavar="S")
    faults.add_argument("--seed", type=int, default=None, help="seed for loss and jitter dice")
    parser.set_defaults(handler=run_sim)


def _cipher_suites(text: str) -> tuple[int, ...]:
    try:
        suites = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--cipher-suites {text!r}: use a list like 17,3") from None
    if not suites or any(suite not in ALLOWED_SUITES for suite in suites):
        raise ConfigError(f"--cipher-suites {text!r}: only 3 and 17 are allowed")
    return suites


def _faults(args: argparse.Namespace) -> Faults:
    values: dict[str, Any] = {}
    for option in INDEX_SET_FIELDS:
        text = getattr(args, option)
        try:
            indexes = parse_selection(text)
        except ValueError as exc:
            raise ConfigError(f"--{option.replace('_', '-')}: {exc}") from None
        outside = sorted(index for index in indexes if index >= args.nodes)
        if outside:
            raise ConfigError(
                f"--{option.replace('_', '-')}: BMC {outside[0]} does not exist "
                f"(indexes are 0..{args.nodes - 1})"
            )
        values[option] = indexes
    for option in FLOAT_FIELDS:
        values[option] = getattr(args, option)
    try:
        return Faults(**values)
    except ValueError as exc:
        raise ConfigError(f"fault options: {exc}") from None


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        return read_secret_file(args.password_file, what="BMC password")
    if args.password_env:
        return read_secret_env(args.password_env, what="BMC password")
    if not args.write_inventory:
        raise ConfigError(
            "sim: give --password-file or --password-env, or --write-inventory "
            "(a generated password is then written there, and nowhere else)"
        )
    return secrets.token_urlsafe(12)


def run_sim(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        raise ConfigError("--nodes must be at least 1")
    if not 0 <= args.port_base <= 65535:
        raise ConfigError("--port-base must be a UDP port (0 = any free port)")
    suites = _cipher_suites(args.cipher_suites)
    faults = _faults(args)
    try:
        timing = PowerTiming(
            args.power_on_delay, args.power_off_delay, args.soft_off_delay, args.cycle_off_time
        )
    except ValueError as exc:
        raise ConfigError(f"power transition options: {exc}") from None
    if args.max_sessions < 1 or not args.idle_timeout > 0:
        raise ConfigError("--max-sessions must be >= 1 and --idle-timeout > 0")
    password = _password(args)
    if args.password_file:
        args.password_file = os.path.abspath(args.password_file)
    try:
        trio.run(_serve, args, password, suites, faults, timing)
    except (IpmiError, OSError) as exc:
        raise ConfigError(f"sim: {exc}") from None
    return 0


def _where_free_ports_are(args: argparse.Namespace, bmcs: Sequence[SimBmc]) -> str:
    """What to print for ports the kernel chose (--port-base 0)."""
    if args.write_inventory:
        return "(any free ports, see the inventory)"
    if args.control_socket:
        return "(any free ports, see the control socket's list)"
    shown = ", ".join(str(bmc.port) for bmc in bmcs[:20])
    return f"({shown}, ...)" if len(bmcs) > 20 else f"({shown})"


async def _serve(
    args: argparse.Namespace,
    password: str,
    suites: tuple[int, ...],
    faults: Faults,
    timing: PowerTiming,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_fleet(
            args.nodes,
            host=args.host,
            port_base=args.port_base,
            username=args.username,
            password=password,
            cipher_suites=suites,
            faults=faults,
            timing=timing,
            power_on=args.power_on,
            max_sessions=args.max_sessions,
            idle_timeout=args.idle_timeout,
            seed=args.seed,
            allow_any_address=args.allow_any_address,
            control_socket=args.control_socket,
        ) as fleet:
            if args.write_inventory:
                # A password given as a file stays in that one file: the inventory names it.
                password_file = args.password_file
                write_inventory(
                    args.write_inventory,
                    fleet,
                    args.username,
                    None if password_file else password,
                    password_file=password_file,
                    cipher_suites=suites,
                )
            first, last = fleet.bmcs[0], fleet.bmcs[-1]
            ports = f"{first.port}" if first is last else f"{first.port}-{last.port}"
            if args.port_base == 0:
                ports = _where_free_ports_are(args, fleet.bmcs)
            line = f"powersync sim: serving {len(fleet.bmcs)} BMCs on {args.host} ports {ports}"
            if args.write_inventory:
                line += f"; inventory {args.write_inventory}"
            if args.control_socket:
                line += f"; control {args.control_socket}"
            print(line, flush=True)
            async for signum in signals:
                print(f"powersync sim: {signal.Signals(signum).name}, stopping", file=sys.stderr)
                break
