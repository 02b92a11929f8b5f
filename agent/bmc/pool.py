"""The agent's BMC sessions: one per node, long-lived or per use, never two requests at once.

The service never talks to a protocol: it leases a :class:`NodeBmc` from a :class:`BmcPool`
for one node and asks it for the power state in Ironic's words. Sessions come from an
opener (:data:`agent.bmc.seam.BmcOpener`: the drivers', or a test's).

* ``persistent`` (default): the session stays open across cycles. The pool keeps one small
  record per node and no task: a command runs in the caller's task, logging in first when
  the node has no session. After any failure the session is closed (in a short task of the
  pool's), so the next command starts from a fresh login. One pool-wide task sends a
  keepalive on sessions idle for ``keepalive_interval``; idle sessions cost no timer each.
* ``per-cycle``: a fresh session for each lease (one node's work in one cycle), closed when
  the lease ends, for BMCs that have few session slots.

Per BMC endpoint (address, port) at most one request is in flight (a login counts), and an
optional minimum gap separates commands. Only :class:`~agent.bmc.seam.BmcError` counts as a
BMC failure (and closes the session); anything else is a bug and goes up unchanged.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import attrs
import trio

from agent.bmc.backoff import LoginBackoff
from agent.bmc.gate import EndpointGate
from agent.bmc.seam import (
    BmcEndpoint,
    BmcError,
    BmcOpener,
    BmcSession,
    BmcUnavailable,
    describe_error,
    power_word,
    session_action,
)

log = logging.getLogger("powersync.bmc")

SESSION_MODES = ("persistent", "per-cycle")
# How long closing a session may take (a logout to a BMC that may be gone).
CLOSE_TIMEOUT = 2.0
# At most this many keepalives in flight at once (a burst of idle sessions falls due together).
KEEPALIVE_CONCURRENCY = 16
# Sessions closed at once when the pool closes (each waits up to ipmi's 0.25 s for an answer).
CLOSE_CONCURRENCY = 256


@attrs.define
class PoolCounters:
    """Totals across every session the pool opened (for metrics): see ``statistics()``."""

    requests: int = 0
    failures: int = 0
    logins: int = 0
    retransmits: int = 0
    drops: int = 0
    sessions_opened: int = 0
    rtt_sum: float = 0.0
    failures_by_type: dict[str, int] = attrs.field(factory=dict)


class NodeBmc(Protocol):
    """What a lease gives the service: power in Ironic's words, and the hardware's health as
    the latest read saw it ("ok", the active faults, or None where the driver reads none)."""

    async def get_power(self) -> str: ...
    async def set_power(self, action: str) -> None: ...
    @property
    def health(self) -> str | None: ...


# What a node's BMC work is doing, kept as a number and put into words only when asked.
_LEASED, _WAITING, _LOGIN, _COMMAND = range(4)
_STAGE_WORDS = (
    "waiting for the session to {}",
    "waiting for another command to {}",
    "login to {}",
    "a command to {}",
)
_STATISTICS = ("logins", "retransmits", "drops")  # what sessions count for the pool


class _Record:
    """One node's BMC: its session (if logged in) and what it last did. Also its lease."""

    __slots__ = (
        "context",
        "endpoint",
        "forgotten",
        "gate",
        "health",
        "in_use",
        "key",
        "last_used",
        "pool",
        "session",
        "stage",
    )

    def __init__(self, pool: BmcPool, key: str, endpoint: BmcEndpoint, gate: EndpointGate) -> None:
        self.pool = pool
        self.key = key
        self.endpoint = endpoint
        self.gate = gate
        self.session: BmcSession | None = None
        self.context: AbstractAsyncContextManager[BmcSession] | None = None
        self.last_used = -math.inf
        self.in_use = False  # someone holds the gate for this record
        self.forgotten = False
        self.stage = _LEASED
        self.health: str | None = None

    # A persistent lease is the record itself; leaving it leaves the session open.
    async def __aenter__(self) -> _Record:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def get_power(self) -> str:
        on = await self.pool._run(self, _read_power)
        # A session that reads health along with power says so (the seam's BmcSession.health).
        self.health = getattr(self.session, "health", None)
        return power_word(on)

    async def set_power(self, action: str) -> None:
        word = session_action(action)
        await self.pool._run(self, lambda session: session.set_power(word))


def _read_power(session: BmcSession) -> Awaitable[bool]:
    return session.get_power()


