"""SIGHUP: read the config file again and let the running daemon take what it can.

Options a running daemon can take (the sync's, [ipmi]'s, [logging], [nova], [[nodes]]) apply
from the next pass; the INFO line says what changed. Those it cannot (the store, the metrics
address, the conductor's name on a shared site: agent.config.changes.RESTART_ONLY) keep their
old values with a WARNING. A file that does not validate is refused with its usual one-line
error and the daemon carries on as it was. Secret files are read again by the reload (and
BMC password files at each login); refused logins are tried again at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from agent.config.changes import Change, config_changes, keep_running, restart_needed
from agent.config.options import AgentConfig, LoggingConfig
from agent.errors import ConfigError
from agent.nova.config import NovaConfig
from agent.sync.sdnotify import SdNotifier, monotonic_usec
from agent.sync.service import Notifier, SyncService
from store import StoreError

log = logging.getLogger("powersync")


class NotifierSlot:
    """The Nova notifier's task in the daemon's nursery; a reload replaces it between rounds."""

    def __init__(self, nursery: trio.Nursery, service: SyncService) -> None:
        self._nursery = nursery
        self._service = service
        self._running: tuple[Notifier, trio.CancelScope] | None = None

    def start(self, notifier: Notifier) -> None:
        scope = trio.CancelScope()
        self._running = (notifier, scope)
        self._service.notifier = notifier
        self._nursery.start_soon(_run_notifier, notifier, scope)

    async def replace(self, notifier: Notifier | None) -> None:
        if self._running is not None:
            old, scope = self._running
            async with _between_rounds(old):
                scope.cancel()
            self._running = None
            self._service.notifier = None
        if notifier is not None:
            self.start(notifier)


@asynccontextmanager
async def _between_rounds(notifier: Notifier) -> AsyncIterator[None]:
    pause = getattr(notifier, "between_rounds", None)  # agent.nova.notifier's; fakes lack it
    if pause is None:
        yield
        return
    async with pause():
        yield


async def _run_notifier(notifier: Notifier, scope: trio.CancelScope) -> None:
    with scope:
        try:
            await notifier.run()
        except Exception:
            log.exception("the Nova notifier stopped; notifications stay queued in the store")


class Reloader:
    """What the daemon's SIGHUP runs. ``load`` reads the config file as at start."""

    def __init__(
        self,
        load: Callable[[], AgentConfig],
        *,
        set_logging: Callable[[LoggingConfig], None] | None = None,
        make_notifier: Callable[[NovaConfig], Notifier | None] | None = None,
    ) -> None:
        self._load = load
        self._set_logging = set_logging
        self._make_notifier = make_notifier
        self._attached: tuple[SyncService, NotifierSlot, SdNotifier] | None = None
        self.current: AgentConfig | None = None  # the configuration last accepted
        self.reloads = 0

    def attach(self, service: SyncService, slot: NotifierSlot, systemd: SdNotifier) -> None:
        self._attached = (service, slot, systemd)
        self.current = service.config

    async def reload(self) -> list[Change] | None:
        """Reload once; the changes taken (None: the file was refused)."""
        assert self._attached is not None and self.current is not None
        systemd = self._attached[2]
        systemd.notify(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading")
        outcome = "refused (see the log)"
        try:
            taken = await self._reload(self.current)
            if taken is not None:
                outcome = "done"
            return taken
        finally:  # READY=1 even when refused: systemd waits for it after RELOADING=1
            self.reloads += 1
            systemd.notify(READY=1, STATUS=f"running; reload {self.reloads} {outcome}")

    async def _reload(self, old: AgentConfig) -> list[Change] | None:
        service, slot, _ = self._attached or (None, None, None)
        assert service is not None and slot is not None
        try:
            # File reads (and secret files): off the event loop.
            new = await trio.to_thread.run_sync(self._load)
        except ConfigError as exc:
            log.error("reload refused, still running on the previous configuration: %s", exc)  # noqa: TRY400
            return None
        changes = config_changes(old, new)
        fixed = restart_needed(changes)
        if fixed:
            log.warning(
                "reload of %s: %s: needs a restart to take effect; keeping the running value%s",
                old.source,
                ", ".join(map(str, fixed)),
                "s" if len(fixed) > 1 else "",
            )
            new = keep_running(new, old, [change.path for change in fixed])
        live = [change for change in changes if change not in fixed]
        if live:
            said = ", ".join(map(str, live))
        else:
            said = "nothing else changed" if fixed else "nothing changed"
        # Before a new level applies: raising it to WARNING must not hide this line.
        log.info("reloaded %s: %s", old.source, said)
        self.current = new
        if new.logging != old.logging and self._set_logging is not None:
            self._set_logging(new.logging)
        service.reconfigure(new)
        if new.nodes and (new.nodes != old.nodes or new.ipmi != old.ipmi):
            try:
                await service.upsert_static_nodes(new)
            except StoreError as exc:  # the next reload (or a restart) tries again
                log.error("reload: [[nodes]] not written: %s", exc)  # noqa: TRY400
        if new.nova != old.nova and self._make_notifier is not None:
            await slot.replace(self._make_notifier(new.nova))
        return live
