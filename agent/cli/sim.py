"""``powersync sim``: serve a fleet of simulated BMCs until SIGINT/SIGTERM.

    powersync sim --nodes 100 --port-base 20000 --write-inventory nodes.toml
    powersync sim --driver redfish --nodes 10 --port-base 21000 --password-file pw ...
    powersync sim --driver ipmi,redfish --nodes 10 --port-base 20000 --write-inventory m.toml
    powersync node import nodes.toml

One index space for the whole fleet: BMC i is sim-NNNN on PORT_BASE+i. In a mixed fleet the
first BMCs speak IPMI (UDP) and the last --redfish-nodes (default half) Redfish (HTTPS), so
fault selections, names and ports never overlap. The Redfish part lives in sim_redfish.py.

Without --password-file/--password-env a random password is generated; it is never printed,
only written to the 0600 inventory file, so --write-inventory is then required.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import trio

from agent.cli import sim_redfish
from agent.cli.common import integer_argument
from agent.config.reader import ascii_integer
from agent.config.secrets import read_secret_env, read_secret_file
from agent.errors import ConfigError
from ipmi.errors import IpmiError
from ipmi.sim import (
    Faults,
    PowerTiming,
    SimBmc,
    open_fleet,
    parse_selection,
    render_descriptions,
)
from ipmi.sim import Fleet as IpmiFleet
from ipmi.sim.faults import FLOAT_FIELDS, INDEX_SET_FIELDS
from ipmi.sim.inventory import write_private_text
from redfish.errors import RedfishError
from redfish.sim import Faults as RedfishFaults
from redfish.sim import Fleet as RedfishFleet
from redfish.sim import SimService

ALLOWED_SUITES = (3, 17)
DRIVERS: Final = {"ipmi": ("ipmi",), "redfish": ("redfish",), "ipmi,redfish": ("ipmi", "redfish")}
REDFISH_CONTROL_SUFFIX: Final = ".redfish"  # a mixed fleet's second control socket


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="serve simulated IPMI v2.0 and/or Redfish BMCs (tests, demos, benchmarks)",
        description="Serve N simulated BMCs, each on its own port, until interrupted. "
        "BMC i (0-based) listens on PORT_BASE+i and is named sim-NNNN (i, zero-padded). "
        "Fault selections are 0-based indexes and ranges, e.g. 0,3,10-19. "
        "--driver redfish serves Redfish over HTTPS (TCP) with a certificate made at start "
        "(the inventory's redfish_verify_ca names its CA file); --driver ipmi,redfish serves "
        "a mixed fleet in one process: BMCs 0..N-M-1 speak IPMI (UDP), the last M "
        "(--redfish-nodes, default N/2) Redfish, with one inventory; a --control-socket "
        f"PATH then serves the IPMI BMCs, PATH{REDFISH_CONTROL_SUFFIX} the Redfish ones "
        "(both take the fleet's indexes).",
    )
    parser.add_argument(
        "--driver",
        choices=tuple(DRIVERS),
        default="ipmi",
        metavar="ipmi|redfish|ipmi,redfish",
        help="BMC protocol(s): ipmi (default), redfish, or ipmi,redfish for a mixed fleet",
    )
    parser.add_argument(
        "--nodes", type=integer_argument, required=True, metavar="N", help="number of BMCs"
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback only)")
    parser.add_argument(
        "--port-base",
        type=integer_argument,
        required=True,
        metavar="P",
        help="port of the first BMC (0: any free port for each)",
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
        help="cipher suites the IPMI BMCs accept (3 and/or 17; default 17,3)",
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
        type=integer_argument,
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
        help="probability that a datagram to an IPMI BMC is lost on the way in",
    )
    faults.add_argument(
        "--answer-loss",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that an IPMI BMC's answer is lost on the way back",
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
    faults.add_argument(
        "--seed", type=integer_argument, default=None, help="seed for loss and jitter dice"
    )
    sim_redfish.add_arguments(parser)
    parser.set_defaults(handler=run_sim)


def _cipher_suites(text: str) -> tuple[int, ...]:
    try:
        suites = tuple(ascii_integer(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--cipher-suites {text!r}: use a list like 17,3") from None
    if not suites or any(suite not in ALLOWED_SUITES for suite in suites):
        raise ConfigError(f"--cipher-suites {text!r}: only 3 and 17 are allowed")
    return suites


def _selections(args: argparse.Namespace) -> dict[str, frozenset[int]]:
    """Every fault selection of the command line, checked against the fleet's indexes."""
    values: dict[str, frozenset[int]] = {}
    for option in (*INDEX_SET_FIELDS, *sim_redfish.REDFISH_SELECTIONS):
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
    return values