class BmcPool:
    """Sessions for many nodes. Create with :func:`open_bmc_pool`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        opener: BmcOpener,
        *,
        keepalive_interval: float = 25.0,
        min_command_interval: float = 0.0,
    ) -> None:
        self._nursery = nursery
        self._opener = opener
        self.keepalive_interval = keepalive_interval
        self.min_command_interval = min_command_interval
        self._gates: dict[tuple[str, int], EndpointGate] = {}
        self._records: dict[str, _Record] = {}  # persistent sessions, per node key
        self._per_cycle: dict[str, _Record] = {}  # the latest per-cycle lease, for stage()
        # Persistent sessions nobody is using, least recently used first.
        self._idle: OrderedDict[str, _Record] = OrderedDict()
        self._open = 0
        self._closed = False
        self._keepalive_scope = trio.CancelScope()
        self._counters = PoolCounters()
        self.last_rtt: dict[str, float] = {}  # per node key, seconds
        self.logins_refused = LoginBackoff()
        self._keepalive_slots = trio.CapacityLimiter(KEEPALIVE_CONCURRENCY)
        self._closers = CLOSE_CONCURRENCY

    # --- public -------------------------------------------------------------------------

    def lease(self, key: str, endpoint: BmcEndpoint) -> AbstractAsyncContextManager[NodeBmc]:
        """The BMC of node ``key`` for one piece of work (one node in one cycle)."""
        if self._closed:
            raise BmcUnavailable("the BMC pool is closed")
        if endpoint.session_mode == "per-cycle":
            self._forget(key)
            return self._per_cycle_lease(key, endpoint)
        record = self._records.get(key)
        if record is None or (record.endpoint is not endpoint and record.endpoint != endpoint):
            self._forget(key)
            self._per_cycle.pop(key, None)
            record = self._records[key] = _Record(self, key, endpoint, self._gate(endpoint))
        record.stage = _LEASED
        return record

    def forget(self, key: str) -> None:
        """Close the long-lived session of a node that left the inventory."""
        self._forget(key)
        self._per_cycle.pop(key, None)
        self.last_rtt.pop(key, None)
        self.logins_refused.forget(key)

    def retain(self, keys: set[str]) -> None:
        """Close the long-lived sessions of every node not in ``keys`` (deleted nodes)."""
        for key in [key for key in self._records if key not in keys]:
            self._forget(key)
        for key in [key for key in self._per_cycle if key not in keys]:
            del self._per_cycle[key]
        for key in [key for key in self.last_rtt if key not in keys]:
            del self.last_rtt[key]
        self.logins_refused.retain(keys)

    def stage(self, key: str) -> str | None:
        """What node ``key``'s latest BMC work was doing (for "no answer within ..." errors)."""
        record = self._records.get(key) or self._per_cycle.get(key)
        if record is None:
            return None
        return _STAGE_WORDS[record.stage].format(record.endpoint.label)

    def open_sessions(self) -> int:
        return self._open

    def limit_background(self, in_flight: int) -> None:
        """At most ``in_flight`` keepalives at once, and as many logouts at once on closing
        (the sync's worker count: the pool's own traffic stays within the operator's bound)."""
        self._keepalive_slots.total_tokens = max(1, min(in_flight, KEEPALIVE_CONCURRENCY))
        self._closers = max(1, min(in_flight, CLOSE_CONCURRENCY))

    def statistics(self) -> PoolCounters:
        """The totals so far: closed sessions' counts plus the live sessions' current ones."""
        totals = attrs.evolve(
            self._counters, failures_by_type=dict(self._counters.failures_by_type)
        )
        for record in self._records.values():
            if record.session is not None:
                _add_counts(totals, record.session)
        return totals

    async def aclose(self) -> None:
        """Close every long-lived session (Close Session sent, bounded by CLOSE_TIMEOUT).

        Sessions in use are closed by their user as soon as its command ends.
        """
        self._closed = True
        self._keepalive_scope.cancel()
        closing: list[tuple[AbstractAsyncContextManager[Any], str]] = []
        for record in self._records.values():
            record.forgotten = True
            context = None if record.in_use else self._detach(record)
            if context is not None:
                closing.append((context, record.endpoint.label))
        self._records.clear()
        self._idle.clear()
        # A few closers, not a task per session: 10,000 tasks at once cost ~30 MB.
        async with trio.open_nursery() as nursery:
            for _ in range(min(self._closers, len(closing))):
                nursery.start_soon(self._close_each, closing)

    async def _close_each(
        self, closing: list[tuple[AbstractAsyncContextManager[Any], str]]
    ) -> None:
        while closing:
            context, label = closing.pop()
            await self._close(context, label)

    # --- one request --------------------------------------------------------------------

    async def _run(self, record: _Record, command: Callable[[BmcSession], Awaitable[Any]]) -> Any:
        """Run ``command`` on ``record``'s session in the caller's task, logging in first."""
        if self._closed:
            raise BmcUnavailable(f"session to {record.endpoint.label} is closed")
        gate = record.gate
        record.stage = _WAITING
        await gate.acquire()
        if record.forgotten:  # before or while we waited: its session is closed
            gate.release()
            raise BmcUnavailable(f"session to {record.endpoint.label} is closed")
        record.in_use = True
        self._idle.pop(record.key, None)
        started: float | None = None
        try:
            if self.min_command_interval > 0:
                await trio.sleep_until(gate.last_end + self.min_command_interval)
            session = record.session
            if session is None:
                record.stage = _LOGIN
                session = await self._paced_login(record)
            record.stage = _COMMAND
            started = trio.current_time()
            result = await command(session)
        except BmcError as exc:
            if started is not None:
                self._count_failure(exc)
                self._close_soon(record)  # the client already logged in again once
            raise
        finally:
            # A caller cancelled mid-command keeps the session: the client forgets the
            # request, drops its late answer as stale, and the session stays valid.
            ended = self._release(record)
        assert started is not None
        self._count_request(record, ended - started)
        return result

    async def _paced_login(self, record: _Record) -> BmcSession:
        """Log in unless the BMC refused this node's login recently (see agent.bmc.backoff)."""
        self.logins_refused.check(record.key, record.endpoint, trio.current_time())
        try:
            session = await self._login(record)
        except BmcError as exc:
            self.logins_refused.refused(record.key, record.endpoint, exc, trio.current_time())
            raise
        self.logins_refused.forget(record.key)
        return session

    async def _login(self, record: _Record) -> BmcSession:
        context = self._opener(record.endpoint)
        # Cancelled or failed here, the context cleans up after itself (see BmcOpener).
        session = await context.__aenter__()
        record.session, record.context = session, context
        self._open += 1
        self._counters.sessions_opened += 1
        return session

    def _release(self, record: _Record) -> float:
        """Give the gate back; the session goes back to the idle list, or is closed."""
        ended = trio.current_time()
        gate = record.gate
        gate.last_end = ended
        gate.release()
        record.in_use = False
        if record.session is not None:
            if self._records.get(record.key) is record:
                record.last_used = ended
                self._idle[record.key] = record  # popped when taken: now the most recent
            elif record.forgotten:
                self._close_soon(record)
        return ended

    def _count_request(self, record: _Record, rtt: float) -> None:
        self._counters.requests += 1
        self._counters.rtt_sum += rtt
        self.last_rtt[record.key] = rtt

    def _count_failure(self, exc: BmcError) -> None:
        counters = self._counters
        counters.failures += 1
        name = exc.kind
        counters.failures_by_type[name] = counters.failures_by_type.get(name, 0) + 1

    # --- closing ------------------------------------------------------------------------

    def _forget(self, key: str) -> None:
        record = self._records.pop(key, None)
        if record is None:
            return
        self._idle.pop(key, None)
        record.forgotten = True
        if not record.in_use:  # else its user closes it when done
            self._close_soon(record)

    def _detach(self, record: _Record) -> AbstractAsyncContextManager[BmcSession] | None:
        """Take the session off ``record`` (its counters added in); its context to close."""
        context = record.context
        if context is None:
            return None
        assert record.session is not None
        _add_counts(self._counters, record.session)
        record.session = record.context = None
        self._idle.pop(record.key, None)
        self._open -= 1
        return context

    def _close_soon(self, record: _Record) -> None:
        context = self._detach(record)
        if context is not None:
            try:
                self._nursery.start_soon(self._close, context, record.endpoint.label)
            except RuntimeError:  # the pool has ended: nobody left to close it
                log.debug("session to %s left unclosed", record.endpoint.label)

    async def _close(self, context: AbstractAsyncContextManager[Any], label: str) -> None:
        """Leave a session's context: Close Session, shielded and bounded."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            try:
                await context.__aexit__(None, None, None)
            except BmcError as exc:
                log.debug("closing the session to %s failed: %s", label, describe_error(exc))
        if scope.cancelled_caught:
            log.debug("closing the session to %s timed out", label)

    # --- per-cycle sessions -------------------------------------------------------------

    @asynccontextmanager
    async def _per_cycle_lease(self, key: str, endpoint: BmcEndpoint) -> AsyncIterator[NodeBmc]:
        """A session of this lease's own, logged in on first use and closed when it ends."""
        record = self._per_cycle[key] = _Record(self, key, endpoint, self._gate(endpoint))
        try:
            yield record
        finally:
            if record.in_use:  # used from another task still: it closes the session
                record.forgotten = True
            else:
                context = self._detach(record)
                if context is not None:
                    # Before the lease ends (the BMC's slot is free for the next one), but
                    # a dead BMC costs at most CLOSE_TIMEOUT, even in a cancelled cycle.
                    await self._close(context, endpoint.label)

    def _gate(self, endpoint: BmcEndpoint) -> EndpointGate:
        address = (endpoint.host, endpoint.port)
        gate = self._gates.get(address)
        if gate is None:
            gate = self._gates[address] = EndpointGate()
        return gate

    # --- keepalive ----------------------------------------------------------------------

    async def _keepalive_loop(self) -> None:
        """Send a keepalive on every session idle for ``keepalive_interval``."""
        slots = self._keepalive_slots
        with self._keepalive_scope:
            async with trio.open_nursery() as nursery:
                while True:
                    interval = self.keepalive_interval  # a reload may change it
                    idle = self._idle
                    if not idle:
                        await trio.sleep(interval)  # anything idle from now is due later
                        continue
                    key = next(iter(idle))
                    record = idle[key]
                    due = record.last_used + interval
                    if due > trio.current_time():
                        await trio.sleep_until(due)
                        continue
                    del idle[key]
                    await slots.acquire_on_behalf_of(record)
                    nursery.start_soon(self._keepalive, record, slots)

    async def _keepalive(self, record: _Record, slots: trio.CapacityLimiter) -> None:
        try:
            await self._keepalive_unless_busy(record)
        finally:
            slots.release_on_behalf_of(record)

    async def _keepalive_unless_busy(self, record: _Record) -> None:
        interval = self.keepalive_interval
        gate = record.gate
        acquired = False
        with trio.move_on_after(interval):
            await gate.acquire()
            acquired = True
        if not acquired:
            return  # busy all along: in use, not idle
        session = record.session
        if (
            session is None
            or record.forgotten
            or record.last_used + interval > trio.current_time()  # used meanwhile
        ):
            gate.release()
            return
        record.in_use = True
        started = trio.current_time()
        failure: str | None = None
        try:
            with trio.move_on_after(interval) as deadline:
                if self.min_command_interval > 0:
                    await trio.sleep_until(gate.last_end + self.min_command_interval)
                started = trio.current_time()
                await session.keepalive()
            if deadline.cancelled_caught:
                failure = "no answer before the deadline"
        except BmcError as exc:
            self._count_failure(exc)
            failure = describe_error(exc)
        finally:
            if failure is not None:
                log.info(
                    "keepalive to %s failed, closing the session: %s",
                    record.endpoint.label,
                    failure,
                )
                self._close_soon(record)
            ended = self._release(record)
        if failure is None:
            self._count_request(record, ended - started)


