"""One request in flight per BMC endpoint: a lock that costs nothing until contended.

The BMC pool keeps one :class:`EndpointGate` per BMC address:port (10,000 of them for a
large site), so an idle gate is three attributes: no trio.Lock, no ParkingLot until a
second request has to wait.
"""

from __future__ import annotations

import math

import trio


class EndpointGate:
    """A fair lock, plus when the request it last let through ended (for a minimum gap)."""

    __slots__ = ("busy", "last_end", "waiting")

    def __init__(self) -> None:
        self.busy = False
        self.last_end = -math.inf
        self.waiting: trio.lowlevel.ParkingLot | None = None

    async def acquire(self) -> None:
        # Uncontended, no checkpoint: the request that follows checkpoints anyway.
        if not self.busy:
            self.busy = True
            return
        if self.waiting is None:
            self.waiting = trio.lowlevel.ParkingLot()
        await self.waiting.park()  # woken by release(), which keeps busy set for us

    def release(self) -> None:
        """Hand the gate straight to the longest waiter, or open it."""
        if self.waiting:
            self.waiting.unpark()
        else:
            self.busy = False
