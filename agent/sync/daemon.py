"""The daemon (``powersync run``): the sync service with its signals, notifier and metrics.

::

    run_service(config, store)
    └─ nursery "service"
       ├─ signals     SIGTERM/SIGINT: stop starting work, give in-flight work a few seconds
       ├─ notifier    drains the Nova outbox (when configured), woken after each batch
       ├─ metrics     the Prometheus endpoint (when configured)
       ├─ prune       hourly: history older than [store] history_retention_days
       └─ work
          ├─ sync loop       (agent.sync.service.SyncService.sync_loop)
          └─ recovery loop   (agent.sync.service.SyncService.recovery_loop)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import trio

from agent.bmc.pool import open_bmc_pool
from agent.bmc.seam import BmcOpener
from agent.config.options import AgentConfig
from agent.drivers import configured_drivers
from agent.site.membership import SiteMembership
from agent.storeio import AsyncStore
from agent.sync.housekeeping import prune_loop
from agent.sync.service import MetricsSink, Notifier, SyncService
from store import Store

log = logging.getLogger("powersync.sync")


async def _watch_signals(
    service: SyncService,
    cancel_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    import signal

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if service.stopping.is_set():
                log.warning("second %s: cancelling everything now", name)
                cancel_scope.cancel()
                return
            log.info("%s received: shutting down", name)
            service.stop()


async def run_service(
    config: AgentConfig,
    store: Store | AsyncStore,
    *,
    bmc_opener: BmcOpener | None = None,
    notifier: Notifier | None = None,
    metrics: MetricsSink | None = None,
    handle_signals: bool = True,
    wall_clock: Callable[[], float] = time.time,
    site: SiteMembership | None = None,
    task_status: trio.TaskStatus[SyncService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The daemon: returns (normally) after SIGTERM/SIGINT or ``service.stop()``.

    ``site`` (several agents on one shared store): this agent's membership; it joins before
    the first cycle, syncs only its share, and hands every node over when it stops.

    ``metrics`` (e.g. :class:`agent.metrics.sync.ServiceMetrics`) gets every cycle; if it
    has a ``serve(task_status=...)`` coroutine, that runs the HTTP endpoint in the nursery.
    """
    astore = store if isinstance(store, AsyncStore) else AsyncStore(store)
    drivers = configured_drivers(config)
    budget = drivers.retry_budget
    if budget >= config.conductor.sync_node_timeout:
        log.warning(
            "the BMC clients retry for up to %.1f s ([ipmi] retry_timeout, retry_backoff, "
            "retries), not less than sync_node_timeout (%g s): a dead BMC will be reported as "
            "'no answer within sync_node_timeout' instead of the client's own error",
            budget,
            config.conductor.sync_node_timeout,
        )
    async with open_bmc_pool(
        bmc_opener or drivers.open,
        keepalive_interval=drivers.keepalive_interval,
        min_command_interval=config.conductor.min_command_interval,
    ) as pool:
        service = SyncService(
            config,
            astore,
            pool,
            notifier=notifier,
            metrics=metrics,
            wall_clock=wall_clock,
            drivers=drivers,
            site=site,
        )
        await service.upsert_static_nodes()
        async with trio.open_nursery() as background:
            if handle_signals:
                await background.start(_watch_signals, service, background.cancel_scope)
            if site is not None:
                site.info = partial(_agent_info, service)
                await background.start(site.run)
            if notifier is not None:
                background.start_soon(_run_notifier, notifier)
            background.start_soon(
                partial(
                    prune_loop,
                    astore,
                    retention_days=config.store.history_retention_days,
                    wall_clock=wall_clock,
                )
            )
            serve = getattr(metrics, "serve", None)
            if serve is not None:
                await background.start(serve)
            async with trio.open_nursery() as work:
                await work.start(service.sync_loop)
                await work.start(service.recovery_loop)
                task_status.started(service)
            background.cancel_scope.cancel()
    log.info("stopped")


def _agent_info(service: SyncService) -> dict[str, object] | None:
    """What `powersync status` shows for this agent: its last cycle's summary."""
    report = service.last_report
    return None if report is None else report.summary()


async def _run_notifier(notifier: Notifier) -> None:
    try:
        await notifier.run()
    except Exception:
        log.exception("the Nova notifier stopped; notifications stay queued in the store")
