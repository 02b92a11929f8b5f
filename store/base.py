"""The one store interface both backends implement, and the helpers they share.

The store is synchronous. The agent serialises its calls through one worker thread; each
backend still guards its state with a lock, so overlapping calls from threads stay safe.

Every method that depends on the time takes ``now`` (wall-clock seconds); ``None`` means
``time.time()``. Tests pass explicit times, so nothing here ever sleeps.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import stat
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Required, Self, TypedDict, Unpack

import attrs

from store.errors import DuplicateNode, InstanceInUse, InvalidNode, StoreError
from store.model import (
    Conductor,
    HistoryEntry,
    Lease,
    Node,
    NodeChange,
    Notification,
    new_node,
    validate_inventory,
    validate_node_uuid,
)
from store.plan import ApplyPlan, CheckedChange, check_changes
from store.validate import Scalar

log = logging.getLogger("store")


def check_now(now: object) -> float | None:
    """A caller's ``now``, checked; None stays None ("the backend's clock")."""
    if now is None:
        return None
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise StoreError(f"now: must be a finite number of seconds, got {now!r}")
    return float(now)


def resolve_now(now: float | None) -> float:
    """A caller's ``now``, or this process's wall clock (the embedded backends' clock)."""
    checked = check_now(now)
    return time.time() if checked is None else checked


def check_holder(holder: object) -> str:
    if not isinstance(holder, str) or not holder:
        raise InvalidNode("reservation: the lock holder must be a non-empty string")
    return holder


def check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or not value.isprintable():
        raise StoreError(f"{what}: must be a printable string of 1-255 characters, got {value!r}")
    return value


def check_lease(lease: object) -> Lease:
    if not isinstance(lease, Lease):
        raise StoreError(f"lease: must be a Lease, got {lease!r}")
    return lease


