"""``powersync power NODE status|on|off|cycle|reset|soft-off [--wait] [--timeout S] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

import trio

from agent.cli.common import open_configured_store
from agent.config.options import load_config
from agent.drivers import configured_drivers
from agent.storeio import AsyncStore
from agent.sync.actions import ACTIONS, power_action, power_status


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return value


def _handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    drivers = configured_drivers(config)
    opener = drivers.open
    with open_configured_store(config, create=False) as store:
        astore = AsyncStore(store)
        if args.action == "status":
            timeout = args.timeout or config.conductor.sync_node_timeout
            status = trio.run(
                lambda: power_status(
                    astore, args.node, config=config, opener=opener, read_within=timeout
                )
            )
            if args.json:
                json.dump(status.as_dict(), sys.stdout, indent=2, sort_keys=True)
                print()
            else:
                hardware = status.hardware or f"unknown ({status.error})"
                print(
                    f"{status.node}: recorded {status.recorded or 'unknown'}, hardware {hardware}"
                )
                if status.maintenance:
                    print(f"{status.node}: in maintenance")
                if status.target:
                    print(f"{status.node}: power action to {status.target} in flight")
            return 0 if status.error is None else 1
        result = trio.run(
            lambda: power_action(
                astore,
                args.node,
                args.action,
                config=config,
                opener=opener,
                wait=args.wait,
                wait_limit=args.timeout,
            )
        )
    if args.json:
        json.dump(result.as_dict(), sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(result.message)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "power",
        help="read or change one node's power state (takes the node's lock)",
        description=(
            "Read a node's power state from its BMC, or change it: takes the node's lock in "
            "the store (works while the daemon runs), sets the target, acts, confirms, records "
            "the result and queues the Nova notification."
        ),
    )
    parser.add_argument("node", metavar="NODE", help="node name or uuid")
    parser.add_argument(
        "action",
        choices=("status", *ACTIONS),
        metavar="ACTION",
        help="status | " + " | ".join(ACTIONS),
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for the hardware to reach the target (up to --timeout); soft-off always waits",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        metavar="S",
        help="seconds to wait for the target (default: power_state_change_timeout)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_handle)
