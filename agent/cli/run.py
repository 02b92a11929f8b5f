"""``powersync run``: the daemon (sync loop, recovery, Nova notifier, metrics) until signalled."""

from __future__ import annotations

import argparse
import logging
import signal
from functools import partial

import trio

from agent.cli.common import open_configured_store
from agent.config.options import BUILTIN_SOURCE, AgentConfig, load_config
from agent.logs import setup_logging
from agent.metrics.sync import ServiceMetrics
from agent.nova.config import NovaConfig
from agent.site.membership import SiteMembership
from agent.storeio import AsyncStore
from agent.sync.daemon import run_service
from agent.sync.reload import Reloader
from agent.sync.service import Notifier

log = logging.getLogger("powersync")


async def run_daemon(config: AgentConfig, astore: AsyncStore, *, debug: bool = False) -> None:
    """Everything ``powersync run`` starts, on an open store; SIGHUP reloads the config
    (``--debug`` keeps its level over a reloaded [logging])."""
    site = None
    if config.store.backend == "postgresql":  # a shared store: several agents on one site
        conductor = config.conductor
        site = SiteMembership(
            astore,
            host=conductor.host,
            heartbeat_interval=conductor.heartbeat_interval,
            heartbeat_timeout=conductor.heartbeat_timeout,
        )

    def make_notifier(nova: NovaConfig) -> Notifier | None:
        if not nova.send_power_notifications:
            return None
        from agent.nova.notifier import Notifier  # httpx only when Nova is on

        return Notifier(nova, astore, outbox_lease=None if site is None else site.outbox_lease)

    notifier = make_notifier(config.nova)
    metrics = None
    if config.metrics.listen is not None:
        metrics = ServiceMetrics(
            host=config.metrics.host, port=config.metrics.port, agent_host=config.conductor.host
        )
    log.info(
        "powersync starting: config %s, store %s (%s), sync every %g s, %d workers, force %s",
        config.source,
        astore.store.path,  # for PostgreSQL the DSN without its password
        config.store.backend,
        config.conductor.sync_power_state_interval,
        config.conductor.sync_power_state_workers,
        "on" if config.conductor.force_power_state_during_sync else "off",
    )
    source = None if config.source == BUILTIN_SOURCE else config.source
    reloader = Reloader(
        lambda: load_config(source),
        set_logging=None if debug else setup_logging,
        make_notifier=make_notifier,
    )
    await run_service(
        config, astore, notifier=notifier, metrics=metrics, site=site, reloader=reloader
    )


def _handle(args: argparse.Namespace) -> int:
    # A reload asked for before the daemon's signal watcher runs (while the store opens)
    # must not kill it, as SIGHUP's default would: the file is being read now anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = load_config(args.config)
    if not args.debug:
        setup_logging(config.logging)
    with open_configured_store(config, create=True) as store:
        trio.run(partial(run_daemon, config, AsyncStore(store), debug=args.debug))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the daemon: keep recorded and real power states in agreement",
        description=(
            "Run the power-sync daemon: a sync cycle every sync_power_state_interval, "
            "power-failure recovery, Nova notifications and metrics as configured. "
            "SIGTERM or SIGINT stops it cleanly (exit 0); SIGHUP reloads the config file. "
            "Under systemd (Type=notify) it reports readiness, status and watchdog pings."
        ),
    )
    parser.set_defaults(handler=_handle)
