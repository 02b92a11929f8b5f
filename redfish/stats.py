"""Counters of a Redfish session: the mutable ones the hot path bumps, and the frozen
snapshot ``RedfishSession.statistics()`` hands out."""

from __future__ import annotations

import attrs


@attrs.frozen
class SessionStatistics:
    """Counters of one :class:`RedfishSession`."""

    requests: int = 0  # HTTP requests answered (any status), retries included
    retries: int = 0  # requests sent again after a 5xx or a connection failure
    logins: int = 0  # POSTs to the session service (re-logins after a 401 included)
    sessions_opened: int = 0  # Redfish sessions created (a token received)
    sessions_closed: int = 0  # Redfish sessions deleted on close
    connections: int = 0  # TCP connections made
    tls_handshakes: int = 0  # TLS handshakes completed
    last_rtt: float | None = None  # seconds, request -> full answer, of the last request
    rtt_sum: float = 0.0  # seconds, over ``requests``

    @property
    def mean_rtt(self) -> float | None:
        return self.rtt_sum / self.requests if self.requests else None


class Counters:
    __slots__ = (
        "connections",
        "last_rtt",
        "logins",
        "requests",
        "retries",
        "rtt_sum",
        "sessions_closed",
        "sessions_opened",
        "tls_handshakes",
    )

    def __init__(self) -> None:
        self.requests = self.retries = self.logins = 0
        self.sessions_opened = self.sessions_closed = 0
        self.connections = self.tls_handshakes = 0
        self.last_rtt: float | None = None
        self.rtt_sum = 0.0
