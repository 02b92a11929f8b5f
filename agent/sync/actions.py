"""Power actions on one node (``powersync power NODE on|off|cycle|reset|soft-off``).

An action works while the daemon runs in another process: it takes the node's lock in the
store (the sync skips locked nodes and nodes with a target set), sets target_power_state,
sends the command over a fresh session, confirms the result by polling, records the result
with its history row and the Nova notification (on/off only), and always releases the lock.

Confirmation: hard actions (on, off, cycle, reset) act at once on a BMC, so without
``--wait`` the result is checked for a couple of seconds; with ``--wait`` (and always for
soft-off, which waits for the operating system) polling lasts up to ``--timeout``, by
default ``power_state_change_timeout``. The record only ever says what the hardware said.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import trio

from agent.bmc.pool import BmcPool, open_bmc_pool
from agent.bmc.seam import BmcEndpoint, BmcError, BmcOpener, Drivers, describe_error, power_word
from agent.config.options import AgentConfig
from agent.drivers import configured_drivers
from agent.errors import AgentError, NodeError
from agent.storeio import AsyncStore
from agent.sync.power import STEPS, drive, holding_lock, target_of
from agent.sync.service import holder_name
from store import HistoryRecord, Node, NodeChange, NodeNotFound, StoreError

ACTIONS = tuple(STEPS)
QUICK_CONFIRM = 3.0  # seconds a hard action is given to show without --wait


@attrs.frozen
class ActionResult:
    node: str
    action: str
    before: str | None  # the hardware state before the command
    target: str
    after: str | None  # the hardware state confirmed at the end
    sent: bool  # False when the node already was in the target state
    duration: float
    message: str

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.frozen
class StatusResult:
    node: str
    recorded: str | None
    hardware: str | None
    target: str | None
    maintenance: bool
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


async def _get_node(store: AsyncStore, name: str) -> Node:
    try:
        return await store.get_node(name)
    except NodeNotFound:
        raise NodeError(f"node {name}: no such node") from None
    except StoreError as exc:
        raise AgentError(f"store: {exc}") from None


async def power_status(
    store: AsyncStore,
    name: str,
    *,
    config: AgentConfig,
    opener: BmcOpener,
    read_within: float,
    drivers: Drivers | None = None,
) -> StatusResult:
    """The recorded state and what the BMC says now (nothing is written)."""
    node = await _get_node(store, name)
    drivers = drivers or configured_drivers(config)
    hardware = error = None
    try:
        with trio.fail_after(read_within):
            async with opener(drivers.endpoint(node)) as session:
                hardware = power_word(await session.get_power())
    except trio.TooSlowError:
        error = f"no answer within {read_within:g} s"
    except BmcError as exc:
        error = describe_error(exc)
    return StatusResult(
        node.name, node.power_state, hardware, node.target_power_state, node.maintenance, error
    )


async def power_action(
    store: AsyncStore,
    name: str,
    action: str,
    *,
    config: AgentConfig,
    opener: BmcOpener,
    drivers: Drivers | None = None,
    wait: bool = False,
    wait_limit: float | None = None,
    holder: str | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> ActionResult:
    """Run one power action under the node's lock; NodeError on any refusal or failure."""
    if action not in STEPS:
        raise NodeError(f"unknown power action {action!r} (expected one of: {', '.join(ACTIONS)})")
    wait_for = wait_limit if wait_limit is not None else config.conductor.power_state_change_timeout
    if not wait and action != "soft-off":
        wait_for = min(wait_for, QUICK_CONFIRM)
    holder = holder or holder_name("power")
    # A node in maintenance can still be powered, as in Ironic (operators power off the node
    # they put there); the sync keeps skipping it, and the lock keeps the two apart.
    node = await _get_node(store, name)
    # The lock must outlive the whole action, whatever the configured TTL.
    ttl = max(config.conductor.lock_ttl, wait_for + 60.0)
    async with holding_lock(store, node, holder, ttl=ttl, wall=wall_clock) as acquired:
        if not acquired:
            current = await _get_node(store, node.uuid)
            who = current.reservation or "another process"
            raise NodeError(f"node {node.name} is locked by {who}; try again later")
        started = trio.current_time()
        target = target_of(action)
        await _apply(
            store,
            NodeChange(node.uuid, fields={"target_power_state": target, "last_error": None}),
            wall_clock,
        )
        endpoint = (drivers or configured_drivers(config)).endpoint(node)
        async with open_bmc_pool(opener) as pool:
            result = await _act(
                store, pool, node, endpoint, action, config, wait_for, wall_clock, started
            )
    return result


