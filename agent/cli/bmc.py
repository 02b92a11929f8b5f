"""``powersync bmc``: one power command against one BMC, like ``ipmitool power``; no store.

    powersync bmc [--driver ipmi] --host H [--port P] --username U
                  (--password-file F | --password-env VAR)   # default: $IPMI_PASSWORD
                  [--cipher-suite N ...] [--privilege P] [--timeout S] [--json]
                  power status|on|off|cycle|reset|soft
    powersync bmc --driver redfish --host H [--port P] [--system-id ID] --username U
                  (--password-file F | --password-env VAR)   # default: $REDFISH_PASSWORD
                  [--ca-file PEM | --insecure] [--timeout S] [--json]
                  power status|on|off|cycle|reset|soft

Both protocols go through the BMC seam (``agent.drivers``), the path the sync and
``powersync power`` take, so the one-shot command sees what the agent would. The password is
never accepted on the command line. Output matches ipmitool's wording (``Chassis Power is
on``, ``Chassis Power Control: Up/On``) for both; ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Final

import trio

from agent.bmc.seam import BmcEndpoint, BmcError, SessionCounts, session_action
from agent.cli.common import integer_argument
from agent.config.options import AgentConfig
from agent.config.secrets import read_secret_env, read_secret_file
from agent.drivers import DEFAULT_PORTS, DRIVER_NAMES, configured_drivers
from agent.drivers.ipmi import CIPHER_SUITES, check_username
from agent.errors import AgentError

DEFAULT_PASSWORD_ENV: Final = {"ipmi": "IPMI_PASSWORD", "redfish": "REDFISH_PASSWORD"}
POWER_OPS = ("status", "on", "off", "cycle", "reset", "soft")
# What ipmitool prints after each Chassis Control, so scripts and eyes see the familiar words.
ACTION_WORDS = {
    "on": "Up/On",
    "off": "Down/Off",
    "cycle": "Cycle",
    "reset": "Reset",
    "soft": "Soft",
}
# Options that belong to one protocol (argparse dest -> driver); given with the other
# driver they are a usage error rather than silently ignored.
DRIVER_OPTIONS: Final = {
    "cipher_suites": ("--cipher-suite", "ipmi"),
    "privilege": ("--privilege", "ipmi"),
    "system_id": ("--system-id", "redfish"),
    "ca_file": ("--ca-file", "redfish"),
    "insecure": ("--insecure", "redfish"),
}
# --json's counters: (key, attribute of the driver session's statistics()).
STATISTICS: Final = {
    "ipmi": (("datagrams_sent", "sent"), ("retransmits", "retransmits")),
    "redfish": (
        ("requests", "requests"),
        ("retries", "retries"),
        ("logins", "logins"),
        ("tls_handshakes", "tls_handshakes"),
    ),
}
PROTOCOLS: Final = {"ipmi": "IPMI", "redfish": "Redfish"}
USAGE_ERROR: Final = 2  # argparse's status for a bad command line


class BmcCommandError(AgentError):
    """The BMC could not be reached, refused us, or refused the command."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bmc",
        help="one power command against one BMC (like ipmitool), no store needed",
        description="Send one power command to one BMC over IPMI v2.0 (RMCP+, the default) "
        "or Redfish (HTTPS, certificate verified unless --insecure).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--driver", choices=DRIVER_NAMES, default="ipmi", help="BMC protocol (default ipmi)"
    )
    parser.add_argument("--host", required=True, help="BMC address or name")
    parser.add_argument(
        "--port",
        type=integer_argument,
        default=None,
        help=f"UDP port for ipmi (default {DEFAULT_PORTS['ipmi']}), "
        f"HTTPS port for redfish (default {DEFAULT_PORTS['redfish']})",
    )
    parser.add_argument("--username", required=True, help="BMC user name")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-file", metavar="FILE", help="file holding the password (mode 0600)"
    )
    secret.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the password (default "
        + " / ".join(f"{v} for {k}" for k, v in DEFAULT_PASSWORD_ENV.items())
        + ")",
    )
    ipmi_options = parser.add_argument_group("IPMI only")
    ipmi_options.add_argument(
        "--cipher-suite",
        dest="cipher_suites",
        metavar="N",
        type=integer_argument,
        choices=CIPHER_SUITES,
        action="append",
        help="cipher suite to offer, repeat for a preference order (default 17 then 3)",
    )
    ipmi_options.add_argument(
        "--privilege",
        choices=("user", "operator", "administrator"),
        default=None,
        help="session privilege (default administrator)",
    )
    redfish_options = parser.add_argument_group("Redfish only")
    redfish_options.add_argument(
        "--system-id",
        metavar="ID",
        help="the ComputerSystem (path or id; default: the service's only system)",
    )
    trust = redfish_options.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca-file", metavar="PEM", help="CA certificate(s) that vouch for the BMC's certificate"
    )
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the BMC's TLS certificate"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long in all (default 30)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("group", choices=("power",), help="command group")
    parser.add_argument("op", choices=POWER_OPS, help="power operation")
    parser.set_defaults(handler=run)


