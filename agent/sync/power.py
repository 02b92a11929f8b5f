"""Driving one node to a power state, under its lock: the one path that both the sync's
force (``force_power_state_during_sync``) and ``powersync power`` take.

An action is a list of steps, each a command and the state it must be seen to reach before
the next one is sent: a cycle or reset is "off, seen off; on, seen on", as Ironic's reboot
is, so it is only done once the transition was observed. A step whose state already holds
is skipped (an "on" of a node that is on sends nothing; a cycle of an off node powers it on).
Confirmation polls with one backoff; the time limit is the caller's or ``within``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import attrs
import trio

from agent.storeio import AsyncStore
from store import POWER_OFF, POWER_ON, Lease, Node

# action -> ((command, the state it must reach), ...), in order.
STEPS: dict[str, tuple[tuple[str, str], ...]] = {
    "on": (("on", POWER_ON),),
    "off": (("off", POWER_OFF),),
    "soft-off": (("soft", POWER_OFF),),
    "cycle": (("off", POWER_OFF), ("on", POWER_ON)),
    "reset": (("off", POWER_OFF), ("on", POWER_ON)),
}
# The record's power states as actions (the sync forces the recorded state).
FOR_STATE = {POWER_ON: "on", POWER_OFF: "off"}
FIRST_PAUSE = 0.1  # seconds between the first reads while confirming
BACKOFF = 1.5
MAX_PAUSE = 1.0


class PoweredBmc(Protocol):
    """What driving needs of a BMC: power in Ironic's words (a pool lease is one)."""

    async def get_power(self) -> str: ...
    async def set_power(self, action: str) -> None: ...


@attrs.frozen
class Driven:
    before: str | None  # the hardware state before anything was sent
    after: str | None  # the last state seen
    sent: tuple[str, ...]  # the commands sent, in order
    reached: bool  # every step's state was seen


def target_of(action: str) -> str:
    """The state an action ends in (Ironic: reboots target "power on", soft off "power off")."""
    return STEPS[action][-1][1]


async def drive(
    bmc: PoweredBmc, action: str, *, within: float | None = None, before: str | None = None
) -> Driven:
    """Carry out ``action``, confirming each step; ``before`` saves the first read if known.

    Without ``within`` the caller's cancel scope bounds the whole (a cancelled drive raises
    Cancelled as usual); with it, running out of time returns ``reached=False``.
    """
    if before is None:
        before = await bmc.get_power()
    seen: str | None = before
    sent: list[str] = []
    with trio.move_on_after(math.inf if within is None else within):
        for command, state in STEPS[action]:
            if seen == state:
                continue
            await bmc.set_power(command)
            sent.append(command)
            pause = FIRST_PAUSE
            while (seen := await bmc.get_power()) != state:
                await trio.sleep(pause)
                pause = min(pause * BACKOFF, MAX_PAUSE)
        return Driven(before, seen, tuple(sent), True)
    return Driven(before, seen, tuple(sent), False)


@asynccontextmanager
async def holding_lock(
    store: AsyncStore,
    node: Node,
    holder: str,
    *,
    ttl: float,
    wall: Callable[[], float],
    fence: Lease | None = None,
) -> AsyncIterator[bool]:
    """The node's lock for the block (True), or False when another holder has it (or, with
    ``fence``, when that lease is no longer this agent's: a woken agent powers nothing).

    Released on the way out, shielded, whatever happened inside.
    """
    if fence is None:
        acquired = await store.acquire_lock(node.uuid, holder, ttl=ttl, now=wall())
    else:  # the lease is checked by the store's clock, so the lock is too
        acquired = await store.acquire_lock(node.uuid, holder, ttl=ttl, fence=fence)
    try:
        yield acquired
    finally:
        if acquired:
            with trio.CancelScope(shield=True):
                await store.release_lock(node.uuid, holder)
