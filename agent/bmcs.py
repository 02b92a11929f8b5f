"""The agent's BMC sessions: one per node, long-lived or per use, never two requests at once.

The service never talks to ``ipmi`` directly; it leases a :class:`NodeBmc` from a
:class:`BmcPool` for one node and asks it for the power state in Ironic's words.

* ``persistent`` (default): the session stays open across cycles in a worker task owned by
  the pool (trio requires a session's context to be entered and left by one task). The
  worker sends a keepalive when idle and closes the session after any failure, so the next
  request starts from a fresh login.
* ``per-cycle``: a fresh session for each lease (one node's work in one cycle), for BMCs
  that have few session slots.

Per BMC endpoint (address, port) at most one command is in flight, and an optional minimum
gap separates commands. Anything the opener yields that has ``get_power``/``set_power``/
``keepalive``/``statistics`` will do, which is how the tests drive fake BMCs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from agent.errors import AgentError
from agent.policy import POWER_OFF, POWER_ON
from ipmi import RetryPolicy, open_bmc

if TYPE_CHECKING:
    from agent.config import IpmiConfig

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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


BmcOpener = Callable[[BmcEndpoint], AbstractAsyncContextManager[BmcSessionLike]]


class BmcUnavailable(AgentError):
    """The pool is closed or the request was abandoned."""


def ipmi_opener(
    *,
    retry_timeout: float = 1.0,
    retry_backoff: float = 2.0,
    retries: int = 3,
    max_timeout: float = 4.0,
) -> BmcOpener:
    """The production opener: ``ipmi.open_bmc`` with the configured retry policy."""
    retry = RetryPolicy(
        first_timeout=retry_timeout,
        backoff=retry_backoff,
        max_timeout=max(max_timeout, retry_timeout),
        retries=retries,
    )

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


def configured_opener(ipmi: IpmiConfig) -> BmcOpener:
    """:func:`ipmi_opener` with the ``[ipmi]`` section's retry settings."""
    return ipmi_opener(
        retry_timeout=ipmi.retry_timeout,
        retry_backoff=ipmi.retry_backoff,
        retries=ipmi.retries,
        max_timeout=ipmi.retry_max_timeout,
    )


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


_STAT_FIELDS = ("logins", "retransmits", "drops")


class _Throttle:
    """One command in flight per BMC endpoint, with an optional gap between commands."""

    def __init__(self, min_interval: float) -> None:
        self.lock = trio.Lock()
        self.min_interval = min_interval
        self.last_end = -math.inf


