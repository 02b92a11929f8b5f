"""The agent's BMC sessions: one per node, long-lived or per use, never two requests at once.

The service never talks to ``ipmi`` directly; it leases a :class:`NodeBmc` from a
:class:`BmcPool` for one node and asks it for the power state in Ironic's words.

* ``persistent`` (default): the session stays open across cycles. The pool keeps one small
  record per node and no task: a command runs in the caller's task, logging in first when
  the node has no session. After any failure the session is closed (in a short task of the
  pool's), so the next command starts from a fresh login. One pool-wide task sends a
  keepalive on sessions idle for ``keepalive_interval``; idle sessions cost no timer each.
* ``per-cycle``: a fresh session for each lease (one node's work in one cycle), closed when
  the lease ends, for BMCs that have few session slots.

Per BMC endpoint (address, port) at most one request is in flight (a login counts), and an
optional minimum gap separates commands. Anything the opener yields that has ``get_power``/
``set_power``/``keepalive``/``statistics`` will do, which is how the tests drive fake BMCs.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from agent.bmc.gate import EndpointGate
from agent.errors import AgentError
from agent.sync.policy import POWER_OFF, POWER_ON
from ipmi import RetryPolicy, open_bmc
from ipmi.transport import peer_label

if TYPE_CHECKING:
    from agent.config.options import IpmiConfig

log = logging.getLogger("powersync.bmc")

SESSION_MODES = ("persistent", "per-cycle")
# Client action words for the record's power states and the CLI's action names.
CLIENT_ACTIONS = {
    POWER_ON: "on",
    POWER_OFF: "off",
    "on": "on",
    "off": "off",
    "cycle": "cycle",
    "reset": "reset",
    "soft": "soft",
    "soft-off": "soft",
}
# How long closing a session may take (Close Session to a BMC that may be gone).
CLOSE_TIMEOUT = 2.0
# At most this many keepalives in flight at once (a burst of idle sessions falls due together).
KEEPALIVE_CONCURRENCY = 16
# Sessions closed at once when the pool closes (each waits up to ipmi's 0.25 s for an answer).
CLOSE_CONCURRENCY = 256


class BmcSessionLike(Protocol):
    async def get_power(self) -> bool: ...
    async def set_power(self, action: str) -> None: ...
    async def keepalive(self) -> None: ...
    def statistics(self) -> Any: ...


@attrs.frozen
class BmcEndpoint:
    """Where and how to log in to one node's BMC."""

    host: str
    port: int
    username: str
    password: str = attrs.field(repr=False)
    cipher_suites: tuple[int, ...] = (17, 3)
    privilege: str = "administrator"
    session_mode: str = "persistent"

    @property
    def label(self) -> str:
        return peer_label(self.host, self.port)


BmcOpener = Callable[[BmcEndpoint], AbstractAsyncContextManager[BmcSessionLike]]
"""Logs in on enter, sends Close Session on exit.

The pool enters the context in one task (the first caller's) and leaves it in another (a
closing task of its own), so the context must not hold a cancel scope or a nursery across
its ``yield``. ``ipmi.open_bmc`` holds neither; an ``asynccontextmanager`` that only awaits
before and after its ``yield`` is fine. If entering fails or is cancelled, the context must
clean up after itself (``open_bmc`` closes a half-made session).
"""


class BmcUnavailable(AgentError):
    """The pool is closed or the request was abandoned."""


def retry_policy(ipmi: IpmiConfig) -> RetryPolicy:
    """The ``[ipmi]`` section's retry settings as the client's policy."""
    return RetryPolicy(
        first_timeout=ipmi.retry_timeout,
        backoff=ipmi.retry_backoff,
        max_timeout=max(ipmi.retry_max_timeout, ipmi.retry_timeout),
        retries=ipmi.retries,
        adaptive=ipmi.adaptive_retry,
        min_timeout=ipmi.retry_min_timeout,
    )


