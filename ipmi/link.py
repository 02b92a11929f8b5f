"""One BMC's datagram path as a :class:`ipmi.BmcSession` uses it: :class:`BmcLink`.

The link joins the endpoint (a socket, or a fake network in tests), the sans-I/O session
machine, the counters and the round-trip estimate. It sends (counted, and spaced at least
``min_datagram_interval`` apart: BMCs that drop datagrams arriving in a burst) and feeds what
arrives to the machine until the event a caller waits for comes, or a deadline passes.
The login (``ipmi.login``) and the commands (``ipmi.client``) are both built on it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio

from ipmi.errors import MalformedPacketError, SessionLostError
from ipmi.proto.session import ClientSession
from ipmi.retry import RetryPolicy, RttEstimator
from ipmi.statistics import Counters
from ipmi.transport import DatagramEndpoint

logger = logging.getLogger("ipmi.client")  # one logger for the whole client


class BmcLink:
    """The endpoint, machine, policy, counters and RTT estimate of one session."""

    __slots__ = (
        "_min_interval",
        "_next_send_at",
        "counters",
        "endpoint",
        "machine",
        "peer",
        "retry",
        "rtt",
    )

    def __init__(
        self,
        peer: str,
        endpoint: DatagramEndpoint,
        machine: ClientSession,
        retry: RetryPolicy,
        *,
        min_datagram_interval: float = 0.0,
    ) -> None:
        self.peer = peer  # host:port, for every message
        self.endpoint = endpoint
        self.machine = machine  # one for the whole life of the session, across re-logins
        self.retry = retry
        self.counters = Counters()
        self.rtt = RttEstimator(retry)
        self._min_interval = min_datagram_interval
        self._next_send_at = -math.inf

    async def send(self, datagram: bytes) -> float:
        """Send one datagram, at least ``min_datagram_interval`` after the previous one
        (waiting if need be); returns when it went out, for timing its answer (the wait
        for the slot is neither round-trip time nor part of the answer's timeout)."""
        if self._min_interval:
            if trio.current_time() < self._next_send_at:
                await trio.sleep_until(self._next_send_at)
            self._next_send_at = trio.current_time() + self._min_interval
        sent_at = trio.current_time()
        self.counters.sent += 1
        await self.endpoint.send(datagram)
        return sent_at

    async def next_event(self, deadline: float, wanted: Callable[[object], bool]) -> object | None:
        """Feed datagrams to the machine until it yields a wanted event or the deadline
        passes (None)."""
        machine = self.machine
        with trio.move_on_at(deadline):
            while True:
                datagram = await self.endpoint.receive()
                self.counters.received += 1
                try:
                    event = machine.receive(datagram)
                except MalformedPacketError:
                    self.counters.drops += 1  # noise on the wire never ends a request
                    continue
                except SessionLostError as exc:
                    raise SessionLostError(f"{self.peer}: {exc}") from exc
                if event is None:
                    continue  # the machine dropped it, and counted it
                if wanted(event):
                    return event
                self.counters.drops += 1  # an answer nobody is waiting for any more
        return None

    def log_resend(
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
            logging.DEBUG if elapsed < self.retry.first_timeout else logging.WARNING,
            "%s: %s %d of at most %d after %.2f s",
            self.peer,
            message,
            number,
            total,
            elapsed,
        )
