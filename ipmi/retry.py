"""How long the client waits for an answer: :class:`RetryPolicy` and :class:`RttEstimator`.

Pure arithmetic (no clock, no I/O): the client in ``ipmi.client`` measures, these decide.

Two schedules exist. The *fixed* one (``RetryPolicy.timeouts()``) waits ``first_timeout``,
then ``backoff`` times longer each retransmission, up to ``max_timeout``, ``retries`` times:
it is what every Chassis Control uses, and everything when ``adaptive`` is off. The
*adaptive* one, for idempotent reads and login steps, starts from the session's measured
retransmission timeout (RFC 6298: SRTT + 4 * RTTVAR, clamped to [``min_timeout``,
``first_timeout``]) and backs off the same way, and never gives up sooner than the fixed one:
it keeps going until the same total wait is spent, with at most
``retries + ADAPTIVE_EXTRA_RETRANSMISSIONS`` retransmissions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import attrs

# How many more datagrams than the fixed schedule an adaptive request may send: short
# timeouts recover from a lost datagram quickly, but a dead BMC must not be flooded.
ADAPTIVE_EXTRA_RETRANSMISSIONS: Final = 3

# RFC 6298's gains: SRTT follows 1/8 of each sample, RTTVAR 1/4 of each deviation.
_ALPHA: Final = 1 / 8
_BETA: Final = 1 / 4
_K: Final = 4

# Float sums of the same waits can differ in the last bit: below this the budget is spent.
_EPSILON: Final = 1e-6


@attrs.frozen
class RetryPolicy:
    """Per-request patience: wait ``first_timeout``, then ``backoff`` times longer each
    retransmission (at most ``max_timeout``), ``retries`` retransmissions in all.

    With ``adaptive`` (the default), idempotent reads and login steps start from the
    session's measured round-trip time instead (never below ``min_timeout``, never above
    ``first_timeout``) and keep retransmitting, with backoff, until the fixed schedule's
    whole budget is spent; Chassis Control always uses the fixed schedule.
    """

    first_timeout: float = 1.0
    backoff: float = 2.0
    max_timeout: float = 4.0
    retries: int = 3
    adaptive: bool = True
    min_timeout: float = 0.05
    _budget: float = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.first_timeout > 0:
            raise ValueError("first_timeout must be > 0")
        if not self.backoff >= 1:
            raise ValueError("backoff must be >= 1")
        if not self.max_timeout >= self.first_timeout:
            raise ValueError("max_timeout must be >= first_timeout")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if not self.min_timeout > 0:
            raise ValueError("min_timeout must be > 0")
        # Every adaptive wait needs it: summed once here, not on every request.
        object.__setattr__(self, "_budget", sum(self.timeouts()))

    def timeouts(self) -> Iterator[float]:
        """The fixed schedule: how long to wait after the first send and each retransmission."""
        timeout = self.first_timeout
        for _ in range(self.retries + 1):
            yield timeout
            timeout = min(timeout * self.backoff, self.max_timeout)

    def budget(self) -> float:
        """The fixed schedule's total wait: how long a silent BMC is waited for."""
        return self._budget

    @property
    def floor(self) -> float:
        """The shortest first wait (``min_timeout``, unless ``first_timeout`` is shorter)."""
        return min(self.min_timeout, self.first_timeout)

    @property
    def max_attempts(self) -> int:
        """Datagrams one request may cost: the first send and every retransmission."""
        extra = ADAPTIVE_EXTRA_RETRANSMISSIONS if self.adaptive else 0
        return self.retries + 1 + extra

    def adaptive_wait(
        self, first: float, attempt: int, spent: float, *, final: bool = False
    ) -> float | None:
        """The wait after send number ``attempt`` (0 = the first send) of an adaptive request
        whose first wait is ``first``, when ``spent`` seconds of waits have already expired;
        None when the budget or the datagram allowance is used up (give up).

        The last allowed send (or any the caller declares ``final``) waits out whatever is
        left of the budget.
        """
        remaining = self.budget() - spent
        if attempt >= self.max_attempts or remaining <= _EPSILON:
            return None
        if final or attempt == self.max_attempts - 1:
            return remaining
        return min(first * self.backoff**attempt, self.max_timeout, remaining)

    def adaptive_timeouts(self, first: float) -> Iterator[float]:
        """The whole adaptive schedule for a request whose first wait is ``first``
        (clamped to [floor, first_timeout]); with ``first == first_timeout`` it is the
        fixed schedule."""
        first = min(max(first, self.floor), self.first_timeout)
        spent = 0.0
        attempt = 0
        while (wait := self.adaptive_wait(first, attempt, spent)) is not None:
            yield wait
            spent += wait
            attempt += 1


class RttEstimator:
    """One session's smoothed round-trip time, the RFC 6298 way, and the timeout it implies.

    Fed only unambiguous samples (Karn's rule: never the answer to a retransmitted
    request). After a wait expires, :meth:`timed_out` backs the timeout off, and it stays
    backed off until the next sample: without that, a BMC that became slower than the
    current timeout would be retransmitted to forever without ever giving a valid sample.
    """

    __slots__ = ("_backed_off", "_policy", "rttvar", "samples", "srtt")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.samples = 0
        self._backed_off: float | None = None

    def __repr__(self) -> str:
        return f"RttEstimator(srtt={self.srtt}, rttvar={self.rttvar}, rto={self.rto})"

    @property
    def rto(self) -> float:
        """The first wait of the next idempotent request, in [floor, first_timeout]."""
        policy = self._policy
        if self._backed_off is not None:
            value = self._backed_off
        elif self.srtt is None or self.rttvar is None:
            return policy.first_timeout  # nothing measured yet: the configured value
        else:
            value = self.srtt + _K * self.rttvar
        return min(max(value, policy.floor), policy.first_timeout)

    def sample(self, rtt: float) -> None:
        """One round trip answered without any retransmission."""
        rtt = max(rtt, 0.0)
        if self.srtt is None or self.rttvar is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - rtt)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * rtt
        self.samples += 1
        self._backed_off = None

    def timed_out(self, wait: float) -> None:
        """A wait of ``wait`` seconds expired unanswered: the next request starts later."""
        backed_off = wait * self._policy.backoff
        if self._backed_off is None or backed_off > self._backed_off:
            self._backed_off = backed_off
