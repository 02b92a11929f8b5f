"""The notifier: drains the store's outbox to Nova, and never loses an event.

The store writes a notification row in the same transaction as the power-state change
that caused it, so nothing here runs under a node lock and a crash never loses an event.
This task reads the due rows, sends them to Nova in as few requests as fit, and records
each verdict: delivered, dropped (with the reason, kept in the store), or deferred with
exponential backoff and jitter when Nova or Keystone is unreachable. The store keeps at
most one pending row per instance (an older pending row is marked superseded when a newer
one is queued), and this task never has two events for one instance in flight, so each
instance's events reach Nova in order and a superseded state is never sent after a newer
one. A restart simply resumes from the store; a row confirmed delivered is never resent.

Times in the outbox are wall-clock seconds, so ``clock`` defaults to :func:`time.time`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import httpx
import trio

from agent.config.options import looks_like_uuid
from agent.errors import NotificationError
from agent.nova.client import POWER_TAGS, EventResult, NovaClient, PowerEvent, Verdict, chunk_events
from agent.nova.config import NovaConfig
from agent.nova.keystone import (
    KeystoneSession,
    ServiceRefusedError,
    ServiceUnavailableError,
    open_http_client,
)
from agent.storeio import AsyncStore
from store import Notification

log = logging.getLogger(__name__)

# Rows read per round, in units of a request's batch size.
_ROUND_BATCHES = 4
# Another process (``powersync power NODE off``) can queue rows without waking us: look at
# the outbox at least this often (seconds).
POLL_INTERVAL = 10.0


@attrs.frozen
class DeliveryReport:
    """What one :meth:`Notifier.drain_once` round did."""

    due: int = 0  # pending rows that were due
    delivered: int = 0
    dropped: int = 0
    deferred: int = 0
    requests: int = 0  # HTTP POSTs to Nova
    error: str | None = None  # the whole-request failure that deferred events, if any
    more: bool = False  # the round was full: more rows may already be due


class Notifier:
    """Delivers the outbox of ``store`` to Nova; run :meth:`run` in the service nursery."""

    def __init__(
        self,
        config: NovaConfig,
        store: AsyncStore,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._config = config
        self._poll_interval = poll_interval
        self._store = store
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self._keystone = KeystoneSession(config, None, wall_clock=clock)
        self._nova = NovaClient(config, self._keystone)
        self._http: httpx.AsyncClient | None = None
        self._wakeup = trio.Event()
        self._draining = trio.Lock()  # run() and a direct drain_once() never overlap
        self._not_before = 0.0  # after a whole-request failure, no request before this
        self._reported: str | None = None  # the failure kind last reported to the operator
        self._unexpected_failures = 0

    @property
    def keystone(self) -> KeystoneSession:
        return self._keystone

    @property
    def nova(self) -> NovaClient:
        return self._nova

    def wake(self) -> None:
        """New events were committed: deliver them now (unless Nova is backing off)."""
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled: at once when woken, otherwise when the next row is due
        (and at least every ``poll_interval`` seconds, for rows other processes queue)."""
        if not self._config.send_power_notifications:
            log.info("Nova notifications are off ([nova] send_power_notifications = false)")
            task_status.started()
            return
        async with open_http_client(self._config) as http:
            self._http = http
            try:
                task_status.started()
                while True:
                    self._wakeup = trio.Event()
                    report = await self._drain_guarded()
                    if report.more and report.error is None:
                        await trio.lowlevel.checkpoint()
                        continue
                    await self._wait()
            finally:
                self._http = None

    async def drain_once(self) -> DeliveryReport:
        """One round: send every due row (up to a few batches) and record the verdicts."""
        if not self._config.send_power_notifications:
            return DeliveryReport()
        async with self._draining, self._client():
            return await self._drain()

    # -- internals -----------------------------------------------------------------------

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[None]:
        if self._http is not None:
            self._keystone.use_http(self._http)
            yield
            return
        async with open_http_client(self._config) as http:
            self._keystone.use_http(http)
            yield

    async def _drain_guarded(self) -> DeliveryReport:
        """:meth:`drain_once`, but a store or programming error backs off instead of
        taking the whole service down."""
        try:
            report = await self.drain_once()
        except Exception as exc:
            self._unexpected_failures += 1
            delay = self._backoff(self._unexpected_failures - 1)
            log.error(  # noqa: TRY400 (one line; the traceback only at debug level)
                "Nova notifier failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, delay
            )
            log.debug("Nova notifier failure", exc_info=True)
            self._not_before = self._clock() + delay
            return DeliveryReport(error=str(exc))
        self._unexpected_failures = 0
        return report

    async def _wait(self) -> None:
        try:
            next_at = await self._store.next_notification_at()
        except Exception as exc:  # the drain reports store trouble; just poll again later
            log.debug("Nova notifier: cannot read the next due time: %s", exc)
            next_at = None
        delay = math.inf if next_at is None else max(0.0, next_at - self._clock())
        delay = min(delay, self._poll_interval)
        with trio.move_on_after(delay):
            await self._wakeup.wait()
        blocked = self._not_before - self._clock()
        if blocked > 0:
            await trio.sleep(blocked)

    async def _drain(self) -> DeliveryReport:
        now = self._clock()
        limit = self._config.batch_size * _ROUND_BATCHES
        rows: list[Notification] = await self._store.due_notifications(limit=limit, now=now)
        attempts = {row.id: row.attempts for row in rows}
        dropped = 0
        events: list[PowerEvent] = []
        in_round: set[str] = set()
        for row in rows:
            reason = None
            if row.power_state not in POWER_TAGS:
                reason = f"power state {row.power_state!r} is not one Nova is told about"
            elif not looks_like_uuid(row.instance_uuid):
                reason = "the instance uuid is not a UUID"
            if reason is not None:
                await self._drop(row.id, row.instance_uuid, reason)
                dropped += 1
            elif row.instance_uuid not in in_round:  # one in flight per instance keeps order
                in_round.add(row.instance_uuid)
                events.append(PowerEvent(row.id, row.instance_uuid, row.power_state))

        delivered = deferred = 0
        error: NotificationError | None = None
        requests_before = self._nova.requests
        batches = list(
            chunk_events(
                events,
                max_events=self._config.batch_size,
                max_body_bytes=self._config.max_body_bytes,
            )
        )
        for index, batch in enumerate(batches):
            try:
                results = await self._nova.send(batch)
            except (ServiceUnavailableError, ServiceRefusedError) as exc:
                error = exc
                remaining = [event for later in batches[index:] for event in later]
                await self._defer(remaining, attempts, str(exc))
                deferred += len(remaining)
                break
            ok, gone, later, failure = await self._record(results, attempts)
            delivered, dropped, deferred = delivered + ok, dropped + gone, deferred + later
            if failure is not None:
                error = failure
                rest = [event for later_batch in batches[index + 1 :] for event in later_batch]
                await self._defer(rest, attempts, str(failure))
                deferred += len(rest)
                break
        if error is not None:
            self._report_failure(error, pending=deferred)
            smallest = min(attempts.get(event.key, 0) for event in events) if events else 0
            self._not_before = self._clock() + self._backoff(smallest)
        elif delivered and self._reported is not None:
            log.info("Nova notifications are being delivered again")
            self._reported = None
        return DeliveryReport(
            due=len(rows),
            delivered=delivered,
            dropped=dropped,
            deferred=deferred,
            requests=self._nova.requests - requests_before,
            error=None if error is None else str(error),
            more=len(rows) >= limit,
        )

    async def _record(
        self, results: Sequence[EventResult], attempts: dict[int, int]
    ) -> tuple[int, int, int, NotificationError | None]:
        delivered = [result.event.key for result in results if result.verdict is Verdict.DELIVERED]
        if delivered:
            await self._store.mark_delivered(delivered)
        dropped = deferred = 0
        failure: NotificationError | None = None
        for result in results:
            if result.verdict is Verdict.DROPPED:
                await self._drop(result.event.key, result.event.instance_uuid, result.reason)
                dropped += 1
            elif result.verdict is Verdict.RETRY:
                await self._defer([result.event], attempts, result.reason)
                deferred += 1
                failure = failure or result.error
        return len(delivered), dropped, deferred, failure

    async def _drop(self, key: int, instance: str, reason: str) -> None:
        log.warning("Nova power-update for instance %s dropped: %s", instance, reason)
        await self._store.mark_dropped(key, reason)

    async def _defer(
        self, events: Sequence[PowerEvent], attempts: dict[int, int], error: str
    ) -> None:
        now = self._clock()
        for event in events:
            at = now + self._backoff(attempts.get(event.key, 0))
            await self._store.defer_notification(
                event.key,
                next_attempt_at=at,
                error=error,
            )

    def _backoff(self, attempts: int) -> float:
        """Exponential in the attempts made so far, capped, with jitter in [50 %, 100 %]."""
        base = self._config.retry_delay * 2.0 ** min(attempts, 30)
        return min(self._config.retry_max_delay, base) * (0.5 + self._rng.random() / 2)

    def _report_failure(self, error: NotificationError, *, pending: int) -> None:
        kind = error.kind if isinstance(error, ServiceRefusedError) else "unavailable"
        if kind == self._reported:
            log.debug("Nova notifications still failing: %s", error)
            return
        self._reported = kind
        if isinstance(error, ServiceRefusedError):
            log.error("%s (%d notifications kept in the outbox)", error, pending)
        else:
            log.warning("%s; %d notifications kept in the outbox, retrying", error, pending)
