"""``powersync bmc``: one power command against one BMC, like ``ipmitool power``; no store.

    powersync bmc --host H [--port P] --username U
                  (--password-file F | --password-env VAR)   # default: $IPMI_PASSWORD
                  [--cipher-suite N ...] [--privilege P] [--timeout S] [--json]
                  power status|on|off|cycle|reset|soft

The password is never accepted on the command line. Output matches ipmitool's wording
(``Chassis Power is on``, ``Chassis Power Control: Up/On``); ``--json`` prints one object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import trio

from agent.config.secrets import read_secret_env, read_secret_file
from agent.errors import AgentError
from ipmi import IpmiError, open_bmc
from ipmi.transport import peer_label

DEFAULT_PASSWORD_ENV = "IPMI_PASSWORD"  # noqa: S105 - a variable name, not a secret
POWER_OPS = ("status", "on", "off", "cycle", "reset", "soft")
# What ipmitool prints after each Chassis Control, so scripts and eyes see the familiar words.
ACTION_WORDS = {
    "on": "Up/On",
    "off": "Down/Off",
    "cycle": "Cycle",
    "reset": "Reset",
    "soft": "Soft",
}


class BmcCommandError(AgentError):
    """The BMC could not be reached, refused us, or refused the command."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bmc",
        help="one power command against one BMC (like ipmitool), no store needed",
        description="Send one power command to one BMC over IPMI v2.0 (RMCP+).",
        allow_abbrev=False,
    )
    parser.add_argument("--host", required=True, help="BMC address or name")
    parser.add_argument("--port", type=int, default=623, help="UDP port (default 623)")
    parser.add_argument("--username", required=True, help="BMC user name")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-file", metavar="FILE", help="file holding the password (mode 0600)"
    )
    secret.add_argument(
        "--password-env",
        metavar="VAR",
        help=f"environment variable holding the password (default {DEFAULT_PASSWORD_ENV})",
    )
    parser.add_argument(
        "--cipher-suite",
        dest="cipher_suites",
        metavar="N",
        type=int,
        choices=(17, 3),
        action="append",
        help="cipher suite to offer, repeat for a preference order (default 17 then 3)",
    )
    parser.add_argument(
        "--privilege",
        choices=("user", "operator", "administrator"),
        default="administrator",
        help="session privilege (default administrator)",
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


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        return read_secret_file(args.password_file, what="BMC password")
    return read_secret_env(args.password_env or DEFAULT_PASSWORD_ENV, what="BMC password")


async def _power(args: argparse.Namespace, password: str) -> dict[str, Any]:
    async with open_bmc(
        args.host,
        args.port,
        username=args.username,
        password=password,
        privilege=args.privilege,
        cipher_suites=tuple(args.cipher_suites or (17, 3)),
    ) as bmc:
        result: dict[str, Any] = {"host": args.host, "port": args.port, "op": args.op}
        if args.op == "status":
            on = await bmc.get_power()
            result["power"] = "on" if on else "off"
            result["power_state"] = "power on" if on else "power off"
        else:
            await bmc.set_power(args.op)
            result["result"] = "ok"
    # Read after the block: Close Session is sent on the way out and counts too.
    stats = bmc.statistics()
    result["datagrams_sent"] = stats.sent
    result["retransmits"] = stats.retransmits
    return result


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise BmcCommandError("--timeout must be a positive number of seconds")
    if not 0 < args.port < 65536:
        raise BmcCommandError(f"--port {args.port} is not a UDP port")
    password = _password(args)
    peer = peer_label(args.host, args.port)

    async def main() -> dict[str, Any]:
        with trio.fail_after(args.timeout):
            return await _power(args, password)

    try:
        result = trio.run(main)
    except trio.TooSlowError:
        raise BmcCommandError(f"bmc {peer}: no result within {args.timeout:g} s") from None
    except IpmiError as exc:
        raise BmcCommandError(f"bmc {peer}: {_one_line(exc, peer)}") from None
    except ValueError as exc:  # arguments open_bmc refuses
        raise BmcCommandError(f"bmc {peer}: {exc}") from None
    except OSError as exc:  # name resolution, no route
        raise BmcCommandError(f"bmc {peer}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(result, sort_keys=True))
    elif args.op == "status":
        print(f"Chassis Power is {result['power']}")
    else:
        print(f"Chassis Power Control: {ACTION_WORDS[args.op]}")
    return 0


def _one_line(exc: BaseException, peer: str) -> str:
    text = " ".join(str(exc).split())
    # The client's messages already name host:port; say it once.
    text = text.removeprefix(f"{peer}: ")
    return text or type(exc).__name__