def configured_opener(ipmi: IpmiConfig) -> BmcOpener:
    """The production opener: ``ipmi.open_bmc`` with the ``[ipmi]`` section's retry settings."""
    retry = retry_policy(ipmi)

    def opener(endpoint: BmcEndpoint) -> AbstractAsyncContextManager[BmcSessionLike]:
        context: AbstractAsyncContextManager[BmcSessionLike] = open_bmc(
            endpoint.host,
            endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            privilege=endpoint.privilege,
            cipher_suites=endpoint.cipher_suites,
            retry=retry,
        )
        return context

    return opener


def describe_error(exc: BaseException) -> str:
    """The error text recorded on the node: the BMC path's own message, never a password."""
    if isinstance(exc, trio.TooSlowError):
        return "no answer before the deadline"
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@attrs.define
class PoolCounters:
    """Totals across every session the pool opened (for metrics)."""

    requests: int = 0
    failures: int = 0
    logins: int = 0
    retransmits: int = 0
    drops: int = 0
    sessions_opened: int = 0
    rtt_sum: float = 0.0
    failures_by_type: dict[str, int] = attrs.field(factory=dict)


class NodeBmc(Protocol):
    """What a lease gives the service: power in Ironic's words."""

    async def get_power(self) -> str: ...
    async def set_power(self, action: str) -> None: ...


def power_word(on: bool) -> str:
    return POWER_ON if on else POWER_OFF


def _client_action(action: str) -> str:
    try:
        return CLIENT_ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown power action {action!r}") from None


# What a node's BMC work is doing, kept as a number and put into words only when asked.
_LEASED, _WAITING, _LOGIN, _COMMAND = range(4)
_STAGE_WORDS = (
    "waiting for the session to {}",
    "waiting for another command to {}",
    "login to {}",
    "a command to {}",
)
_STATISTICS = ("logins", "retransmits", "drops")  # what sessions count for the pool
_NO_STATISTICS = (0, 0, 0)


class _Record:
    """One node's BMC: its session (if logged in) and what it last did. Also its lease."""

    __slots__ = (
        "context",
        "endpoint",
        "forgotten",
        "gate",
        "in_use",
        "key",
        "last_used",
        "pool",
        "seen",
        "session",
        "stage",
    )

    def __init__(self, pool: BmcPool, key: str, endpoint: BmcEndpoint, gate: EndpointGate) -> None:
        self.pool = pool
        self.key = key
        self.endpoint = endpoint
        self.gate = gate
        self.session: BmcSessionLike | None = None
        self.context: AbstractAsyncContextManager[BmcSessionLike] | None = None
        self.seen: tuple[int, ...] = _NO_STATISTICS  # the session's counts already added
        self.last_used = -math.inf
        self.in_use = False  # someone holds the gate for this record
        self.forgotten = False
        self.stage = _LEASED

    # A persistent lease is the record itself; leaving it leaves the session open.
    async def __aenter__(self) -> _Record:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def get_power(self) -> str:
        return power_word(await self.pool._run(self, _read_power))

    async def set_power(self, action: str) -> None:
        word = _client_action(action)
        await self.pool._run(self, lambda session: session.set_power(word))