def _ipmi_faults(selections: Mapping[str, frozenset[int]], args: argparse.Namespace) -> Faults:
    values: dict[str, Any] = {name: selections[name] for name in INDEX_SET_FIELDS}
    for option in FLOAT_FIELDS:
        values[option] = getattr(args, option)
    try:
        return Faults(**values)
    except ValueError as exc:
        raise ConfigError(f"fault options: {exc}") from None


def _check_options_fit(args: argparse.Namespace, drivers: tuple[str, ...]) -> None:
    """Options of a protocol the fleet does not serve are an error, not silently ignored."""
    if "ipmi" not in drivers:
        given = [
            f"--{name.replace('_', '-')}" for name in ("loss", "answer_loss") if getattr(args, name)
        ]
        if args.cipher_suites != "17,3":
            given.append("--cipher-suites")
        if given:
            raise ConfigError(f"sim: {given[0]} is an IPMI option (this fleet is all Redfish)")
    if "redfish" not in drivers:
        given = sim_redfish.given_options(args)
        if given:
            raise ConfigError(f"sim: {given[0]} needs --driver redfish or ipmi,redfish")


def _split(args: argparse.Namespace, drivers: tuple[str, ...]) -> tuple[int, int]:
    """(IPMI BMCs, Redfish BMCs) of --nodes; the Redfish ones come last."""
    if drivers == ("ipmi",):
        return args.nodes, 0
    if drivers == ("redfish",):
        if args.redfish_nodes is not None:
            raise ConfigError("sim: --redfish-nodes is for --driver ipmi,redfish")
        return 0, args.nodes
    redfish = args.nodes // 2 if args.redfish_nodes is None else args.redfish_nodes
    if not 1 <= redfish < args.nodes:
        raise ConfigError(
            f"sim: --redfish-nodes must be 1..{args.nodes - 1} so both kinds have a BMC "
            "(or use --driver redfish)"
        )
    return args.nodes - redfish, redfish


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
        raise ConfigError("--port-base must be a port number (0 = any free port)")
    drivers = DRIVERS[args.driver]
    _check_options_fit(args, drivers)
    counts = _split(args, drivers)
    suites = _cipher_suites(args.cipher_suites)
    selections = _selections(args)
    faults = _ipmi_faults(selections, args)
    redfish_faults = sim_redfish.faults(selections, args)
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
    if args.tls_dir:
        args.tls_dir = os.path.abspath(args.tls_dir)
        os.makedirs(args.tls_dir, mode=0o700, exist_ok=True)
    try:
        trio.run(_serve, args, password, suites, (faults, redfish_faults), timing, counts)
    except (IpmiError, RedfishError, OSError) as exc:
        raise ConfigError(f"sim: {exc}") from None
    return 0


def _ports(args: argparse.Namespace, bmcs: Sequence[SimBmc] | Sequence[SimService]) -> str:
    """The ports of ``bmcs`` for the serving line."""
    if args.port_base == 0:
        return _where_free_ports_are(args, bmcs)
    first, last = bmcs[0], bmcs[-1]
    return f"{first.port}" if first is last else f"{first.port}-{last.port}"


