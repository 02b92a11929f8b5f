"""The ``powersync`` command line: one dispatcher, one module per command group.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` (a callable taking the parsed namespace and returning an exit status).
Errors that reach this level become one line on stderr and a non-zero exit status;
a traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from agent.cli import bmc, demo, node, power, run, sim, status, sync
from agent.config.options import LoggingConfig
from agent.errors import AgentError
from agent.logs import setup_logging

# Command modules, in the order they appear in ``--help``.
COMMAND_MODULES: tuple[ModuleType, ...] = (run, sync, node, power, status, demo, bmc, sim)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="powersync",
        description=(
            "Keep the recorded power state of bare-metal nodes and their BMCs in agreement."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="agent configuration (default: $POWERSYNC_CONFIG, then ./agent.toml, then built-in)",
    )
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        # The agent's own line format at DEBUG; commands that read a config apply its
        # [logging] format again with debug=True.
        setup_logging(LoggingConfig(), debug=True)
    elif not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        print("powersync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`powersync node list | head`): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except AgentError as exc:
        if args.debug:
            raise
        print(f"powersync: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
