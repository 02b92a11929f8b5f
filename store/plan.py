"""apply() as one algorithm for every backend: validate a batch, then plan it.

A backend reads the guard rows of the batch's nodes inside its write transaction, calls
:func:`plan_apply` (pure: no I/O, no clock) and carries the plan out in the same transaction.
So the compare-and-set rules, the merging of several changes for one node, the history rows,
and which notifications are queued or superseded are written once, here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from store.errors import InvalidNode
from store.model import (
    GUARD_FIELDS,
    SETTABLE_FIELDS,
    HistoryRecord,
    Lease,
    NodeChange,
    validate_fields,
    validate_history,
)
from store.validate import parse_uuid, validate_notification

GUARD_NAMES = ", ".join(sorted(GUARD_FIELDS))


@attrs.frozen
class CheckedChange:
    """A validated change: canonical node uuid and normalised fields."""

    node_uuid: str
    fields: Mapping[str, object]
    change: NodeChange


@attrs.frozen
class GuardRow:
    """What apply() must know of one existing node to plan its changes."""

    instance_uuid: str | None
    reservation_expires_at: float | None
    values: Mapping[str, object]  # the node's GUARD_FIELDS, decoded


@attrs.frozen
class LeaseRow:
    """A lease as stored: ``holder`` None once released."""

    holder: str | None
    token: int
    expires_at: float | None


def lease_current(fence: Lease, row: LeaseRow | None, now: float) -> bool:
    """True while ``fence`` is still the holder's unexpired lease with the same token."""
    return (
        row is not None
        and row.holder == fence.holder
        and row.token == fence.token
        and row.expires_at is not None
        and row.expires_at > now
    )


@attrs.frozen
class HistoryRow:
    node_uuid: str
    at: float
    record: HistoryRecord


@attrs.frozen
class OutboxRow:
    node_uuid: str
    instance_uuid: str
    power_state: str
    at: float
    status: str  # "pending", or "superseded" by a later row of the same batch


@attrs.frozen
class ApplyPlan:
    at: float
    updates: dict[str, dict[str, object]]  # node uuid -> merged fields, in batch order
    history: list[HistoryRow]
    outbox: list[OutboxRow]
    # Instances whose pending rows already stored become superseded (before the new rows).
    supersede: list[str]
    conflicts: list[str]  # uuids of changes skipped by their compare-and-set or fence
    missing: list[str]  # uuids of changes for nodes that no longer exist
    fenced: dict[str, int] = attrs.field(factory=dict)  # lost lease name -> changes skipped


def check_changes(changes: Sequence[NodeChange]) -> list[CheckedChange]:
    """Validate a whole apply() batch before anything is read or written."""
    checked: list[CheckedChange] = []
    for change in changes:
        fields = validate_fields(change.fields, SETTABLE_FIELDS)
        for field in change.expected or ():
            if field not in GUARD_FIELDS:
                raise InvalidNode(f"{field}: cannot be expected in apply() (only {GUARD_NAMES})")
        if change.history is not None:
            validate_history(change.history)
        validate_notification(change.notification)
        if change.fence is not None and not isinstance(change.fence, Lease):
            raise InvalidNode(f"fence: must be a Lease, got {change.fence!r}")
        canonical = parse_uuid(change.node_uuid) or change.node_uuid
        checked.append(CheckedChange(canonical, fields, change))
    return checked


def guard_fails(change: NodeChange, row: GuardRow, now: float) -> bool:
    """True when ``change`` must be skipped: an expected field moved, or another holds the lock."""
    for field, value in (change.expected or {}).items():
        if row.values[field] != value:
            return True
    if change.holder is None:
        return False
    holder = row.values["reservation"]
    expires = row.reservation_expires_at
    unexpired = expires is None or expires > now
    return holder is not None and holder != change.holder and unexpired


def fence_names(checked: Sequence[CheckedChange]) -> list[str]:
    """The leases a batch is fenced by: the backend reads these rows with the guard rows."""
    return sorted({item.change.fence.name for item in checked if item.change.fence is not None})


def plan_apply(
    checked: Sequence[CheckedChange],
    rows: Mapping[str, GuardRow],
    now: float,
    leases: Mapping[str, LeaseRow] | None = None,
) -> ApplyPlan:
    """The writes of one apply() batch, given the guard and lease rows read in its transaction."""
    plan = ApplyPlan(
        at=now, updates={}, history=[], outbox=[], supersede=[], conflicts=[], missing=[]
    )
    queued: list[tuple[str, str, str]] = []  # (node, instance, state) in batch order
    keeps_older: set[str] = set()  # instances whose newest row leaves older pending ones
    for item in checked:
        row = rows.get(item.node_uuid)
        if row is None:
            plan.missing.append(item.node_uuid)
            continue
        fence = item.change.fence
        if fence is not None and not lease_current(fence, (leases or {}).get(fence.name), now):
            plan.conflicts.append(item.node_uuid)
            plan.fenced[fence.name] = plan.fenced.get(fence.name, 0) + 1
            continue
        if guard_fails(item.change, row, now):
            plan.conflicts.append(item.node_uuid)
            continue
        plan.updates.setdefault(item.node_uuid, {}).update(item.fields)
        if item.change.history is not None:
            plan.history.append(HistoryRow(item.node_uuid, now, item.change.history))
        if item.change.notification is not None and row.instance_uuid is not None:
            queued.append((item.node_uuid, row.instance_uuid, item.change.notification))
            if item.change.supersede:
                keeps_older.discard(row.instance_uuid)
            else:
                keeps_older.add(row.instance_uuid)
    # Only the newest row of an instance stays pending: an older state is never sent after a
    # newer one is queued. A change with supersede=False (a completed power action: Nova
    # must hear it even if another follows at once) leaves the older pending rows, which the
    # notifier sends first, in order.
    last = {instance: index for index, (_, instance, _) in enumerate(queued)}
    plan.supersede.extend(instance for instance in last if instance not in keeps_older)
    for index, (node_uuid, instance, state) in enumerate(queued):
        status = "pending" if last[instance] == index else "superseded"
        plan.outbox.append(OutboxRow(node_uuid, instance, state, now, status))
    return plan


def lease_after_acquire(
    name: str, row: LeaseRow | None, holder: str, now: float, ttl: float
) -> Lease | None:
    """The lease ``holder`` gets, or None while another holder has it unexpired."""
    held_by_another = row is not None and row.holder not in (None, holder)
    if held_by_another and row is not None and row.expires_at is not None and row.expires_at > now:
        return None
    token = 1 if row is None else row.token + 1
    return Lease(name, holder, token, now + ttl)


def lease_after_renew(lease: Lease, row: LeaseRow | None, now: float, ttl: float) -> Lease | None:
    """The renewed lease, or None if it changed hands (an expired lease nobody took over is
    still the holder's: its token is unchanged, so nobody else wrote under it)."""
    if row is None or row.holder != lease.holder or row.token != lease.token:
        return None
    return attrs.evolve(lease, expires_at=now + ttl)
