"""The trio IPMI v2.0 client: ``open_bmc`` and :class:`BmcSession`.

The protocol itself lives in the sans-I/O :class:`ipmi.proto.session.ClientSession`; this
module gives it a socket, a clock, entropy and patience:

- one connected UDP endpoint per session, and never more than one request in flight on it;
- a per-request timeout with retransmission and backoff (:class:`RetryPolicy`), each
  retransmission logged as a WARNING naming host:port, the attempt and the time spent
  (at DEBUG while the request is younger than ``first_timeout``: the fixed schedule would
  not have retransmitted yet, and on a lossy link short timeouts would flood the log);
- reads (Get Chassis Status, Get Device ID) and login steps start from the session's
  measured round-trip time (``ipmi.retry.RttEstimator``); Chassis Control always waits the
  fixed, conservative schedule, because BMCs execute a resent control command again;
- a lost login step restarts the handshake from the beginning (RAKP 1 and 3 are never
  resent: a BMC that has moved on would refuse them);
- a session the BMC dropped (no answer on an established session, or a session the
  machine declares lost) is re-established once, transparently, before an error is raised;
- a wrong password raises :class:`AuthenticationError` at the end of the RAKP2 step's wait
  (a forged RAKP2 racing the real one is dropped, see ``ipmi.login``) and is never retried
  here (BMCs lock users out);
- overall deadlines are the caller's: wrap calls in ``trio.fail_after`` / ``move_on_after``.

The pieces: the login's patience is ``ipmi.login``, the counted datagram path
(endpoint + machine + RTT estimate) is ``ipmi.link``, the counters ``ipmi.statistics``;
this module holds the commands, their retransmission and ``open_bmc``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import ClassVar, Final, Protocol

import attrs
import trio

from ipmi.errors import (
    CompletionCodeError,
    IpmiError,
    MalformedPacketError,
    NoResponseError,
    SessionLostError,
)
from ipmi.link import BmcLink
from ipmi.login import log_in
from ipmi.proto.constants import ChassisAction, Privilege
from ipmi.proto.events import Response
from ipmi.proto.messages import (
    ChassisControlRequest,
    GetChassisStatusRequest,
    GetChassisStatusResponse,
    GetDeviceIdRequest,
)
from ipmi.proto.session import ClientSession
from ipmi.retry import RetryPolicy
from ipmi.statistics import SessionStatistics
from ipmi.transport import Connector, DatagramEndpoint, connect_udp, peer_label

__all__ = ["BmcSession", "ChassisStatus", "RetryPolicy", "SessionStatistics", "open_bmc"]

logger = logging.getLogger(__name__)

# A BMC recognises a resent request by its rqSeq for about 5 s (IPMB's duplicate window);
# a command that must not run twice (a power cycle) is not resent after this many seconds.
UNREPEATABLE_RESEND_WINDOW = 4.0

ALLOWED_CIPHER_SUITES: Final = frozenset({3, 17})
POWER_ACTIONS: Final = {
    "on": ChassisAction.POWER_UP,
    "off": ChassisAction.POWER_DOWN,
    "cycle": ChassisAction.POWER_CYCLE,
    "reset": ChassisAction.HARD_RESET,
    "soft": ChassisAction.SOFT_SHUTDOWN,
}
# How long Close Session waits for its answer on the way out: it is a courtesy to the BMC
# (frees its session slot), never worth delaying the caller for.
CLOSE_GRACE: Final = 0.25


@attrs.frozen
class ChassisStatus:
    """Get Chassis Status, decoded. ``power_on`` is what power sync needs."""

    power_on: bool
    power_overload: bool
    interlock: bool
    power_fault: bool
    power_control_fault: bool
    restore_policy: int  # 0 stay off, 1 restore previous, 2 always on, 3 unknown
    last_power_event: int  # raw byte
    misc_state: int  # raw byte
    front_panel: int | None  # raw byte, when the BMC sends it

    @classmethod
    def from_response(cls, response: GetChassisStatusResponse) -> ChassisStatus:
        return cls(
            power_on=response.power_on,
            power_overload=response.power_overload,
            interlock=response.interlock,
            power_fault=response.power_fault,
            power_control_fault=response.power_control_fault,
            restore_policy=response.restore_policy,
            last_power_event=response.last_power_event,
            misc_state=response.misc_state,
            front_panel=response.front_panel,
        )


class _Request(Protocol):
    """A request message of ``ipmi.proto.messages``."""

    NETFN: ClassVar[int]
    CMD: ClassVar[int]

    def encode(self) -> bytes: ...


class BmcSession:
    """An authenticated RMCP+ session with one BMC. Get one from :func:`open_bmc`."""

    def __init__(
        self,
        host: str,
        port: int,
        endpoint: DatagramEndpoint,
        *,
        machine: ClientSession,
        retry: RetryPolicy,
        min_datagram_interval: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self._min_datagram_interval = min_datagram_interval
        self._link = BmcLink(
            peer_label(host, port),
            endpoint,
            machine,
            retry,
            min_datagram_interval=min_datagram_interval,
        )
        self._machine = machine
        self._retry = retry
        self._lock = trio.Lock()
        self._counters = self._link.counters
        self._rtt = self._link.rtt
        self._closed = False
        self.cipher_suite: int | None = None  # negotiated at the last login

    def __repr__(self) -> str:
        return f"BmcSession({self.peer})"

    @property
    def peer(self) -> str:
        return self._link.peer

    # ---- public operations -------------------------------------------------------------

    async def get_power(self) -> bool:
        """True when the chassis power is on."""
        return (await self.chassis_status()).power_on

    async def chassis_status(self) -> ChassisStatus:
        data = await self._command(GetChassisStatusRequest(), "Get Chassis Status")
        try:
            return ChassisStatus.from_response(GetChassisStatusResponse.decode(data))
        except MalformedPacketError as exc:
            raise MalformedPacketError(f"{self.peer}: Get Chassis Status: {exc}") from exc

    async def set_power(self, action: str) -> None:
        """``"on"``, ``"off"``, ``"cycle"``, ``"reset"`` or ``"soft"`` (ACPI soft shutdown)."""
        try:
            code = POWER_ACTIONS[action]
        except KeyError:
            raise ValueError(f"unknown power action {action!r}") from None
        # Off and on end in the same state however often they run; cycle, reset and soft-off
        # must never run twice because an answer was lost (see _command).
        # Never the adaptive schedule: a BMC runs a resent control command again.
        await self._command(
            ChassisControlRequest(code),
            f"Chassis Control {action}",
            repeatable=action in ("on", "off"),
            idempotent=False,
        )

    async def keepalive(self) -> None:
        """Get Device ID: keeps the session from idling out, and proves the BMC answers."""
        await self._command(GetDeviceIdRequest(), "Get Device ID")

    def statistics(self) -> SessionStatistics:
        c = self._counters
        return SessionStatistics(
            sent=c.sent,
            received=c.received,
            retransmits=c.retransmits,
            drops=c.drops + sum(self._machine.drops.values()),
            logins=c.logins,
            requests=c.requests,
            last_rtt=c.last_rtt,
            rtt_sum=c.rtt_sum,
            srtt=self._rtt.srtt,
            rttvar=self._rtt.rttvar,
            rto=self._rtt.rto if self._retry.adaptive else self._retry.first_timeout,
            rtt_samples=self._rtt.samples,
            forged_dropped=self._machine.drops["forged"],
        )

    # ---- request / response ------------------------------------------------------------

    async def _command(
        self, message: _Request, what: str, *, repeatable: bool = True, idempotent: bool = True
    ) -> bytes:
        """Send one request; after a lost session, log in again and resend it if repeatable.

        Only an ``idempotent`` request (a read) may use the adaptive, RTT-based schedule.

        A request that is not ``repeatable`` (a power cycle, say) is not sent again in the new
        session: the BMC may have carried it out and lost only its answer, and a new session
        cannot tell it the second one is a retransmission.
        """
        netfn, cmd, data = message.NETFN, message.CMD, message.encode()
        async with self._lock:
            if self._closed:
                raise SessionLostError(f"{self.peer}: session is closed")
            if not self._machine.established:
                await self._login()
            try:
                response = await self._exchange(
                    netfn, cmd, data, what, repeatable=repeatable, idempotent=idempotent
                )
            except (NoResponseError, SessionLostError) as exc:
                # The BMC may have rebooted or timed the session out: one new login, one
                # more try, then the error is the caller's.
                reason = str(exc).removeprefix(f"{self.peer}: ")
                logger.warning("%s: session lost (%s); logging in again", self.peer, reason)
                await self._login()
                if not repeatable:
                    raise type(exc)(
                        f"{exc}; not sent again after logging in again, because the BMC may "
                        f"have carried it out: read the power state"
                    ) from exc
                response = await self._exchange(netfn, cmd, data, what, idempotent=idempotent)
        if response.completion_code != 0:
            raise CompletionCodeError(
                response.completion_code,
                f"{self.peer}: {what} failed with completion code 0x{response.completion_code:02x}",
            )
        return bytes(response.data)

    async def _exchange(
        self,
        netfn: int,
        cmd: int,
        data: bytes,
        what: str,
        *,
        repeatable: bool = True,
        idempotent: bool = True,
    ) -> Response:
        machine = self._machine
        try:
            request_id, datagram = machine.request(netfn, cmd, data)
        except SessionLostError as exc:
            raise SessionLostError(f"{self.peer}: {exc}") from exc
        policy = self._retry
        adaptive = idempotent and policy.adaptive
        timeouts = policy.adaptive_timeouts(self._rtt.rto) if adaptive else policy.timeouts()
        started = trio.current_time()
        attempt = 0

        def answer(event: object) -> bool:
            return isinstance(event, Response) and event.request_id == request_id

        try:
            for timeout in timeouts:
                attempt += 1
                if (
                    attempt > 1
                    and not repeatable
                    and (trio.current_time() - started > UNREPEATABLE_RESEND_WINDOW)
                ):
                    # Past the BMC's duplicate window a resend would run the action again:
                    # only wait for a late answer.
                    event = await self._link.next_event(trio.current_time() + timeout, answer)
                    if isinstance(event, Response):
                        self._counters.requests += 1
                        return event
                    continue
                if attempt > 1:
                    datagram = machine.retransmit(request_id)
                    self._counters.retransmits += 1
                    total = policy.max_attempts - 1 if adaptive else policy.retries
                    self._link.log_resend(
                        f"no answer to {what}, retransmission",
                        attempt - 1,
                        total,
                        started,
                        adaptive=adaptive,
                    )
                sent_at = await self._link.send(datagram)
                # A late answer to an earlier attempt carries the same rqSeq: it is accepted
                # here, and the machine drops any later duplicate as stale.
                event = await self._link.next_event(sent_at + timeout, answer)
                if isinstance(event, Response):
                    rtt = trio.current_time() - sent_at
                    self._counters.requests += 1
                    self._counters.last_rtt = rtt
                    self._counters.rtt_sum += rtt
                    if attempt == 1 and idempotent:
                        # Karn's rule: the answer to a resent request may answer any of
                        # its sends, so only first sends are measured. A control command's
                        # time includes the BMC acting on it, not just the path: never.
                        self._rtt.sample(rtt)
                    return event
                if adaptive:
                    self._rtt.timed_out(timeout)
        finally:
            # Answered, the machine has already let it go (a no-op then); given up or
            # cancelled by the caller, a late answer is dropped as stale, and the request
            # never occupies an rqSeq again.
            machine.forget(request_id)
        machine.abandon()  # presumed gone: the next command logs in first
        raise NoResponseError(
            f"{self.peer}: no answer to {what} after {attempt} attempts "
            f"({trio.current_time() - started:.1f} s)"
        )

    async def _login(self) -> None:
        complete = await log_in(self._link)
        self.cipher_suite = complete.suite

    async def aclose(self) -> None:
        """Send Close Session once (never retransmitted) and release the socket."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                # Also after a login that failed once the keys existed (e.g. privilege
                # refused): the BMC holds a session for us until we close it.
                datagram = self._machine.close()
            except IpmiError:
                return  # no keys, no session on the BMC side
            # Shielded: a caller's cancelled scope must still free the BMC's session slot.
            # Waiting for its slot under min_datagram_interval comes on top of the grace.
            grace = CLOSE_GRACE + self._min_datagram_interval
            with trio.CancelScope(shield=True), trio.move_on_after(grace):
                await self._link.send(datagram)
                # The answer needs no processing; waiting briefly for it keeps it from
                # hitting a closed port (the BMC would get an ICMP error).
                await self._link.endpoint.receive()
                self._counters.received += 1
        finally:
            self._link.endpoint.close()