def _read_power(session: BmcSessionLike) -> Awaitable[bool]:
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

    # --- public -------------------------------------------------------------------------

    def lease(self, key: str, endpoint: BmcEndpoint) -> AbstractAsyncContextManager[NodeBmc]:
        """The BMC of node ``key`` for one piece of work (one node in one cycle)."""
        if self._closed:
            raise BmcUnavailable("the BMC pool is closed")
        if endpoint.session_mode == "per-cycle":
            self._forget(key)
            return self._per_cycle_lease(key, endpoint)
        record = self._records.get(key)
        if record is None or record.endpoint != endpoint:
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

    def retain(self, keys: set[str]) -> None:
        """Close the long-lived sessions of every node not in ``keys`` (deleted nodes)."""
        for key in [key for key in self._records if key not in keys]:
            self._forget(key)
        for key in [key for key in self._per_cycle if key not in keys]:
            del self._per_cycle[key]
        for key in [key for key in self.last_rtt if key not in keys]:
            del self.last_rtt[key]

    def stage(self, key: str) -> str | None:
        """What node ``key``'s latest BMC work was doing (for "no answer within ..." errors)."""
        record = self._records.get(key) or self._per_cycle.get(key)
        if record is None:
            return None
        return _STAGE_WORDS[record.stage].format(record.endpoint.label)

    def open_sessions(self) -> int:
        return self._open

    @property
    def counters(self) -> PoolCounters:
        """The totals, with the live sessions' latest counters added in when read."""
        for record in self._records.values():
            if record.session is not None:
                self._add_statistics(record)
        return self._counters

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
            for _ in range(min(CLOSE_CONCURRENCY, len(closing))):
                nursery.start_soon(self._close_each, closing)

    async def _close_each(
        self, closing: list[tuple[AbstractAsyncContextManager[Any], str]]
    ) -> None:
        while closing:
            context, label = closing.pop()
            await self._close(context, label)

    # --- one request --------------------------------------------------------------------

    async def _run(
        self, record: _Record, command: Callable[[BmcSessionLike], Awaitable[Any]]
    ) -> Any:
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
                session = await self._login(record)
            record.stage = _COMMAND
            started = trio.current_time()
            result = await command(session)
        except Exception as exc:
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

    async def _login(self, record: _Record) -> BmcSessionLike:
        context = self._opener(record.endpoint)
        # Cancelled or failed here, the context cleans up after itself (see BmcOpener).
        session = await context.__aenter__()
        record.session, record.context, record.seen = session, context, _NO_STATISTICS
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

    def _count_failure(self, exc: Exception) -> None:
        counters = self._counters
        counters.failures += 1
        name = type(exc).__name__
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

    def _detach(self, record: _Record) -> AbstractAsyncContextManager[BmcSessionLike] | None:
        """Take the session off ``record`` (its counters added in); its context to close."""
        context = record.context
        if context is None:
            return None
        self._add_statistics(record)
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
            except Exception as exc:
                log.debug("closing the session to %s failed: %s", label, describe_error(exc))
        if scope.cancelled_caught:
            log.debug("closing the session to %s timed out", label)

    def _add_statistics(self, record: _Record) -> None:
        """Add what ``record``'s session counted since last time to the pool's counters."""
        session = record.session
        if session is None:
            return
        try:
            stats = session.statistics()
        except Exception:  # a session without counters still works
            return
        now = tuple(int(getattr(stats, name, 0) or 0) for name in _STATISTICS)
        counters = self._counters
        for name, count, seen in zip(_STATISTICS, now, record.seen, strict=True):
            if count > seen:
                setattr(counters, name, getattr(counters, name) + count - seen)
        record.seen = now

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
        interval = self.keepalive_interval
        slots = trio.Semaphore(KEEPALIVE_CONCURRENCY)
        with self._keepalive_scope:
            async with trio.open_nursery() as nursery:
                while True:
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
                    await slots.acquire()
                    nursery.start_soon(self._keepalive, record, slots)

    async def _keepalive(self, record: _Record, slots: trio.Semaphore) -> None:
        try:
            await self._keepalive_unless_busy(record)
        finally:
            slots.release()

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
        except Exception as exc:
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


@asynccontextmanager
async def open_bmc_pool(
    opener: BmcOpener,
    *,
    keepalive_interval: float = 25.0,
    min_command_interval: float = 0.0,
) -> AsyncIterator[BmcPool]:
    """A pool whose long-lived sessions are closed (Close Session sent) when the block ends."""
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


__all__: Sequence[str] = (
    "BmcEndpoint",
    "BmcOpener",
    "BmcPool",
    "BmcSessionLike",
    "BmcUnavailable",
    "NodeBmc",
    "configured_opener",
    "describe_error",
    "open_bmc_pool",
    "retry_policy",
)
