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
- a wrong password raises :class:`AuthenticationError` at once and is never retried here
  (BMCs lock users out);
- overall deadlines are the caller's: wrap calls in ``trio.fail_after`` / ``move_on_after``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import ClassVar, Final, Protocol

import attrs
import trio

from ipmi.errors import (
    AuthenticationError,
    CompletionCodeError,
    IpmiError,
    MalformedPacketError,
    NegotiationError,
    NoResponseError,
    SessionLostError,
)
from ipmi.proto.constants import ChassisAction, Privilege
from ipmi.proto.events import LoginComplete, LoginLost, LoginStep, Response
from ipmi.proto.messages import (
    ChassisControlRequest,
    GetChassisStatusRequest,
    GetChassisStatusResponse,
    GetDeviceIdRequest,
)
from ipmi.proto.session import ClientSession
from ipmi.retry import RetryPolicy, RttEstimator
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
class SessionStatistics:
    """Counters of one :class:`BmcSession` (across transparent re-logins)."""

    sent: int = 0  # datagrams, retransmissions included
    received: int = 0  # datagrams, dropped ones included
    retransmits: int = 0  # requests sent again, plus login handshakes restarted
    drops: int = 0  # received datagrams discarded (stale, duplicate, malformed, forged)
    logins: int = 0  # completed logins
    requests: int = 0  # answered requests
    last_rtt: float | None = None  # seconds, last send -> answer of the last request
    rtt_sum: float = 0.0  # seconds, over ``requests``
    srtt: float | None = None  # seconds, smoothed RTT (RFC 6298) of reads and login steps
    rttvar: float | None = None  # seconds, its mean deviation
    rto: float | None = None  # seconds, the first wait of the next read (see RetryPolicy)
    rtt_samples: int = 0  # round trips measured for srtt (Karn: none retransmitted)

    @property
    def mean_rtt(self) -> float | None:
        return self.rtt_sum / self.requests if self.requests else None


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


