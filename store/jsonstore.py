"""JSON backend, for tiny sites: the whole store is one human-readable JSON file.

Durability: every change writes the whole file to a temporary file in the same directory
(0600), fsyncs it, renames it over the store and fsyncs the directory, so the file on disk is
always either the old or the new version, never a mix.

Concurrency between processes (the daemon and a CLI command): every read-modify-write holds an
exclusive ``flock`` on ``<path>.lock``, and reads hold a shared one. The data file itself cannot
carry the lock because each write replaces its inode. The parsed file is cached and reloaded
whenever its identity (inode, size, mtime, ctime) changed on disk.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from store.base import (
    Store,
    check_holder,
    check_limit,
    check_meta,
    check_ttl,
    empty_counts,
    instance_taken,
    log,
    log_takeover,
    merge_fields,
    resolve_now,
    stamp_new_nodes,
    warn_if_exposed,
)
from store.errors import DuplicateNode, LeaseLost, NodeLocked, NodeNotFound, StoreError
from store.jsonagents import JsonConductors, fence_holds
from store.jsonfile import (
    CURRENT_VERSION,
    JsonState,
    Transaction,
    Version,
    file_stamp,
    load_state,
    remove_stale_temporaries,
    save_state,
)
from store.model import (
    GUARD_FIELDS,
    UPDATABLE_FIELDS,
    HistoryEntry,
    Lease,
    Node,
    Notification,
    new_node,
    validate_fields,
)
from store.plan import (
    ApplyPlan,
    CheckedChange,
    GuardRow,
    plan_apply,
)

BUSY_TIMEOUT = 10.0  # seconds to wait for another process's lock on the file


class JsonStore(JsonConductors, Store):
    backend = "json"

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"
        self._lock = threading.RLock()
        self._state: JsonState | None = None
        self._version: Version | None = None
        if os.path.isdir(path):
            raise StoreError(f"store path {path} is a directory, not a file")
        try:
            self._lock_fd: int | None = os.open(
                self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise StoreError(
                f"cannot open store lock file {self.lock_path}: {exc.strerror}"
            ) from exc
        try:
            with self._flock(fcntl.LOCK_EX):
                remove_stale_temporaries(path)
                if os.path.exists(path):
                    warn_if_exposed(path)
                    state = self._current()
                    if state.read_version < CURRENT_VERSION:
                        log.warning(
                            "store %s: migrating format version %d to %d",
                            path,
                            state.read_version,
                            CURRENT_VERSION,
                        )
                        self._save(attrs.evolve(state, read_version=CURRENT_VERSION))
                else:
                    self._save(JsonState())
        except BaseException:
            self.close()
            raise

    # --- file handling ------------------------------------------------------------------

    @contextmanager
    def _flock(self, operation: int) -> Iterator[None]:
        if self._lock_fd is None:
            raise StoreError(f"store {self.path} is closed")
        # Poll rather than block, so a stuck process cannot hang us forever (like SQLite's
        # busy timeout).
        deadline = time.monotonic() + BUSY_TIMEOUT
        delay = 0.001
        while True:
            try:
                fcntl.flock(self._lock_fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"store {self.path} is busy (another process has held {self.lock_path} "
                        f"for more than {BUSY_TIMEOUT:g} s)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _current(self) -> JsonState:
        """The state on disk, parsed again only if the file changed since we last read it."""
        try:
            stamp = file_stamp(self.path)
        except FileNotFoundError:
            raise StoreError(f"store file {self.path} has disappeared") from None
        if self._state is not None and self._version is not None and stamp == self._version.stamp:
            return self._state
        self._forget()
        self._state, self._version = load_state(self.path)
        return self._state

    def _save(self, state: JsonState) -> None:
        self._forget()  # on failure the file is still the truth
        self._version = save_state(self.path, state)
        self._state = state

    def _forget(self) -> None:
        self._state = None
        if self._version is not None:
            self._version.close()
            self._version = None

    @contextmanager
    def _reading(self) -> Iterator[JsonState]:
        with self._lock, self._flock(fcntl.LOCK_SH):
            yield self._current()

    @contextmanager
    def _writing(self) -> Iterator[Transaction]:
        """A read-modify-write under the exclusive lock; saved if the body set ``dirty``.

        Bodies raise StoreError only before they change anything, so the cache stays valid.
        """
        with self._lock, self._flock(fcntl.LOCK_EX):
            transaction = Transaction(self._current())
            try:
                yield transaction
            except StoreError:
                raise
            except BaseException:
                # The cached state may be half changed: drop it, the file is still the truth.
                self._forget()
                raise
            if transaction.dirty:
                self._save(transaction.state)

    # --- inventory ----------------------------------------------------------------------

    def _insert_nodes(self, nodes: Sequence[Node], now: float | None) -> list[Node]:
        stamped = stamp_new_nodes(nodes, resolve_now(now))
        with self._writing() as txn:
            taken = {node.name for node in txn.state.nodes.values()}
            for node in stamped:
                if node.name in taken:
                    raise DuplicateNode(f"a node named {node.name!r} already exists")
                _check_uuid_free(txn.state.nodes, node.uuid)
                _check_instance_free(txn.state.nodes, node.instance_uuid, node.uuid)
            for node in stamped:
                txn.state.nodes[node.uuid] = node
            txn.dirty = True
        return stamped

    def _upsert(self, fields: Mapping[str, object], now: float | None, uuid: str | None) -> Node:
        at = resolve_now(now)
        with self._writing() as txn:
            try:
                existing = txn.state.find(str(fields["name"]))
            except NodeNotFound:
                node = new_node(fields, now=at, uuid=uuid)
                _check_uuid_free(txn.state.nodes, node.uuid)
                _check_instance_free(txn.state.nodes, node.instance_uuid, node.uuid)
            else:
                changed = merge_fields(existing, fields)
                if not changed:
                    return existing
                if "instance_uuid" in changed:
                    _check_instance_free(txn.state.nodes, changed["instance_uuid"], existing.uuid)
                node = attrs.evolve(existing, **changed, updated_at=at)  # type: ignore[arg-type]
            txn.state.nodes[node.uuid] = node
            txn.dirty = True
        return node

    def get_node(self, name_or_uuid: str) -> Node:
        with self._reading() as state:
            return state.find(name_or_uuid)

    def list_nodes(
        self,
        *,
        maintenance: bool | None = None,
        fault: str | None = None,
        has_instance: bool | None = None,
    ) -> list[Node]:
        with self._reading() as state:
            nodes = list(state.nodes.values())
        return sorted(
            (
                node
                for node in nodes
                if (maintenance is None or node.maintenance == maintenance)
                and (fault is None or node.fault == fault)
                and (has_instance is None or (node.instance_uuid is not None) == has_instance)
            ),
            key=lambda node: node.name,
        )

    def update_node(self, name_or_uuid: str, *, now: float | None = None, **fields: object) -> Node:
        clean = validate_fields(fields, UPDATABLE_FIELDS)
        at = resolve_now(now)
        with self._writing() as txn:
            node = txn.state.find(name_or_uuid)
            changed = merge_fields(node, clean)
            if not changed:
                return node
            if "name" in changed and txn.state.name_taken(changed["name"]):
                raise DuplicateNode(f"a node named {changed['name']!r} already exists")
            if "instance_uuid" in changed:
                _check_instance_free(txn.state.nodes, changed["instance_uuid"], node.uuid)
            node = attrs.evolve(node, **changed, updated_at=at)  # type: ignore[arg-type]
            txn.state.nodes[node.uuid] = node
            txn.dirty = True
        return node

    def delete_node(self, name_or_uuid: str, *, now: float | None = None) -> None:
        at = resolve_now(now)
        with self._writing() as txn:
            state = txn.state
            node = state.find(name_or_uuid)
            if node.is_locked(at):
                raise NodeLocked(f"node {node.name} is locked by {node.reservation}; not deleted")
            del state.nodes[node.uuid]
            state.history = [row for row in state.history if row["node_uuid"] != node.uuid]
            state.notifications = {
                key: n for key, n in state.notifications.items() if n.node_uuid != node.uuid
            }
            txn.dirty = True

    # --- locks --------------------------------------------------------------------------

    def acquire_lock(
        self,
        node_uuid: str,
        holder: str,
        *,
        ttl: float,
        now: float | None = None,
        fence: Lease | None = None,
    ) -> bool:
        holder = check_holder(holder)
        at = resolve_now(now)
        expires_at = at + check_ttl(ttl)
        with self._writing() as txn:
            node = txn.state.find(node_uuid)
            if node.is_locked(at) or not fence_holds(txn.state, fence, at):
                return False
            if node.reservation is not None:
                log_takeover(node.name, node.reservation, node.reservation_expires_at, holder)
            txn.state.nodes[node.uuid] = attrs.evolve(
                node, reservation=holder, reservation_expires_at=expires_at
            )
            txn.dirty = True
            return True

    def _holder_change(
        self, node_uuid: str, holder: str, reservation: str | None, expires_at: float | None
    ) -> bool:
        with self._writing() as txn:
            try:
                node = txn.state.find(node_uuid)
            except NodeNotFound:
                return False
            if node.reservation != holder:
                return False
            txn.state.nodes[node.uuid] = attrs.evolve(
                node, reservation=reservation, reservation_expires_at=expires_at
            )
            txn.dirty = True
            return True

    def renew_lock(
        self, node_uuid: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        holder = check_holder(holder)
        expires_at = resolve_now(now) + check_ttl(ttl)
        return self._holder_change(node_uuid, holder, holder, expires_at)

    def release_lock(self, node_uuid: str, holder: str) -> bool:
        return self._holder_change(node_uuid, check_holder(holder), None, None)

    def release_locks_held_by(self, holder: str) -> int:
        holder = check_holder(holder)
        with self._writing() as txn:
            nodes = txn.state.nodes
            held = [node for node in nodes.values() if node.reservation == holder]
            for node in held:
                nodes[node.uuid] = attrs.evolve(node, reservation=None, reservation_expires_at=None)
            txn.dirty = bool(held)
            return len(held)

    # --- state changes ------------------------------------------------------------------

    def _carry_out(self, checked: Sequence[CheckedChange], now: float | None) -> ApplyPlan:
        at = resolve_now(now)
        with self._writing() as txn:
            state = txn.state
            rows: dict[str, GuardRow] = {}
            for item in checked:
                node = state.nodes.get(item.node_uuid)
                if node is not None:
                    values = {field: getattr(node, field) for field in GUARD_FIELDS}
                    rows[node.uuid] = GuardRow(
                        node.instance_uuid, node.reservation_expires_at, values
                    )
            plan = plan_apply(checked, rows, at, state.leases)
            for node_uuid, fields in plan.updates.items():
                state.nodes[node_uuid] = attrs.evolve(
                    state.nodes[node_uuid],
                    **fields,  # type: ignore[arg-type]
                    updated_at=at,
                )
            for row in plan.history:
                state.history.append(
                    {
                        "id": state.next_history_id,
                        "node_uuid": row.node_uuid,
                        "at": row.at,
                        "from_state": row.record.from_state,
                        "to_state": row.record.to_state,
                        "cause": row.record.cause,
                        "message": row.record.message,
                    }
                )
                state.next_history_id += 1
            superseded = set(plan.supersede)
            for key, notification in state.notifications.items():
                if notification.status == "pending" and notification.instance_uuid in superseded:
                    state.notifications[key] = attrs.evolve(notification, status="superseded")
            for queued in plan.outbox:
                notification = Notification(
                    id=state.next_notification_id,
                    node_uuid=queued.node_uuid,
                    instance_uuid=queued.instance_uuid,
                    power_state=queued.power_state,
                    created_at=queued.at,
                    attempts=0,
                    next_attempt_at=queued.at,
                    last_error=None,
                    status=queued.status,
                )
                state.notifications[notification.id] = notification
                state.next_notification_id += 1
            txn.dirty = True
        return plan

    def history(self, node: str | None = None, *, limit: int = 100) -> list[HistoryEntry]:
        limit = check_limit(limit)
        entries: list[HistoryEntry] = []
        with self._reading() as state:
            wanted = None if node is None else state.find(node).uuid
            for row in reversed(state.history):
                if len(entries) >= limit:
                    break
                if wanted is not None and row["node_uuid"] != wanted:
                    continue
                owner = state.nodes.get(row["node_uuid"])
                entries.append(HistoryEntry(node_name=owner.name if owner else "?", **row))
        return entries

    # --- outbox -------------------------------------------------------------------------

    def due_notifications(
        self, *, limit: int = 100, now: float | None = None, fence: Lease | None = None
    ) -> list[Notification]:
        limit = check_limit(limit)
        at = resolve_now(now)
        with self._reading() as state:
            if not fence_holds(state, fence, at):
                assert fence is not None
                raise LeaseLost(f"lease {fence.name} of {fence.holder} is no longer current")
            due = [
                n
                for n in state.notifications.values()
                if n.status == "pending" and n.next_attempt_at <= at
            ]
        due.sort(key=lambda n: (n.created_at, n.id))
        return due[:limit]

    def next_notification_at(self) -> float | None:
        with self._reading() as state:
            times = [
                n.next_attempt_at for n in state.notifications.values() if n.status == "pending"
            ]
        return min(times) if times else None

    def get_notification(self, notification_id: int) -> Notification:
        with self._reading() as state:
            notification = state.notifications.get(notification_id)
        if notification is None:
            raise StoreError(f"no notification with id {notification_id}")
        return notification

    def _change_notification(
        self, notification_id: int, *, count_attempt: bool, **changes: Any
    ) -> None:
        """Change a pending row; a row no longer pending is left alone."""
        with self._writing() as txn:
            row = txn.state.notifications.get(notification_id)
            if row is None:
                raise StoreError(f"no notification with id {notification_id}")
            if row.status == "pending":
                if count_attempt:
                    changes["attempts"] = row.attempts + 1
                txn.state.notifications[notification_id] = attrs.evolve(row, **changes)
                txn.dirty = True

    def mark_delivered(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._writing() as txn:
            notifications = txn.state.notifications
            for notification_id in ids:
                row = notifications.get(int(notification_id))
                if row is not None and row.status in ("pending", "superseded"):
                    notifications[row.id] = attrs.evolve(
                        row, status="delivered", attempts=row.attempts + 1, last_error=None
                    )
                    txn.dirty = True

    def mark_dropped(self, notification_id: int, reason: str) -> None:
        self._change_notification(
            notification_id, count_attempt=False, status="dropped", last_error=str(reason)
        )

    def defer_notification(
        self,
        notification_id: int,
        *,
        next_attempt_at: float,
        error: str,
    ) -> None:
        self._change_notification(
            notification_id,
            count_attempt=True,
            next_attempt_at=float(next_attempt_at),
            last_error=str(error),
        )

    def notification_counts(self) -> dict[str, int]:
        counts = empty_counts()
        with self._reading() as state:
            for row in state.notifications.values():
                counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def prune(self, *, before: float) -> dict[str, int]:
        with self._writing() as txn:
            state = txn.state
            history = [row for row in state.history if row["at"] >= before]
            notifications = {
                key: row
                for key, row in state.notifications.items()
                if row.status == "pending" or row.created_at >= before
            }
            removed = {
                "history": len(state.history) - len(history),
                "notifications": len(state.notifications) - len(notifications),
            }
            state.history, state.notifications = history, notifications
            txn.dirty = any(removed.values())
            return removed

    # --- meta ---------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        check_meta(key, value)
        with self._writing() as txn:
            if txn.state.meta.get(key) != value:
                txn.state.meta[key] = value
                txn.dirty = True

    def get_meta(self, key: str) -> str | None:
        with self._reading() as state:
            return state.meta.get(key)

    def close(self) -> None:
        with self._lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self._forget()


def _check_instance_free(nodes: Mapping[str, Node], instance_uuid: object, node_uuid: str) -> None:
    if instance_uuid is None:
        return
    for node in nodes.values():
        if node.instance_uuid == instance_uuid and node.uuid != node_uuid:
            raise instance_taken(instance_uuid, node.name)


def _check_uuid_free(nodes: Mapping[str, Node], node_uuid: str) -> None:
    if node_uuid in nodes:
        raise DuplicateNode(f"uuid {node_uuid} is already node {nodes[node_uuid].name!r}")
