"""The notifier: drains the store's outbox to Nova, and never loses an event.

The store writes a notification row in the same transaction as the power-state change
that caused it, so nothing here runs under a node lock and a crash never loses an event.
This task reads the due rows, sends them to Nova in as few requests as fit, and records
each verdict: delivered, dropped (with the reason, kept in the store), or deferred with
exponential backoff and jitter when Nova or Keystone is unreachable. The store marks an
instance's older pending row superseded when a newer one is queued; this task sends a row
only once every older pending row of its instance has gone, and never has two events for
one instance in flight, so each instance's events reach Nova in order.

A request whose outcome is unknown (it timed out, or the connection broke after sending)
may still be applied by Nova later, after a newer event. Its instances are *in doubt* for
``[nova] in_doubt_window`` seconds: an event with a different state waits until the window
has passed (kept in the store's meta, so a restart keeps waiting), so Nova ends at the
newest state. Rows other processes queue (``powersync power``) are noticed within
``watch_interval`` by watching the store's files, so each action's event is sent before
the next action can supersede it. A restart resumes from the store; a row confirmed
delivered is never resent.

Times in the outbox are wall-clock seconds, so ``clock`` defaults to :func:`time.time`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import httpx
import trio

from agent.config.nodes import looks_like_uuid
from agent.errors import NotificationError
from agent.nova.client import (
    POWER_TAGS,
    EventResult,
    NovaClient,
    OutcomeUnknownError,
    PowerEvent,
    Verdict,
    chunk_events,
)
from agent.nova.config import NovaConfig
from agent.nova.keystone import (
    KeystoneSession,
    ServiceRefusedError,
    ServiceUnavailableError,
    open_http_client,
)
from agent.storeio import AsyncStore
from store import Lease, LeaseLost, Notification, StoreError

log = logging.getLogger(__name__)

# Rows read per round, in units of a request's batch size.
_ROUND_BATCHES = 4
# Another process (``powersync power NODE off``) can queue rows without waking us: look at
# the outbox at least this often (seconds), and at the store's files this often.
POLL_INTERVAL = 10.0
WATCH_INTERVAL = 0.1
# Rows are read due or not (now + this): a due row must not overtake an older one deferred.
_EVERY_PENDING = 1e9
# The store's meta key holding the instances in doubt: {instance: {power state: until}}.
META_IN_DOUBT = "nova_in_doubt"


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
        watch_interval: float = WATCH_INTERVAL,
        outbox_lease: Callable[[], Lease | None] | None = None,
    ) -> None:
        self._config = config
        # Several agents on a site: only the holder of the outbox lease drains (fenced).
        self._outbox_lease = outbox_lease
        self._poll_interval = poll_interval
        self._watch_interval = watch_interval
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
        self._store_failures = 0
        # Instance -> {power state: wall-clock time until which Nova may still apply it}.
        self._doubts: dict[str, dict[str, float]] | None = None  # None: not read from meta yet

    @property
    def keystone(self) -> KeystoneSession:
        return self._keystone

    @property
    def nova(self) -> NovaClient:
        return self._nova

    def wake(self) -> None:
        """New events were committed: deliver them now (unless Nova is backing off)."""
        self._wakeup.set()

    @asynccontextmanager
    async def between_rounds(self) -> AsyncIterator[None]:
        """No round runs inside this block: a reload stops this notifier here, so no POST is
        cut off halfway."""
        async with self._draining:
            yield

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled: at once when woken, otherwise when the next row is due
        (and at least every ``poll_interval`` seconds, for rows other processes queue)."""
        if not self._config.send_power_notifications:
            log.info("Nova notifications are off ([nova] send_power_notifications = false)")
            task_status.started()
            return
        async with open_http_client(self._config) as http, trio.open_nursery() as nursery:
            self._http = http
            try:
                paths = _store_files(self._store)
                if paths:
                    nursery.start_soon(self._watch_files, paths)
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
        """:meth:`drain_once`, but store trouble (locked, full disk) backs off instead of
        taking the whole service down."""
        try:
            report = await self.drain_once()
        except StoreError as exc:
            self._store_failures += 1
            delay = self._backoff(self._store_failures - 1)
            log.error(  # noqa: TRY400 (one line; the traceback only at debug level)
                "Nova notifier: store error (%s); retrying in %.0f s", exc, delay
            )
            log.debug("Nova notifier store error", exc_info=True)
            self._not_before = self._clock() + delay
            return DeliveryReport(error=str(exc))
        self._store_failures = 0
        return report

    async def _watch_files(self, paths: Sequence[str]) -> None:
        """Wake when the store's files change: another process may have queued rows. Our
        own writes wake us too, which costs one read of the outbox."""
        last = await trio.to_thread.run_sync(_stamps, paths)
        while True:
            await trio.sleep(self._watch_interval)
            stamps = await trio.to_thread.run_sync(_stamps, paths)
            if stamps != last:
                last = stamps
                self.wake()

    async def _wait(self) -> None:
        try:
            next_at = await self._store.next_notification_at()
        except StoreError as exc:  # the drain reports store trouble; just poll again later
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
        fence: Lease | None = None
        if self._outbox_lease is not None:
            fence = self._outbox_lease()
            if fence is None:
                return DeliveryReport()  # another agent drains the outbox
        now = self._clock()
        limit = self._config.batch_size * _ROUND_BATCHES
        doubts = await self._load_doubts()
        # Every pending row, oldest first: only an instance's oldest one may go, so a newer
        # state never overtakes an older row that is waiting for its retry.
        if fence is not None:
            try:  # the drainer's fence, checked by the store's clock (the read is a probe)
                await self._store.due_notifications(limit=1, fence=fence)
            except LeaseLost:
                log.info("Nova notifier: the outbox lease moved to another agent")
                return DeliveryReport()
        rows: list[Notification] = await self._store.due_notifications(
            limit=limit, now=now + _EVERY_PENDING
        )
        attempts = {row.id: row.attempts for row in rows}
        due = sum(1 for row in rows if row.next_attempt_at <= now)
        dropped = 0
        events: list[PowerEvent] = []
        first: set[str] = set()
        queued_behind = False  # a later row of an instance waits for this round's one
        for row in rows:
            if row.instance_uuid in first:  # one in flight per instance keeps order
                queued_behind = True
                continue
            first.add(row.instance_uuid)
            if row.next_attempt_at > now:
                continue
            reason = None
            if row.power_state not in POWER_TAGS:
                reason = f"power state {row.power_state!r} is not one Nova is told about"
            elif not looks_like_uuid(row.instance_uuid):
                reason = "the instance uuid is not a UUID"
            if reason is not None:
                await self._drop(row.id, row.instance_uuid, reason)
                dropped += 1
                continue
            until = _held_until(doubts, row.instance_uuid, row.power_state, now)
            if until is not None:
                await self._hold(row, until)
                continue
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
                if isinstance(exc, OutcomeUnknownError):
                    await self._doubt(batch)
                remaining = [event for later in batches[index:] for event in later]
                await self._defer(remaining, attempts, str(exc))
                deferred += len(remaining)
                break
            await self._doubt(
                [r.event for r in results if isinstance(r.error, OutcomeUnknownError)]
            )
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
            due=due,
            delivered=delivered,
            dropped=dropped,
            deferred=deferred,
            requests=self._nova.requests - requests_before,
            error=None if error is None else str(error),
            # Rows past this round's window, or behind one that just went, may be due now.
            more=(len(rows) >= limit or queued_behind) and delivered + dropped > 0,
        )

    async def _load_doubts(self) -> dict[str, dict[str, float]]:
        if self._doubts is None:
            text = await self._store.get_meta(META_IN_DOUBT)
            self._doubts = _parse_doubts(text)
        return self._doubts

    async def _doubt(self, events: Sequence[PowerEvent]) -> None:
        """Nova may apply these events until the window has passed: remember (and persist)
        that, so no different state is sent for their instances before then."""
        if not events:
            return
        doubts = await self._load_doubts()
        now = self._clock()
        until = now + self._config.in_doubt_window
        for event in events:
            doubts.setdefault(event.instance_uuid, {})[event.power_state] = until
        for instance in list(doubts):
            states = {s: t for s, t in doubts[instance].items() if t > now}
            if states:
                doubts[instance] = states
            else:
                del doubts[instance]
        log.debug(
            "Nova may still apply %d power-update(s) whose request got no answer; a "
            "different state for those instances waits %g s ([nova] in_doubt_window)",
            len(events),
            self._config.in_doubt_window,
        )
        await self._store.set_meta(META_IN_DOUBT, json.dumps(doubts, sort_keys=True))

    async def _hold(self, row: Notification, until: float) -> None:
        log.info(
            "Nova power-update for instance %s held for %.1f s: an earlier request with "
            "another state got no answer and may still be applied",
            row.instance_uuid,
            until - self._clock(),
        )
        await self._store.defer_notification(
            row.id,
            next_attempt_at=until,
            error="held: an earlier request with another state may still be applied by Nova",
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


def _held_until(
    doubts: dict[str, dict[str, float]], instance: str, state: str, now: float
) -> float | None:
    """When ``state`` may be sent for ``instance``: None for now, or once no request with
    another state can still land (the same state landing late is harmless)."""
    others = [until for other, until in doubts.get(instance, {}).items() if other != state]
    latest = max(others, default=now)
    return latest if latest > now else None


def _parse_doubts(text: str | None) -> dict[str, dict[str, float]]:
    if text is None:
        return {}
    try:
        raw = json.loads(text)
        return {
            str(instance): {str(state): float(until) for state, until in states.items()}
            for instance, states in raw.items()
        }
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("Nova notifier: ignoring unreadable meta %s (%s)", META_IN_DOUBT, exc)
        return {}


def _store_files(store: AsyncStore) -> list[str]:
    """The files a file-backed store writes (SQLite's WAL beside it); none for a server."""
    path = getattr(store.store, "path", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return []
    return [path, path + "-wal"]


def _stamps(paths: Sequence[str]) -> list[tuple[int, int, int, int] | None]:
    stamps: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stamps.append(None)
        else:
            stamps.append((stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return stamps
