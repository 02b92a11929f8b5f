"""``powersync sync --once [--json]``: one sync cycle over every node, then exit."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, TextIO

import attrs
import trio

from agent.bmc.pool import open_bmc_pool
from agent.bmc.seam import BmcOpener
from agent.cli.common import open_configured_store
from agent.config.options import AgentConfig, load_config
from agent.drivers import configured_drivers
from agent.errors import AgentError
from agent.logs import setup_logging
from agent.storeio import AsyncStore
from agent.sync.report import CycleReport, NodeResult
from agent.sync.service import SyncService
from store import Store

PROGRESS_MIN_NODES = 50  # smaller fleets finish before a progress line would help


async def sync_once(
    config: AgentConfig,
    store: Store,
    *,
    opener: BmcOpener,
    progress: TextIO | None = None,
    jitter: bool = False,
) -> CycleReport:
    """One cycle with the configured rules; sessions are closed before returning.

    Without ``jitter`` every node starts at once (still bounded by the worker limit): the
    spread over ``sync_jitter_window`` keeps a daemon's cycles from hitting the fleet in step,
    which a one-shot run an operator is waiting for does not need.
    """
    if not jitter:
        config = attrs.evolve(
            config, conductor=attrs.evolve(config.conductor, sync_jitter_window=0.0)
        )
    async with open_bmc_pool(
        opener,
        keepalive_interval=configured_drivers(config).keepalive_interval,
        min_command_interval=config.conductor.min_command_interval,
    ) as pool:
        service = SyncService(config, AsyncStore(store), pool)
        await service.upsert_static_nodes()
        if progress is None:
            return await service.run_cycle()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_show_progress, service, progress)
            report = await service.run_cycle()
            nursery.cancel_scope.cancel()
        progress.write("\r\x1b[K")
        return report


async def _show_progress(service: SyncService, stream: TextIO) -> None:
    while True:
        await trio.sleep(0.5)
        total = service.nodes_total
        if total >= PROGRESS_MIN_NODES:
            stream.write(f"\r\x1b[Ksync: {service.nodes_done}/{total} nodes")
            stream.flush()


def format_result(result: NodeResult) -> str:
    recorded = result.recorded or "unknown"
    observed = result.observed or "?"
    line = f"{result.name}: {recorded} -> {observed}  {result.action}"
    if result.detail:
        line += f" ({result.detail})"
    if result.error:
        line += f"  error: {result.error}"
    return line


def format_summary(summary: dict[str, Any]) -> str:
    return (
        "summary: {nodes} nodes, {ok} read, {failed} failed, {changed} changed, "
        "{forced} forced, {skipped} skipped, {maintenance} to maintenance in {duration:.2f} s"
    ).format(**summary)


def _handle(args: argparse.Namespace) -> int:
    if not args.once:
        raise AgentError("sync runs one cycle: use `powersync sync --once` (the daemon is `run`)")
    config = load_config(args.config)
    setup_logging(config.logging, debug=args.debug)
    if not args.debug:
        # The per-node lines on stdout already say what INFO logs would repeat.
        sync_log = logging.getLogger("powersync.sync")
        sync_log.setLevel(max(sync_log.getEffectiveLevel(), logging.WARNING))
    progress = sys.stderr if sys.stderr.isatty() and not args.json else None
    with open_configured_store(config, create=False) as store:
        report = trio.run(
            lambda: sync_once(
                config,
                store,
                opener=configured_drivers(config).open,
                progress=progress,
                jitter=args.jitter,
            )
        )
    summary = report.summary()
    if args.json:
        document = {"nodes": [r.as_dict() for r in report.results], "summary": summary}
        json.dump(document, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        for result in report.results:
            print(format_result(result))
        print(format_summary(summary))
    if summary["failed"]:
        print(f"powersync: {summary['failed']} node(s) failed", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="run one sync cycle now and report every node",
        description=(
            "Run one power-sync cycle over every node with the configured rules, print one "
            "line per node and a summary. Exit status 1 if any node failed."
        ),
    )
    parser.add_argument("--once", action="store_true", help="one cycle, then exit (required)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--jitter",
        action="store_true",
        help="spread node starts over [conductor] sync_jitter_window, as the daemon does",
    )
    parser.set_defaults(handler=_handle)
