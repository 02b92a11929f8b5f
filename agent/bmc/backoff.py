"""Pacing logins a BMC refused: a wrong password, or no free session slot.

A BMC that refuses the credentials is not asked again at the sync's pace: BMCs lock users
out after a few failures, and every attempt holds a half-open session slot. A BMC out of
session slots (its table full of sessions that crashed agents left behind) is given time to
time them out. Each kind has its own growing schedule, whatever the sync's retry settings;
a refused node fails at once, without a datagram, until its next attempt is due. A new
endpoint (an inventory change: address, user, password) or ``reset()`` (a reload) starts
afresh. Each step is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Set

import attrs

from agent.bmc.seam import BmcAuthError, BmcBusy, BmcEndpoint, BmcError

log = logging.getLogger("powersync.bmc")

# kind -> (first wait, longest wait) in seconds; the wait doubles at each refusal.
SCHEDULES: dict[type[BmcError], tuple[float, float]] = {
    BmcAuthError: (30.0, 900.0),
    BmcBusy: (5.0, 60.0),
}


@attrs.define
class _Refusal:
    endpoint: BmcEndpoint
    error: BmcError
    step: int
    due: float


class LoginBackoff:
    """When each refused node may try to log in again."""

    def __init__(self) -> None:
        self._refused: dict[str, _Refusal] = {}

    def check(self, key: str, endpoint: BmcEndpoint, now: float) -> None:
        """Raise the refusal again, without asking the BMC, while ``key`` waits."""
        refusal = self._refused.get(key)
        if refusal is None:
            return
        if refusal.endpoint != endpoint:  # the inventory changed: try at once
            del self._refused[key]
            return
        if now < refusal.due:
            error = refusal.error
            raise type(error)(
                f"{error}; next login attempt in {refusal.due - now:.0f} s", kind=error.kind
            )

    def refused(self, key: str, endpoint: BmcEndpoint, error: BmcError, now: float) -> None:
        """Record a login the BMC refused; a kind without a schedule is not paced."""
        schedule = SCHEDULES.get(type(error))
        if schedule is None:
            return
        previous = self._refused.get(key)
        step = previous.step + 1 if previous is not None and previous.endpoint == endpoint else 0
        first, longest = schedule
        wait = min(first * 2**step, longest)
        self._refused[key] = _Refusal(endpoint, error, step, now + wait)
        # Once per step: at the longest wait, the next refusals say nothing new.
        level = logging.WARNING if step == 0 or first * 2 ** (step - 1) < longest else logging.DEBUG
        why = "BMCs lock users out" if isinstance(error, BmcAuthError) else "slots time out"
        log.log(
            level,
            "login to %s refused (%s): next attempt in %.0f s (%s)",
            endpoint.label,
            error,
            wait,
            why,
            extra={"bmc": endpoint.label},
        )

    def forget(self, key: str) -> None:
        """A login succeeded, or the node left the inventory."""
        self._refused.pop(key, None)

    def reset(self) -> None:
        """Forget every refusal (a reload: passwords may have been fixed)."""
        self._refused.clear()

    def retain(self, keys: Set[str]) -> None:
        for key in [key for key in self._refused if key not in keys]:
            del self._refused[key]

    def __len__(self) -> int:
        return len(self._refused)