def _add_counts(totals: PoolCounters, session: BmcSession) -> None:
    """Add what ``session`` counted since its login to ``totals``."""
    stats = session.statistics()
    for name in _STATISTICS:
        setattr(totals, name, getattr(totals, name) + int(getattr(stats, name, 0) or 0))


@asynccontextmanager
async def open_bmc_pool(
    opener: BmcOpener,
    *,
    keepalive_interval: float = 25.0,
    min_command_interval: float = 0.0,
) -> AsyncIterator[BmcPool]:
    """A pool whose long-lived sessions are closed (logged out) when the block ends.

    An exception from the block comes out as itself, not wrapped in the pool's nursery's
    ExceptionGroup (the pool's own tasks raise nothing), so callers catch what they expect.
    """
    try:
        async with trio.open_nursery() as nursery:
            pool = BmcPool(
                nursery,
                opener,
                keepalive_interval=keepalive_interval,
                min_command_interval=min_command_interval,
            )
            nursery.start_soon(pool._keepalive_loop)
            try:
                yield pool
            finally:
                await pool.aclose()
                # Closing tasks are bounded by CLOSE_TIMEOUT; never wait forever.
                nursery.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT + 1.0
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group.exceptions[0].__cause__
        raise


__all__: Sequence[str] = (
    "BmcPool",
    "NodeBmc",
    "open_bmc_pool",
)