def _misplaced_option(args: argparse.Namespace) -> str | None:
    """The first option given that belongs to the other driver, as a one-line message."""
    for dest, (flag, driver) in DRIVER_OPTIONS.items():
        if driver != args.driver and getattr(args, dest) not in (None, False):
            return f"{flag} is an option of {PROTOCOLS[driver]}, not of --driver {args.driver}"
    return None


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        return read_secret_file(args.password_file, what="BMC password")
    variable = args.password_env or DEFAULT_PASSWORD_ENV[args.driver]
    return read_secret_env(variable, what="BMC password")


def _endpoint(args: argparse.Namespace, port: int, password: str) -> BmcEndpoint:
    """What the driver needs to log in, as the agent builds it from a node."""
    options: tuple[tuple[str, object], ...]
    if args.driver == "ipmi":
        options = (
            ("cipher_suites", tuple(args.cipher_suites or CIPHER_SUITES)),
            ("privilege", args.privilege or "administrator"),
        )
    else:
        host = f"[{args.host}]" if ":" in args.host else args.host
        verify: bool | str = args.ca_file or not args.insecure
        options = (("address", f"https://{host}:{port}"), ("verify", verify))
        if args.system_id:
            options += (("system_id", args.system_id),)
    return BmcEndpoint(
        driver=args.driver,
        host=args.host,
        port=port,
        username=args.username,
        password=password,
        session_mode="per-cycle",
        options=options,
    )


async def _power(args: argparse.Namespace, endpoint: BmcEndpoint) -> dict[str, Any]:
    drivers = configured_drivers(AgentConfig(source="<powersync bmc>"))
    result: dict[str, Any] = {
        "driver": endpoint.driver,
        "host": endpoint.host,
        "port": endpoint.port,
        "op": args.op,
    }
    async with drivers.open(endpoint) as session:
        if args.op == "status":
            on = await session.get_power()
            result["power"] = "on" if on else "off"
            result["power_state"] = "power on" if on else "power off"
        else:
            await session.set_power(session_action(args.op))
            result["result"] = "ok"
    # Read after the block: the logout is sent on the way out and counts too.
    result.update(_counters(endpoint.driver, session.statistics()))
    return result


def _counters(driver: str, stats: SessionCounts) -> dict[str, int]:
    return {key: int(getattr(stats, name, 0)) for key, name in STATISTICS[driver]}


def run(args: argparse.Namespace) -> int:
    misplaced = _misplaced_option(args)
    if misplaced is not None:
        print(f"powersync bmc: error: {misplaced}", file=sys.stderr)
        return USAGE_ERROR
    if not args.timeout > 0:
        raise BmcCommandError("--timeout must be a positive number of seconds")
    port = DEFAULT_PORTS[args.driver] if args.port is None else args.port
    if not 0 < port < 65536:
        raise BmcCommandError(f"--port {port} is not a port number")
    if args.driver == "ipmi":
        try:
            check_username(args.username)
        except ValueError as exc:
            raise BmcCommandError(f"--username {exc}") from None
    endpoint = _endpoint(args, port, _password(args))
    peer = endpoint.label

    async def main() -> dict[str, Any]:
        with trio.fail_after(args.timeout):
            return await _power(args, endpoint)

    try:
        result = trio.run(main)
    except trio.TooSlowError:
        raise BmcCommandError(f"bmc {peer}: no result within {args.timeout:g} s") from None
    except BmcError as exc:
        raise BmcCommandError(f"bmc {peer}: {_one_line(exc, peer, endpoint)}") from None
    except ValueError as exc:  # arguments a client refuses
        raise BmcCommandError(f"bmc {peer}: {exc}") from None
    if args.json:
        print(json.dumps(result, sort_keys=True))
    elif args.op == "status":
        print(f"Chassis Power is {result['power']}")
    else:
        print(f"Chassis Power Control: {ACTION_WORDS[args.op]}")
    return 0


def _one_line(exc: BmcError, peer: str, endpoint: BmcEndpoint) -> str:
    text = " ".join(str(exc).split())
    # The drivers prefix their client's type and the clients name host:port; say each once.
    text = text.removeprefix(f"{exc.kind}: ").removeprefix(f"{peer}: ")
    if exc.kind == "TLSError" and endpoint.option("verify") is True:
        # The client's hint names the inventory's setting; this command's are flags.
        text += "; on this command: --ca-file PEM, or --insecure"
    return text or exc.kind
