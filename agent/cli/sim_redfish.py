"""The Redfish part of ``powersync sim``: its options, its fleet and its inventory tables.

``redfish.sim`` serves the services (HTTPS with a certificate it makes, one CA for the
fleet); this module maps the command line onto it and renders the ``[[nodes]]`` tables
``powersync node import`` reads: Ironic's driver_info names (``redfish_address``,
``redfish_system_id``, ``redfish_verify_ca`` = the fleet's CA file) beside the keys every
node has.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

from agent.errors import ConfigError
from redfish.sim import Faults, Fleet, PowerTiming, ServiceOptions, describe_fleet, open_fleet
from redfish.sim.faults import INDEX_SET_FIELDS

# Faults only a Redfish service has (the IPMI fleet has no HTTP statuses or session service).
REDFISH_SELECTIONS: Final = ("server_errors", "sessions_full")
REDFISH_NUMBERS: Final = ("error_burst", "error_status")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Redfish (--driver redfish or ipmi,redfish; the fault options above apply too)"
    )
    group.add_argument(
        "--redfish-nodes",
        type=int,
        default=None,
        metavar="M",
        help="with --driver ipmi,redfish: the last M of the --nodes BMCs speak Redfish "
        "(default half, rounded down)",
    )
    group.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="write the fleet's CA (ca.pem), certificate and key here and keep them "
        "(default: a temporary directory removed on exit)",
    )
    group.add_argument(
        "--server-errors", default="", metavar="SEL", help="BMCs answering --error-status"
    )
    group.add_argument(
        "--error-burst",
        type=int,
        default=0,
        metavar="N",
        help="only the first N requests after the fault is set get the error (0: all)",
    )
    group.add_argument(
        "--error-status", type=int, default=500, metavar="CODE", help="5xx status (default 500)"
    )
    group.add_argument(
        "--sessions-full", default="", metavar="SEL", help="BMCs whose session table is full (503)"
    )


def given_options(args: argparse.Namespace) -> list[str]:
    """The Redfish-only options given (an IPMI-only fleet refuses them)."""
    given = [f"--{name.replace('_', '-')}" for name in REDFISH_SELECTIONS if getattr(args, name)]
    if args.error_burst:
        given.append("--error-burst")
    if args.error_status != 500:
        given.append("--error-status")
    if args.tls_dir:
        given.append("--tls-dir")
    if args.redfish_nodes is not None:
        given.append("--redfish-nodes")
    return given


def faults(selections: Mapping[str, frozenset[int]], args: argparse.Namespace) -> Faults:
    """The fleet's faults: ``selections`` (already parsed, by field) and the numbers."""
    values: dict[str, Any] = {
        name: indexes for name, indexes in selections.items() if name in INDEX_SET_FIELDS
    }
    for name in ("latency", "jitter", "flap_interval", "slow_delay", *REDFISH_NUMBERS):
        values[name] = getattr(args, name)
    try:
        return Faults(**values)
    except ValueError as exc:
        raise ConfigError(f"fault options: {exc}") from None


@asynccontextmanager
async def open_part(
    args: argparse.Namespace,
    *,
    count: int,
    first_index: int,
    password: str,
    faults: Faults,
    timing: tuple[float, ...],
    control_socket: str | None,
) -> AsyncIterator[Fleet]:
    """BMCs ``first_index`` .. ``first_index + count - 1`` as Redfish services."""
    try:
        options = ServiceOptions(max_sessions=args.max_sessions, idle_timeout=args.idle_timeout)
        power_timing = PowerTiming(*timing)
    except ValueError as exc:
        raise ConfigError(f"sim: {exc}") from None
    async with open_fleet(
        count,
        host=args.host,
        port_base=args.port_base + first_index if args.port_base else 0,
        username=args.username,
        password=password,
        tls_dir=args.tls_dir,
        faults=faults,
        timing=power_timing,
        options=options,
        power_on=args.power_on,
        seed=args.seed,
        allow_any_address=args.allow_any_address,
        control_socket=control_socket,
        first_index=first_index,
    ) as fleet:
        yield fleet


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML


def render_nodes(fleet: Fleet, password: str | None, *, password_file: str | None) -> str:
    """``[[nodes]]`` tables for the fleet; the password only when no file holds it."""
    lines: list[str] = []
    entries = describe_fleet(fleet, password_file=password_file)
    for bmc, entry in zip(fleet.bmcs, entries, strict=True):
        lines += [
            "[[nodes]]",
            f"name = {_toml(bmc.name)}",
            'driver = "redfish"',
            f"bmc_address = {_toml(bmc.address)}",
            f"bmc_port = {bmc.port}",
            f"bmc_username = {_toml(fleet.username)}",
        ]
        if password_file is not None:
            lines.append(f"bmc_password_file = {_toml(password_file)}")
        elif password is not None:
            lines.append(f"bmc_password = {_toml(password)}")
        else:
            raise ValueError(f"{bmc.name}: no password and no password file")
        lines += [
            f"redfish_address = {_toml(str(entry['address']))}",
            f"redfish_system_id = {_toml(str(entry['system_id']))}",
            f"redfish_verify_ca = {_toml(str(entry['verify_ca']))}",
            "",
        ]
    return "\n".join(lines)
