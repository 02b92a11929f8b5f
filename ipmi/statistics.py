"""What a :class:`ipmi.BmcSession` counts: :class:`SessionStatistics`, and its live counters.

Read ``BmcSession.statistics()`` after the ``async with open_bmc(...)`` block has exited
to include the Close Session datagram (and its answer): inside the block it has not been
sent yet.
"""

from __future__ import annotations

import attrs


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
    forged_dropped: int = 0  # of ``drops``: RAKP2/RAKP4 answers whose code did not verify

    @property
    def mean_rtt(self) -> float | None:
        return self.rtt_sum / self.requests if self.requests else None


class Counters:
    """The mutable counts behind :class:`SessionStatistics` (plain ints: the hot path)."""

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