def _check_arguments(
    privilege: str, cipher_suites: Sequence[int], username: str, password: str
) -> Privilege:
    try:
        level = Privilege.from_name(privilege)
    except ValueError:
        raise ValueError(
            f"privilege must be user, operator or administrator, not {privilege!r}"
        ) from None
    if not cipher_suites:
        raise ValueError("at least one cipher suite is needed")
    for suite in cipher_suites:
        if suite not in ALLOWED_CIPHER_SUITES:
            raise ValueError(f"cipher suite {suite} is not supported (only 17 and 3)")
    if not username:
        raise ValueError("a user name is needed")
    if not password:
        raise ValueError("a password is needed")
    return level


def open_bmc(
    host: str,
    port: int = 623,
    *,
    username: str,
    password: str,
    privilege: str = "administrator",
    cipher_suites: Sequence[int] = (17, 3),
    retry: RetryPolicy | None = None,
    kg: bytes | None = None,
    connect: Connector | None = None,
    entropy: Callable[[int], bytes] | None = None,
    min_datagram_interval: float = 0.0,
) -> AbstractAsyncContextManager[BmcSession]:
    """Log in to the BMC at ``host:port`` on enter; Close Session on exit.

    ``min_datagram_interval`` (seconds, default 0: no spacing) spaces every datagram this
    session sends to the BMC at least that far apart: login steps, requests,
    retransmissions and Close Session (some BMCs drop datagrams that come in a burst).
    The wait for a slot is not counted as round-trip time nor against a step's timeout.
    ``connect`` (``async (host, port) -> DatagramEndpoint``, e.g.
    ``ipmi.testing.FakeNetwork.connect``) and ``entropy`` are for tests.
    Raises NoResponseError, AuthenticationError (never retried), NegotiationError,
    SessionLostError on login; every message names host:port and never the password.
    """
    level = _check_arguments(privilege, cipher_suites, username, password)
    if not 0.0 <= min_datagram_interval < math.inf:
        raise ValueError("min_datagram_interval must be a finite number of seconds >= 0")
    suites = tuple(cipher_suites)
    policy = retry or RetryPolicy()

    machine = ClientSession(
        username=username.encode(),
        password=password.encode(),
        privilege=level,
        cipher_suites=suites,
        entropy=entropy or os.urandom,
        kg=kg,
    )

    @asynccontextmanager
    async def session() -> AsyncIterator[BmcSession]:
        endpoint = await (connect or connect_udp)(host, port)
        bmc = BmcSession(
            host,
            port,
            endpoint,
            machine=machine,
            retry=policy,
            min_datagram_interval=min_datagram_interval,
        )
        try:
            async with bmc._lock:
                await bmc._login()
            yield bmc
        finally:
            await bmc.aclose()

    return session()
