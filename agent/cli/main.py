"""The ``powersync`` command line: one dispatcher, one module per command group.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` (a callable taking the parsed namespace and returning an exit status).
Errors that reach this level become one line on stderr and a non-zero exit status;
a traceback is printed only with ``--debug``. A trio nursery wraps what its task raised in
an ExceptionGroup (nested once per nursery): it is reported as the error inside, here only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from agent.cli import bmc, demo, node, power, run, sim, status, sync
from agent.cli.common import print_error
from agent.config.options import LoggingConfig
from agent.errors import AgentError
from agent.logs import setup_logging
from store import StoreError

# Command modules, in the order they appear in ``--help``.
COMMAND_MODULES: tuple[ModuleType, ...] = (run, sync, node, power, status, demo, bmc, sim)
# What is reported in one line (or as an interruption) rather than as a traceback. The
# store's errors name their file; the commands translate them, and this catches what a
# command left to the daemon (e.g. a store failing under `run`).
REPORTED: tuple[type[BaseException], ...] = (
    AgentError,
    StoreError,
    KeyboardInterrupt,
    BrokenPipeError,
)


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
        try:
            status: int = args.handler(args)
        except BaseExceptionGroup as group:
            cause = reported_cause(group)
            if cause is None:
                raise  # a bug among the errors: keep the whole traceback
            raise cause from group
    except KeyboardInterrupt:
        print("powersync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`powersync node list | head`): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (AgentError, StoreError) as exc:
        if args.debug:
            raise
        print_error(str(exc))
        return 1
    return status


def reported_cause(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The first error inside ``group`` (however nested) when every one is REPORTED."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = error.exceptions
        elif isinstance(error, REPORTED):
            leaves.append(error)
        else:
            return None
    return leaves[0] if leaves else None


if __name__ == "__main__":
    sys.exit(main())
