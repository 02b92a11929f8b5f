"""The daemon (``powersync run``): the sync service with its signals, notifier and metrics.

::

    run_service(config, store)
    └─ nursery "service"
       ├─ signals     SIGTERM/SIGINT: stop starting work, give in-flight work a few seconds;
       │              SIGHUP: reload the config file (agent.sync.reload)
       ├─ notifier    drains the Nova outbox (when configured), woken after each batch
       ├─ watchdog    WATCHDOG=1 to systemd while the sync loop makes progress (when asked)
       ├─ metrics     the Prometheus endpoint (when configured)
       ├─ prune       hourly: history older than [store] history_retention_days
       └─ work
          ├─ sync loop       (agent.sync.service.SyncService.sync_loop)
          └─ recovery loop   (agent.sync.service.SyncService.recovery_loop)
"""

from __future__ import annotations

import gc
import logging
import os
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
from agent.sync.reload import NotifierSlot, Reloader
from agent.sync.report import CycleReport
from agent.sync.sdnotify import SdNotifier, stall_limit, watchdog_loop, watchdog_period
from agent.sync.service import MetricsSink, Notifier, SyncService
from store import Store

log = logging.getLogger("powersync.sync")


async def _watch_signals(
    service: SyncService,
    cancel_scope: trio.CancelScope,
    reloader: Reloader | None,
    systemd: SdNotifier,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    import signal

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if reloader is None or service.stopping.is_set():
                    log.info("SIGHUP ignored: %s", "stopping" if reloader else "nothing to reload")
                    continue
                await reloader.reload()
                continue
            if service.stopping.is_set():
                log.warning("second %s: cancelling everything now", name)
                cancel_scope.cancel()
                return
            log.info("%s received: shutting down", name)
            systemd.notify(STOPPING=1, STATUS=f"{name} received: shutting down")
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
    systemd: SdNotifier | None = None,
    reloader: Reloader | None = None,
    task_status: trio.TaskStatus[SyncService] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The daemon: returns (normally) after SIGTERM/SIGINT or ``service.stop()``.

    ``systemd`` (default: from ``$NOTIFY_SOCKET``) hears READY=1 after the first cycle,
    STATUS= after each, watchdog pings and STOPPING=1. ``reloader`` (the CLI's: it re-reads
    the config file) is what SIGHUP runs; without one SIGHUP is logged and ignored.

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
        freeze_startup_heap()
        systemd = systemd or SdNotifier.from_environ()
        service.cycle_hooks.append(partial(_cycle_done, systemd))
        async with trio.open_nursery() as background:
            slot = NotifierSlot(background, service)
            if reloader is not None:
                reloader.attach(service, slot, systemd)
            if handle_signals:
                await background.start(
                    _watch_signals, service, background.cancel_scope, reloader, systemd
                )
            if site is not None:
                site.info = partial(_agent_info, service)
                await background.start(site.run)
            if notifier is not None:
                slot.start(notifier)
            background.start_soon(
                partial(
                    prune_loop,
                    astore,
                    retention_days=lambda: service.config.store.history_retention_days,
                    wall_clock=wall_clock,
                )
            )
            serve = getattr(metrics, "serve", None)
            if serve is not None:
                await background.start(serve)
            period = watchdog_period(os.environ) if systemd.enabled else None
            if period is not None:
                background.start_soon(watchdog_loop, systemd, period, lambda: _progress(service))
            async with trio.open_nursery() as work:
                await work.start(service.sync_loop)
                await work.start(service.recovery_loop)
                if not config.conductor.sync_enabled:  # no first cycle to wait for
                    systemd.notify(READY=1, STATUS="running; power sync disabled")
                task_status.started(service)
            background.cancel_scope.cancel()
    systemd.close()
    log.info("stopped")


def _cycle_done(systemd: SdNotifier, report: CycleReport) -> None:
    """READY=1 after the first cycle (the store is open and the fleet read once), and the
    latest cycle's summary as STATUS= after each."""
    fields: dict[str, object] = {"READY": 1} if report.cycle == 1 else {}
    systemd.notify(**fields, STATUS=report.headline())


def _progress(service: SyncService) -> tuple[float | None, float]:
    return service.last_progress, stall_limit(service.conductor)


def freeze_startup_heap() -> None:
    """What start-up built (modules, classes, config, drivers) lives as long as the process:
    move it out of the garbage collector's generations, so that each full collection walks
    only what the cycles create, not every module the agent ever imported."""
    gc.freeze()


def _agent_info(service: SyncService) -> dict[str, object] | None:
    """What `powersync status` shows for this agent: its last cycle's summary."""
    report = service.last_report
    return None if report is None else report.summary()