async def _act(
    store: AsyncStore,
    pool: BmcPool,
    node: Node,
    endpoint: BmcEndpoint,
    action: str,
    config: AgentConfig,
    wait_for: float,
    wall_clock: Callable[[], float],
    started: float,
) -> ActionResult:
    target = target_of(action)
    before: str | None = None
    after: str | None = None
    limit = wait_for + config.conductor.sync_node_timeout
    try:
        # Room for the login and the first read on top of the confirmation time.
        with trio.fail_after(limit):
            async with pool.lease(node.uuid, endpoint) as bmc:
                before = after = await bmc.get_power()
                driven = await drive(bmc, action, within=wait_for, before=before)
                after = driven.after
    except trio.TooSlowError:
        error = f"the BMC did not answer within {limit:g} s"
        await _record_failure(store, node, action, before, after, error, wall_clock, config)
        raise NodeError(f"node {node.name}: power {action} failed: {error}") from None
    except BmcError as exc:
        error = describe_error(exc)
        await _record_failure(store, node, action, before, after, error, wall_clock, config)
        raise NodeError(f"node {node.name}: power {action} failed: {error}") from None
    duration = trio.current_time() - started
    if not driven.reached:
        error = f"{target} not reached within {wait_for:g} s (hardware reports {after})" + (
            "" if action == "soft-off" else "; use --wait for slow hardware"
        )
        await _record_failure(store, node, action, before, after, error, wall_clock, config)
        raise NodeError(f"node {node.name}: power {action}: {error}")
    sent = bool(driven.sent)
    message = (
        f"{node.name}: already {target}; nothing sent"
        if not sent
        else f"{node.name}: power {action} done, now {target}"
    )
    change = NodeChange(
        node.uuid,
        fields={
            "power_state": target,
            "target_power_state": None,
            "last_error": None,
            "sync_failures": 0,
            "last_seen_at": wall_clock(),
        },
        history=HistoryRecord(node.power_state, target, "action", f"powersync power {action}"),
        notification=target
        if config.nova.send_power_notifications and (node.power_state != target or sent)
        else None,
        supersede=False,  # each completed action reaches Nova, even if another follows at once
    )
    await _apply(store, change, wall_clock)
    return ActionResult(node.name, action, before, target, after, sent, duration, message)


async def _record_failure(
    store: AsyncStore,
    node: Node,
    action: str,
    before: str | None,
    after: str | None,
    error: str,
    wall_clock: Callable[[], float],
    config: AgentConfig,
) -> None:
    text = f"power {action} failed: {error}"
    fields: dict[str, object] = {"target_power_state": None, "last_error": text}
    state = after or before
    if state is not None:
        fields["power_state"] = state
        fields["last_seen_at"] = wall_clock()
    change = NodeChange(
        node.uuid,
        fields=fields,
        history=HistoryRecord(node.power_state, state or node.power_state, "action", text),
        notification=state
        if config.nova.send_power_notifications and state not in (None, node.power_state)
        else None,
        supersede=False,
    )
    with trio.CancelScope(shield=True):
        await _apply(store, change, wall_clock)


async def _apply(store: AsyncStore, change: NodeChange, wall_clock: Callable[[], float]) -> None:
    try:
        await store.apply([change], now=wall_clock())
    except StoreError as exc:
        raise AgentError(f"store: {exc}") from None