def check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise InvalidNode(f"ttl: must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


def format_instant(epoch: float) -> str:
    """An epoch time as an operator reads it: ISO 8601 UTC to the millisecond."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{whole}.{int(epoch % 1 * 1000):03d}Z"


def log_takeover(node: str, old_holder: str, expired_at: float | None, holder: str) -> None:
    log.warning(
        "node %s: lock of %s expired at %s, taken over by %s",
        node,
        old_holder,
        "?" if expired_at is None else format_instant(expired_at),
        holder,
    )


def create_private_file(path: str) -> bool:
    """Create ``path`` empty with mode 0600 if it does not exist; True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StoreError(f"cannot create store file {path}: {exc.strerror}") from exc
    os.close(fd)
    return True


def warn_if_exposed(path: str) -> None:
    """Log a warning when a file holding BMC passwords is readable by group or others."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "store file %s is accessible by group/others (mode %o); it holds BMC passwords, "
            "run: chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )


class Inventory(TypedDict, total=False):
    """A node's inventory as keyword arguments (defaults: store.model.INVENTORY_DEFAULTS)."""

    name: Required[str]
    bmc_address: Required[str]
    bmc_username: Required[str]
    bmc_password: Required[str]
    bmc_port: int
    cipher_suites: Sequence[int]
    privilege: str
    instance_uuid: str | None
    session_mode: str | None
    driver: str
    driver_info: Mapping[str, Scalar] | None
    provision_state: str | None


def inventory_fields(inventory: Mapping[str, object]) -> dict[str, object]:
    """Validated inventory fields, the defaults filled in (InvalidNode names the field)."""
    values = dict(inventory)
    if values.get("driver_info", {}) is None:
        values["driver_info"] = {}
    return validate_inventory(values)


class Store(abc.ABC):
    """Node inventory, power state, node locks, history and the notification outbox.

    Use as a context manager or call :meth:`close`.
    """

    path: str
    backend: str  # "sqlite" | "json"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    # --- inventory ----------------------------------------------------------------------

    def add_node(
        self, *, uuid: str | None = None, now: float | None = None, **inventory: Unpack[Inventory]
    ) -> Node:
        """Add a node; DuplicateNode if the name (or the given uuid) exists, InvalidNode on a
        bad field. ``uuid`` keeps a given identity (Ironic's); by default a new one."""
        node = new_node(inventory_fields(inventory), now=0.0, uuid=validate_node_uuid(uuid))
        return self._insert_nodes([node], check_now(now))[0]

    def add_nodes(
        self, nodes: Sequence[Mapping[str, object]], *, now: float | None = None
    ) -> list[Node]:
        """Add many nodes in one transaction (``node import``): all or none.

        Each mapping has add_node's keyword arguments. InvalidNode names the entry and the
        field; DuplicateNode if a name exists or repeats in the batch.
        """
        new = prepare_new_nodes(nodes)
        return self._insert_nodes(new, check_now(now)) if new else []

    def upsert_node(
        self, *, uuid: str | None = None, now: float | None = None, **inventory: Unpack[Inventory]
    ) -> Node:
        """Add the node, or replace the inventory fields of the node with that name.

        Power state, maintenance, reservation, counters and the uuid of an existing node are
        kept; ``uuid`` is the identity of a new one (DuplicateNode if another node has it).
        """
        fields = inventory_fields(inventory)
        return self._upsert(fields, check_now(now), validate_node_uuid(uuid))

    @abc.abstractmethod
    def _insert_nodes(self, nodes: Sequence[Node], now: float | None) -> list[Node]:
        """Insert validated new nodes in one transaction, stamped with ``now`` or the
        backend's clock (:func:`stamp_new_nodes`); DuplicateNode if a name or uuid is taken."""

    @abc.abstractmethod
    def _upsert(self, fields: Mapping[str, object], now: float | None, uuid: str | None) -> Node:
        """Insert or update (by name) from validated inventory fields, in one transaction;
        a new node gets ``uuid`` when given (DuplicateNode if it is taken)."""

    @abc.abstractmethod
    def get_node(self, name_or_uuid: str) -> Node:
        """The node with that uuid or name; NodeNotFound otherwise."""

    @abc.abstractmethod
    def list_nodes(
        self,
        *,
        maintenance: bool | None = None,
        fault: str | None = None,
        has_instance: bool | None = None,
    ) -> list[Node]:
        """Nodes ordered by name; each filter applies only when not None."""

    @abc.abstractmethod
    def update_node(self, name_or_uuid: str, *, now: float | None = None, **fields: object) -> Node:
        """Operator edit of inventory or state fields; returns the updated node."""

    @abc.abstractmethod
    def delete_node(self, name_or_uuid: str, *, now: float | None = None) -> None:
        """Delete the node with its history and outbox rows; NodeLocked while reserved."""

    # --- locks --------------------------------------------------------------------------

    @abc.abstractmethod
    def acquire_lock(
        self,
        node_uuid: str,
        holder: str,
        *,
        ttl: float,
        now: float | None = None,
        fence: Lease | None = None,
    ) -> bool:
        """Reserve the node for ``holder`` until now + ttl if it is free or expired.

        Atomic across processes. Not re-entrant: a holder that already has the node gets
        False (use :meth:`renew_lock`). Taking over an expired lock is logged. With
        ``fence``, also False unless that lease is still current (checked in the same
        transaction).
        """

    @abc.abstractmethod
    def renew_lock(
        self, node_uuid: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        """Extend the holder's reservation to now + ttl; False if the holder does not hold it."""

    @abc.abstractmethod
    def release_lock(self, node_uuid: str, holder: str) -> bool:
        """Clear the holder's reservation; False if the holder does not hold it."""

    @abc.abstractmethod
    def release_locks_held_by(self, holder: str) -> int:
        """Clear every reservation of ``holder`` (a restarted daemon); returns how many."""

    # --- state changes, history, outbox ---------------------------------------------------

    def apply(self, changes: Sequence[NodeChange], *, now: float | None = None) -> list[str]:
        """Write a batch of node changes, history rows and outbox rows in ONE transaction.

        Every change is validated before anything is written; an invalid one rejects the whole
        batch. A change for a node that no longer exists (deleted meanwhile) is skipped with a
        warning, so one deleted node cannot lose a whole cycle's observations. A change whose
        ``expected`` fields moved, or whose node another holder has locked, is skipped too
        (checked in the same transaction as the write): the uuids of those are returned.
        """
        at = check_now(now)
        checked = check_changes(changes)
        if not checked:
            return []
        plan = self._carry_out(checked, at)
        for node_uuid in plan.missing:
            log.warning("apply: node %s no longer exists; its change is skipped", node_uuid)
        for name, count in plan.fenced.items():
            log.warning(
                "apply: lease %s is no longer held with the batch's token; %d change(s) skipped",
                name,
                count,
            )
        return plan.conflicts

    @abc.abstractmethod
    def _carry_out(self, checked: Sequence[CheckedChange], now: float | None) -> ApplyPlan:
        """In one write transaction: read the guard rows, plan_apply(), write the plan."""

    @abc.abstractmethod
    def history(self, node: str | None = None, *, limit: int = 100) -> list[HistoryEntry]:
        """History rows, newest first, of one node (name or uuid) or of all nodes."""

    @abc.abstractmethod
    def due_notifications(
        self, *, limit: int = 100, now: float | None = None, fence: Lease | None = None
    ) -> list[Notification]:
        """Pending notifications whose next attempt is due, oldest first.

        With ``fence`` (the outbox drainer's lease): LeaseLost unless it is still current."""

    @abc.abstractmethod
    def next_notification_at(self) -> float | None:
        """The earliest next_attempt_at of pending notifications, or None."""

    @abc.abstractmethod
    def get_notification(self, notification_id: int) -> Notification:
        """One outbox row by id; StoreError if there is none."""

    @abc.abstractmethod
    def mark_delivered(self, ids: Sequence[int]) -> None:
        """Mark pending (or meanwhile superseded) rows delivered."""

    @abc.abstractmethod
    def mark_dropped(self, notification_id: int, reason: str) -> None:
        """Give up on a pending row (e.g. Nova says the instance does not exist)."""

    @abc.abstractmethod
    def defer_notification(
        self,
        notification_id: int,
        *,
        next_attempt_at: float,
        error: str,
    ) -> None:
        """Count a failed attempt and schedule the next one."""

    @abc.abstractmethod
    def notification_counts(self) -> dict[str, int]:
        """Rows per status: pending, delivered, dropped, superseded (all keys present)."""

    @abc.abstractmethod
    def prune(self, *, before: float) -> dict[str, int]:
        """Delete history rows and finished (not pending) outbox rows older than ``before``.

        Pending notifications are never pruned. Returns {"history": n, "notifications": m}.
        """

    # --- several agents on one site (docs/scale-out.md) -----------------------------------

    @abc.abstractmethod
    def server_time(self) -> float:
        """The backend's clock in epoch seconds: the database server's for PostgreSQL, this
        process's wall clock for the embedded backends. Leases and heartbeats use it."""

    @abc.abstractmethod
    def register_conductor(
        self, host: str, *, now: float | None = None, info: str | None = None
    ) -> Conductor:
        """An agent (re)starts as ``host``: started_at and last_heartbeat become now."""

    @abc.abstractmethod
    def heartbeat(
        self, host: str, *, now: float | None = None, info: str | None = None
    ) -> Conductor:
        """Record that ``host`` is alive (registering it if unknown); ``info`` None keeps the
        last info (e.g. the last cycle summary as JSON)."""

    @abc.abstractmethod
    def list_conductors(self) -> list[Conductor]:
        """Every registered agent, ordered by host, alive or not (see Conductor.alive)."""

    @abc.abstractmethod
    def unregister(self, host: str) -> bool:
        """Remove ``host`` (a clean shutdown); False if it was not registered."""

    @abc.abstractmethod
    def acquire_lease(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> Lease | None:
        """Take lease ``name`` for ``holder`` if it is free, expired or already the holder's;
        None if another holder has it unexpired. Every acquisition gets a new, larger token,
        so an earlier incarnation of the same holder is fenced off too."""

    @abc.abstractmethod
    def renew_lease(self, lease: Lease, *, ttl: float, now: float | None = None) -> Lease | None:
        """Extend the lease to now + ttl, same token; None if it has changed hands since."""

    @abc.abstractmethod
    def release_lease(self, lease: Lease) -> bool:
        """Give the lease up (the token stays, so the next holder's is larger)."""

    @abc.abstractmethod
    def list_leases(self) -> list[Lease]:
        """Leases that have a holder (expired ones included), ordered by name."""

    # --- metadata -----------------------------------------------------------------------

    @abc.abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Store a small text value (e.g. the last cycle summary as JSON)."""

    @abc.abstractmethod
    def get_meta(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file; further calls raise StoreError."""


def check_meta(key: object, value: object) -> None:
    if not isinstance(key, str) or not key:
        raise StoreError("meta key must be a non-empty string")
    if not isinstance(value, str):
        raise StoreError(f"meta value for {key!r} must be a string")


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise StoreError(f"limit must be a non-negative integer, got {limit!r}")
    return limit


def empty_counts() -> dict[str, int]:
    return {"pending": 0, "delivered": 0, "dropped": 0, "superseded": 0}


def merge_fields(node: Node, fields: Mapping[str, object]) -> dict[str, object]:
    """Only the fields whose value actually differs from the node's."""
    return {key: value for key, value in fields.items() if getattr(node, key) != value}


def stamp_new_nodes(nodes: Sequence[Node], at: float) -> list[Node]:
    """New nodes with their creation time, read inside the inserting transaction."""
    return [attrs.evolve(node, created_at=at, updated_at=at) for node in nodes]


def instance_taken(instance_uuid: object, holder: str) -> InstanceInUse:
    """One Nova instance runs on one node: a second node naming it is refused (every
    backend, on add, upsert and update; moving an instance is clear, then set)."""
    return InstanceInUse(f"instance {instance_uuid} is already on node {holder!r}")


def prepare_new_nodes(specs: Sequence[Mapping[str, object]]) -> list[Node]:
    """Validate a batch of add_node() argument mappings into new Node records (the backend
    stamps their times when it inserts them)."""
    nodes: list[Node] = []
    seen: set[str] = set()
    seen_uuids: set[str] = set()
    instances: dict[str, str] = {}
    for index, spec in enumerate(specs):
        label = f"node {spec.get('name')!r}" if isinstance(spec.get("name"), str) else f"#{index}"
        values = dict(spec)
        given_uuid = values.pop("uuid", None)
        try:
            fields = inventory_fields(values)
            node = new_node(fields, now=0.0, uuid=validate_node_uuid(given_uuid))
        except InvalidNode as exc:
            raise InvalidNode(f"{label}: {exc}") from None
        if node.name in seen:
            raise DuplicateNode(f"a node named {node.name!r} appears twice in the batch")
        if node.uuid in seen_uuids:
            raise DuplicateNode(f"uuid {node.uuid} appears twice in the batch")
        if node.instance_uuid in instances:
            raise instance_taken(node.instance_uuid, instances[node.instance_uuid])
        seen.add(node.name)
        seen_uuids.add(node.uuid)
        if node.instance_uuid is not None:
            instances[node.instance_uuid] = node.name
        nodes.append(node)
    return nodes