class NodeBmc(Protocol):
    """What a lease gives the service: power in Ironic's words."""

    async def get_power(self) -> str: ...
    async def set_power(self, action: str) -> None: ...


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
        self._throttles: dict[tuple[str, int], _Throttle] = {}
        self._workers: dict[str, _PersistentWorker] = {}
        self._closed = False
        self.counters = PoolCounters()
        self.last_rtt: dict[str, float] = {}  # per node key, seconds
        self.stages: dict[str, str] = {}  # per node key: what its BMC work last started

    # --- public -------------------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, key: str, endpoint: BmcEndpoint) -> AsyncIterator[NodeBmc]:
        """The BMC of node ``key`` for one piece of work (one node in one cycle)."""
        if self._closed:
            raise BmcUnavailable("the BMC pool is closed")
        self.stages[key] = f"waiting for the session to {endpoint.label}"
        if endpoint.session_mode == "per-cycle":
            self._forget_worker(key)
            async with self._per_cycle_session(key, endpoint) as session:
                yield _DirectBmc(self, key, endpoint, session)
            return
        worker = self._workers.get(key)
        if worker is None or worker.endpoint != endpoint or worker.finished:
            self._forget_worker(key)
            worker = _PersistentWorker(self, key, endpoint)
            self._workers[key] = worker
            self._nursery.start_soon(worker.run)
        yield worker

    def forget(self, key: str) -> None:
        """Close the long-lived session of a node that left the inventory."""
        self._forget_worker(key)

    def retain(self, keys: set[str]) -> None:
        """Close the long-lived sessions of every node not in ``keys`` (deleted nodes)."""
        for key in [key for key in self._workers if key not in keys]:
            self._forget_worker(key)

    def stage(self, key: str) -> str | None:
        """What node ``key``'s latest BMC work was doing (for "no answer within ..." errors)."""
        return self.stages.get(key)

    def open_sessions(self) -> int:
        return sum(1 for worker in self._workers.values() if worker.session_open)

    async def aclose(self) -> None:
        """Close every long-lived session (Close Session sent, bounded by CLOSE_TIMEOUT)."""
        self._closed = True
        for key in list(self._workers):
            self._forget_worker(key)

    # --- internals ----------------------------------------------------------------------

    @asynccontextmanager
    async def _per_cycle_session(
        self, key: str, endpoint: BmcEndpoint
    ) -> AsyncIterator[BmcSessionLike]:
        """A session entered and left by the calling task; closing is shielded and bounded."""
        body_error: Exception | None = None
        self.stages[key] = f"login to {endpoint.label}"
        with trio.CancelScope() as lifetime:
            async with self._opener(endpoint) as session:
                self.counters.sessions_opened += 1
                try:
                    yield session
                except Exception as exc:
                    body_error = exc
                    raise
                finally:
                    # A cancelled cycle still sends Close Session, but a dead BMC costs at
                    # most CLOSE_TIMEOUT. The scope encloses the whole context (LIFO).
                    lifetime.shield = True
                    lifetime.deadline = trio.current_time() + CLOSE_TIMEOUT
        if lifetime.cancelled_caught:
            log.debug("closing the session to %s timed out", endpoint.label)
            if body_error is not None:
                raise body_error
            await trio.lowlevel.checkpoint()  # re-delivers an outer cancellation, if any

    def _forget_worker(self, key: str) -> None:
        worker = self._workers.pop(key, None)
        if worker is not None:
            worker.shut_down()

    def _throttle(self, endpoint: BmcEndpoint) -> _Throttle:
        address = (endpoint.host, endpoint.port)
        throttle = self._throttles.get(address)
        if throttle is None:
            throttle = self._throttles[address] = _Throttle(self.min_command_interval)
        return throttle

    async def _command(
        self,
        key: str,
        endpoint: BmcEndpoint,
        session: BmcSessionLike,
        command: Callable[[], Awaitable[Any]],
    ) -> Any:
        throttle = self._throttle(endpoint)
        self.stages[key] = f"waiting for another command to {endpoint.label}"
        async with throttle.lock:
            if throttle.min_interval > 0:
                await trio.sleep_until(throttle.last_end + throttle.min_interval)
            self.stages[key] = f"a command to {endpoint.label}"
            started = trio.current_time()
            before = _snapshot(session)
            try:
                result = await command()
            except Exception as exc:
                self.counters.failures += 1
                name = type(exc).__name__
                self.counters.failures_by_type[name] = (
                    self.counters.failures_by_type.get(name, 0) + 1
                )
                raise
            finally:
                throttle.last_end = trio.current_time()
                self._account(session, before)
            rtt = throttle.last_end - started
            self.counters.requests += 1
            self.counters.rtt_sum += rtt
            self.last_rtt[key] = rtt
            return result

    def _account(self, session: BmcSessionLike, before: dict[str, int]) -> None:
        after = _snapshot(session)
        for name in _STAT_FIELDS:
            delta = after.get(name, 0) - before.get(name, 0)
            if delta > 0:
                setattr(self.counters, name, getattr(self.counters, name) + delta)


def _snapshot(session: BmcSessionLike) -> dict[str, int]:
    try:
        stats = session.statistics()
    except Exception:  # a session without counters still works
        return {}
    return {name: int(getattr(stats, name, 0) or 0) for name in _STAT_FIELDS}


def power_word(on: bool) -> str:
    return POWER_ON if on else POWER_OFF


def _client_action(action: str) -> str:
    try:
        return CLIENT_ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown power action {action!r}") from None


class _DirectBmc:
    """A per-cycle session, opened and closed by the leasing task."""

    def __init__(
        self, pool: BmcPool, key: str, endpoint: BmcEndpoint, session: BmcSessionLike
    ) -> None:
        self._pool = pool
        self._key = key
        self._endpoint = endpoint
        self._session = session

    async def get_power(self) -> str:
        session = self._session
        on = await self._pool._command(self._key, self._endpoint, session, session.get_power)
        return power_word(bool(on))

    async def set_power(self, action: str) -> None:
        session = self._session
        word = _client_action(action)
        await self._pool._command(
            self._key, self._endpoint, session, lambda: session.set_power(word)
        )


