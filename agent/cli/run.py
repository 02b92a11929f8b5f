"""``powersync run``: the daemon (sync loop, recovery, Nova notifier, metrics) until signalled."""

from __future__ import annotations

import argparse
import logging

import trio

from agent.cli.common import open_configured_store
from agent.config.options import AgentConfig, load_config
from agent.logs import setup_logging
from agent.metrics.sync import ServiceMetrics
from agent.site.membership import SiteMembership
from agent.storeio import AsyncStore
from agent.sync.daemon import run_service

log = logging.getLogger("powersync")


async def run_daemon(config: AgentConfig, astore: AsyncStore) -> None:
    """Everything ``powersync run`` starts, on an open store."""
    site = None
    if config.store.backend == "postgresql":  # a shared store: several agents on one site
        conductor = config.conductor
        site = SiteMembership(
            astore,
            host=conductor.host,
            heartbeat_interval=conductor.heartbeat_interval,
            heartbeat_timeout=conductor.heartbeat_timeout,
        )
    notifier = None
    if config.nova.send_power_notifications:
        from agent.nova.notifier import Notifier

        notifier = Notifier(
            config.nova, astore, outbox_lease=None if site is None else site.outbox_lease
        )
    metrics = None
    if config.metrics.listen is not None:
        metrics = ServiceMetrics(host=config.metrics.host, port=config.metrics.port)
    log.info(
        "powersync starting: config %s, store %s (%s), sync every %g s, %d workers, force %s",
        config.source,
        astore.store.path,  # for PostgreSQL the DSN without its password
        config.store.backend,
        config.conductor.sync_power_state_interval,
        config.conductor.sync_power_state_workers,
        "on" if config.conductor.force_power_state_during_sync else "off",
    )
    await run_service(config, astore, notifier=notifier, metrics=metrics, site=site)


def _handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not args.debug:
        setup_logging(config.logging)
    with open_configured_store(config, create=True) as store:
        trio.run(run_daemon, config, AsyncStore(store))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the daemon: keep recorded and real power states in agreement",
        description=(
            "Run the power-sync daemon: a sync cycle every sync_power_state_interval, "
            "power-failure recovery, Nova notifications and metrics as configured. "
            "SIGTERM or SIGINT stops it cleanly (exit 0)."
        ),
    )
    parser.set_defaults(handler=_handle)