def _where_free_ports_are(
    args: argparse.Namespace, bmcs: Sequence[SimBmc] | Sequence[SimService]
) -> str:
    """What to print for ports the kernel chose (--port-base 0)."""
    if args.write_inventory:
        return "(any free ports, see the inventory)"
    if args.control_socket:
        return "(any free ports, see the control socket's list)"
    shown = ", ".join(str(bmc.port) for bmc in bmcs[:20])
    return f"({shown}, ...)" if len(bmcs) > 20 else f"({shown})"


def _write_inventory(
    args: argparse.Namespace,
    password: str,
    suites: tuple[int, ...],
    ipmi_fleet: IpmiFleet | None,
    redfish_fleet: RedfishFleet | None,
) -> None:
    # A password given as a file stays in that one file: the inventory names it.
    password_file = args.password_file
    literal = None if password_file else password
    described = (
        []
        if ipmi_fleet is None
        else ipmi_fleet.describe(args.username, password_file=password_file, cipher_suites=suites)
    )
    text = render_descriptions(described, literal)
    if redfish_fleet is not None:
        text += "\n" + sim_redfish.render_nodes(redfish_fleet, literal, password_file=password_file)
    write_private_text(args.write_inventory, text)


def _serving_line(
    args: argparse.Namespace, ipmi_fleet: IpmiFleet | None, redfish_fleet: RedfishFleet | None
) -> str:
    parts = []
    if ipmi_fleet is not None:
        count = len(ipmi_fleet.bmcs)
        if redfish_fleet is None:  # the IPMI-only line scripts already wait for
            parts.append(f"{count} BMCs on {args.host} ports {_ports(args, ipmi_fleet.bmcs)}")
        else:
            parts.append(
                f"{count} IPMI BMCs on {args.host} UDP ports {_ports(args, ipmi_fleet.bmcs)}"
            )
    if redfish_fleet is not None:
        where = "" if parts else f" on {args.host}"
        parts.append(
            f"{len(redfish_fleet.bmcs)} Redfish BMCs{where} HTTPS ports "
            f"{_ports(args, redfish_fleet.bmcs)}; CA {redfish_fleet.ca_file}"
        )
    line = "powersync sim: serving " + " and ".join(parts)
    if args.write_inventory:
        line += f"; inventory {args.write_inventory}"
    if args.control_socket:
        line += f"; control {args.control_socket}"
        if ipmi_fleet is not None and redfish_fleet is not None:
            line += f" (Redfish: {args.control_socket}{REDFISH_CONTROL_SUFFIX})"
    return line


async def _serve(
    args: argparse.Namespace,
    password: str,
    suites: tuple[int, ...],
    faults: tuple[Faults, RedfishFaults],
    timing: PowerTiming,
    counts: tuple[int, int],
) -> None:
    ipmi_count, redfish_count = counts
    control = args.control_socket
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with contextlib.AsyncExitStack() as stack:
            ipmi_fleet: IpmiFleet | None = None
            redfish_fleet: RedfishFleet | None = None
            if ipmi_count:
                ipmi_fleet = await stack.enter_async_context(
                    open_fleet(
                        ipmi_count,
                        host=args.host,
                        port_base=args.port_base,
                        username=args.username,
                        password=password,
                        cipher_suites=suites,
                        faults=faults[0],
                        timing=timing,
                        power_on=args.power_on,
                        max_sessions=args.max_sessions,
                        idle_timeout=args.idle_timeout,
                        seed=args.seed,
                        allow_any_address=args.allow_any_address,
                        control_socket=control,
                    )
                )
                if control is not None:
                    control += REDFISH_CONTROL_SUFFIX
            if redfish_count:
                redfish_fleet = await stack.enter_async_context(
                    sim_redfish.open_part(
                        args,
                        count=redfish_count,
                        first_index=ipmi_count,
                        password=password,
                        faults=faults[1],
                        timing=attrs.astuple(timing),
                        control_socket=control,
                    )
                )
            if args.write_inventory:
                _write_inventory(args, password, suites, ipmi_fleet, redfish_fleet)
            print(_serving_line(args, ipmi_fleet, redfish_fleet), flush=True)
            async for signum in signals:
                print(f"powersync sim: {signal.Signals(signum).name}, stopping", file=sys.stderr)
                break