@attrs.define(eq=False)
class _Request:
    command: Callable[[BmcSessionLike], Awaitable[Any]]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: Exception | None = None
    abandoned: bool = False
    scope: trio.CancelScope | None = None

    def abandon(self) -> None:
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()


class _PersistentWorker:
    """Owns one node's long-lived session; serves one request at a time."""

    def __init__(self, pool: BmcPool, key: str, endpoint: BmcEndpoint) -> None:
        self.pool = pool
        self.key = key
        self.endpoint = endpoint
        self._send, self._receive = trio.open_memory_channel[_Request](0)
        self._caller_lock = trio.Lock()
        self.session_open = False
        self.finished = False

    # --- caller side --------------------------------------------------------------------

    async def get_power(self) -> str:
        on = await self._call(lambda session: session.get_power())
        return power_word(bool(on))

    async def set_power(self, action: str) -> None:
        word = _client_action(action)
        await self._call(lambda session: session.set_power(word))

    async def _call(self, command: Callable[[BmcSessionLike], Awaitable[Any]]) -> Any:
        request = _Request(command)
        async with self._caller_lock:
            try:
                await self._send.send(request)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise BmcUnavailable(f"session to {self.endpoint.label} is closed") from None
            try:
                await request.done.wait()
            finally:
                if not request.done.is_set():
                    request.abandon()  # our deadline passed: stop the worker's attempt too
        if request.error is not None:
            raise request.error
        return request.result

    def shut_down(self) -> None:
        self._send.close()

    # --- worker side --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with self._receive:
                async for request in self._receive:
                    await self._session_lifetime(request)
        finally:
            self.finished = True

    async def _session_lifetime(self, first: _Request) -> None:
        """Open a session for ``first``, then serve until idle failure, error or shutdown."""
        with trio.CancelScope() as lifetime:
            first.scope = lifetime  # a caller that gives up during login stops the login
            self.pool.stages[self.key] = f"login to {self.endpoint.label}"
            try:
                async with self.pool._opener(self.endpoint) as session:
                    self.session_open = True
                    self.pool.counters.sessions_opened += 1
                    try:
                        await self._serve(session, first)
                    finally:
                        self.session_open = False
                        # Bound Close Session; the scope encloses the whole context (LIFO).
                        lifetime.shield = True
                        lifetime.deadline = trio.current_time() + CLOSE_TIMEOUT
            except Exception as exc:
                if not first.done.is_set():
                    first.error = exc
                    first.done.set()
                log.debug("session to %s ended: %s", self.endpoint.label, describe_error(exc))
        if not first.done.is_set():
            first.error = BmcUnavailable(f"login to {self.endpoint.label} abandoned")
            first.done.set()

    async def _serve(self, session: BmcSessionLike, request: _Request | None) -> None:
        while True:
            if request is not None and not await self._execute(session, request):
                return
            request = None
            with trio.move_on_after(self.pool.keepalive_interval):
                try:
                    request = await self._receive.receive()
                except trio.EndOfChannel:
                    return
            if request is None:
                try:
                    with trio.fail_after(self.pool.keepalive_interval):
                        await self.pool._command(
                            self.key, self.endpoint, session, session.keepalive
                        )
                except (Exception, trio.TooSlowError) as exc:
                    log.info(
                        "keepalive to %s failed, closing the session: %s",
                        self.endpoint.label,
                        describe_error(exc),
                    )
                    return

    async def _execute(self, session: BmcSessionLike, request: _Request) -> bool:
        """Run one request; False when the session should be closed afterwards."""
        if request.abandoned:
            return True
        keep = True
        with trio.CancelScope() as request.scope:
            try:
                request.result = await self.pool._command(
                    self.key, self.endpoint, session, lambda: request.command(session)
                )
            except Exception as exc:
                request.error = exc
                keep = False  # the client already re-logged in once; start fresh next time
        if request.scope.cancelled_caught:
            request.error = BmcUnavailable(f"request to {self.endpoint.label} abandoned")
            keep = False
        request.done.set()
        return keep


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
        try:
            yield pool
        finally:
            await pool.aclose()
            # Workers end on their own once their channel closes; never wait forever.
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
    "ipmi_opener",
    "open_bmc_pool",
)