class _Counters:
    __slots__ = (
        "drops",
        "last_rtt",
        "logins",
        "received",
        "requests",
        "retransmits",
        "rtt_sum",
        "sent",
    )

    def __init__(self) -> None:
        self.sent = self.received = self.retransmits = self.drops = 0
        self.logins = self.requests = 0
        self.last_rtt: float | None = None
        self.rtt_sum = 0.0


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
    ) -> None:
        self.host = host
        self.port = port
        self._endpoint = endpoint
        self._machine = machine  # one for the whole life of this object, across re-logins
        self._retry = retry
        self._lock = trio.Lock()
        self._counters = _Counters()
        self._rtt = RttEstimator(retry)
        self._closed = False
        self.cipher_suite: int | None = None  # negotiated at the last login

    def __repr__(self) -> str:
        return f"BmcSession({self.peer})"

    @property
    def peer(self) -> str:
        return peer_label(self.host, self.port)

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
                    event = await self._next_event(
                        machine,
                        trio.current_time() + timeout,
                        lambda e: isinstance(e, Response) and e.request_id == request_id,
                    )
                    if isinstance(event, Response):
                        self._counters.requests += 1
                        return event
                    continue
                if attempt > 1:
                    datagram = machine.retransmit(request_id)
                    self._counters.retransmits += 1
                    total = policy.max_attempts - 1 if adaptive else policy.retries
                    self._log_resend(
                        f"no answer to {what}, retransmission",
                        attempt - 1,
                        total,
                        started,
                        adaptive=adaptive,
                    )
                sent_at = trio.current_time()
                await self._send(datagram)
                # A late answer to an earlier attempt carries the same rqSeq: it is accepted
                # here, and the machine drops any later duplicate as stale.
                event = await self._next_event(
                    machine,
                    sent_at + timeout,
                    lambda e: isinstance(e, Response) and e.request_id == request_id,
                )
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

    def _log_resend(
        self, message: str, number: int, total: int, started: float, *, adaptive: bool
    ) -> None:
        """``<message> <number> of <total>``, for retransmissions and handshake restarts."""
        elapsed = trio.current_time() - started
        if not adaptive:
            logger.warning(
                "%s: %s %d of %d after %.1f s", self.peer, message, number, total, elapsed
            )
            return
        # Before first_timeout the fixed schedule would not have resent yet: nothing an
        # operator has not seen before, and frequent on a lossy link. Later ones warn.
        logger.log(
            logging.DEBUG if elapsed < self._retry.first_timeout else logging.WARNING,
            "%s: %s %d of at most %d after %.2f s",
            self.peer,
            message,
            number,
            total,
            elapsed,
        )

    async def _next_event(
        self, machine: ClientSession, deadline: float, wanted: Callable[[object], bool]
    ) -> object | None:
        """Feed datagrams to ``machine`` until it yields a wanted event or the deadline passes."""
        with trio.move_on_at(deadline):
            while True:
                datagram = await self._endpoint.receive()
                self._counters.received += 1
                try:
                    event = machine.receive(datagram)
                except MalformedPacketError:
                    self._counters.drops += 1  # noise on the wire never ends a request
                    continue
                except SessionLostError as exc:
                    raise SessionLostError(f"{self.peer}: {exc}") from exc
                if event is None:
                    continue  # the machine dropped it, and counted it
                if wanted(event):
                    return event
                self._counters.drops += 1  # an answer nobody is waiting for any more
        return None

    async def _send(self, datagram: bytes) -> None:
        self._counters.sent += 1
        await self._endpoint.send(datagram)

    # ---- login / logout ----------------------------------------------------------------

    async def _login(self) -> None:
        """Log in, restarting the whole handshake when a step goes unanswered.

        Fixed schedule: run n of the handshake waits ``timeouts()[n]`` for each step.
        Adaptive: run n waits the current RTO times ``backoff**n`` for each step (each
        answered step is measured: a restarted handshake drops every answer to an earlier
        run, so none is ambiguous), until the fixed schedule's budget has expired. Either
        way at most ``retries + 1`` runs send Open Session: each may leave a session behind
        on the BMC, which has only a few (often 4). Runs lost at the sessionless
        capabilities probe cost the BMC nothing, and the last allowed run waits out the
        budget on it; session steps never wait longer than ``max_timeout``.
        """
        policy = self._retry
        started = trio.current_time()
        attempt = 0
        spent = 0.0  # seconds of step waits that expired unanswered
        opened = 0  # runs that got as far as sending Open Session
        while (step_wait := self._login_step_wait(attempt, spent, opened)) is not None:
            attempt += 1
            if attempt > 1:
                self._counters.retransmits += 1
                self._log_resend(
                    "login step unanswered, restarting the handshake: attempt",
                    attempt,
                    policy.max_attempts,
                    started,
                    adaptive=policy.adaptive,
                )
            try:
                complete, expired, opened_one = await self._handshake(step_wait)
            except (AuthenticationError, NegotiationError, SessionLostError) as exc:
                # Never retried: a wrong password tried again only locks the user out.
                raise type(exc)(f"{self.peer}: {exc}") from exc
            if complete is not None:
                self.cipher_suite = complete.suite
                self._counters.logins += 1
                return
            spent += expired
            opened += opened_one
        raise NoResponseError(
            f"{self.peer}: no answer to login after {attempt} attempts "
            f"({trio.current_time() - started:.1f} s)"
        )

    def _login_step_wait(
        self, run: int, spent: float, opened: int
    ) -> Callable[[bool], float] | None:
        """How long each step of handshake run ``run`` (0-based) waits, given whether the
        step opens or uses a BMC session; None: give up."""
        policy = self._retry
        if not policy.adaptive:
            timeout = next(itertools.islice(policy.timeouts(), run, None), None)
            return None if timeout is None else lambda _: timeout
        if opened > policy.retries or policy.adaptive_wait(self._rtt.rto, run, spent) is None:
            return None
        last_session = opened == policy.retries

        def wait(session_step: bool) -> float:
            # Asked again before each step: the steps answered so far refine the RTO.
            value = policy.adaptive_wait(
                self._rtt.rto, run, spent, final=last_session and session_step
            )
            assert value is not None  # run and spent do not change within one run
            # A BMC forgets a half-open login within seconds (OpenBMC: 3 s): never wait
            # longer on a session step than the fixed schedule would.
            return min(value, policy.max_timeout) if session_step else value

        return wait

    async def _handshake(
        self, step_wait: Callable[[bool], float]
    ) -> tuple[LoginComplete | None, float, bool]:
        """One run of the handshake: (LoginComplete or None when a step went unanswered,
        the wait that expired, whether Open Session was sent)."""
        machine = self._machine
        datagram = machine.begin_login()
        opened = False
        while True:
            session_step = not machine.probing
            opened = opened or session_step
            wait = step_wait(session_step)
            sent_at = trio.current_time()
            await self._send(datagram)
            event = await self._next_event(
                machine,
                sent_at + wait,
                lambda e: isinstance(e, (LoginStep, LoginComplete, LoginLost)),
            )
            if event is None:
                return None, wait, opened
            if isinstance(event, LoginLost):
                # The BMC timed the half-made session out while a step was under way: as
                # good as unanswered (a NegotiationError would fail a BMC that is fine).
                logger.debug("%s: %s", self.peer, event.reason)
                return None, trio.current_time() - sent_at, opened
            self._rtt.sample(trio.current_time() - sent_at)
            if isinstance(event, LoginComplete):
                return event, 0.0, opened
            assert isinstance(event, LoginStep)
            datagram = event.datagram

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
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
                await self._send(datagram)
                # The answer needs no processing; waiting briefly for it keeps it from
                # hitting a closed port (the BMC would get an ICMP error).
                await self._endpoint.receive()
                self._counters.received += 1
        finally:
            self._endpoint.close()


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
) -> AbstractAsyncContextManager[BmcSession]:
    """Log in to the BMC at ``host:port`` on enter; Close Session on exit.

    ``connect`` (``async (host, port) -> DatagramEndpoint``) and ``entropy`` are for tests.
    Raises NoResponseError, AuthenticationError (never retried), NegotiationError,
    SessionLostError on login; every message names host:port and never the password.
    """
    level = _check_arguments(privilege, cipher_suites, username, password)
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
        bmc = BmcSession(host, port, endpoint, machine=machine, retry=policy)
        try:
            async with bmc._lock:
                await bmc._login()
            yield bmc
        finally:
            await bmc.aclose()

    return session()
