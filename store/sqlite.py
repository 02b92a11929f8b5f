"""SQLite backend (the default).

WAL journal with ``synchronous = FULL`` (a committed transaction survives a crash of the process
and of the machine), a busy timeout so the daemon and a CLI command can share the file, foreign
keys on, the schema version in ``PRAGMA user_version``. Every write is one ``BEGIN IMMEDIATE``
transaction, which takes the database write lock up front: a read-check-write such as a lock
compare-and-set is atomic across processes.

The connection is opened with ``check_same_thread=False`` because the agent calls the store from
trio worker threads; calls are serialised by the caller and, belt and braces, by a lock here.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from store import schema
from store.base import (
    Store,
    check_holder,
    check_limit,
    check_meta,
    check_ttl,
    create_private_file,
    empty_counts,
    log_takeover,
    merge_fields,
    resolve_now,
    warn_if_exposed,
)
from store.errors import (
    DuplicateNode,
    NodeLocked,
    NodeNotFound,
    StoreCorrupt,
    StoreError,
)
from store.model import (
    GUARD_FIELDS,
    NODE_FIELDS,
    NOTIFICATION_FIELDS,
    UPDATABLE_FIELDS,
    HistoryEntry,
    Node,
    Notification,
    new_node,
    validate_fields,
)
from store.plan import ApplyPlan, CheckedChange, GuardRow, plan_apply
from store.rows import from_column, node_from_row, to_column
from store.validate import parse_uuid

BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's transaction

_NODE_SELECT = f"SELECT {', '.join(NODE_FIELDS)} FROM nodes"  # noqa: S608
_NOTIFICATION_SELECT = f"SELECT {', '.join(NOTIFICATION_FIELDS)} FROM notifications"  # noqa: S608
_GUARDS = sorted(GUARD_FIELDS)
_GUARD_SELECT = (
    f"SELECT uuid, instance_uuid, reservation_expires_at, {', '.join(_GUARDS)} "  # noqa: S608
    "FROM nodes WHERE uuid IN "
)


def _notification_from_row(row: Sequence[Any]) -> Notification:
    return Notification(*row)


class SqliteStore(Store):
    backend = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        if os.path.isdir(path):
            raise StoreError(f"store path {path} is a directory, not a file")
        if not create_private_file(path):
            warn_if_exposed(path)
        try:
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        self._conn = conn
        try:
            with self._translate():
                schema.prepare(conn, path)
        except BaseException:
            conn.close()
            self._conn = None
            raise

    # --- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise StoreError(
                    f"store {self.path} is busy (another process holds it for more than "
                    f"{BUSY_TIMEOUT:g} s): {text}"
                ) from exc
            raise StoreError(f"store {self.path}: {text}") from exc
        except sqlite3.Error as exc:
            # SQLITE_CORRUPT / SQLITE_NOTADB arrive as the plain DatabaseError class.
            code = getattr(exc, "sqlite_errorname", "")
            if type(exc) is sqlite3.DatabaseError or code.startswith(
                ("SQLITE_CORRUPT", "SQLITE_NOTADB")
            ):
                raise StoreCorrupt(
                    f"store {self.path} is damaged or not a database ({exc}); restore it from "
                    "a backup or move it aside"
                ) from exc
            raise StoreError(f"store {self.path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database write lock from the start."""
        with self._lock, self._translate():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for reads that take several statements."""
        with self._lock, self._translate():
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    @staticmethod
    def _find(conn: sqlite3.Connection, name_or_uuid: str) -> Node:
        canonical = parse_uuid(name_or_uuid) if isinstance(name_or_uuid, str) else None
        if canonical is not None:
            row = conn.execute(f"{_NODE_SELECT} WHERE uuid = ?", (canonical,)).fetchone()
        else:
            row = conn.execute(f"{_NODE_SELECT} WHERE name = ?", (name_or_uuid,)).fetchone()
        if row is None:
            raise NodeNotFound(f"no node named or with uuid {name_or_uuid!r}")
        return node_from_row(row)

    @classmethod
    def _uuid_or_none(cls, conn: sqlite3.Connection, name_or_uuid: str) -> str | None:
        """The uuid of a node named or identified so (locks take either, as acquire does)."""
        try:
            return cls._find(conn, name_or_uuid).uuid
        except NodeNotFound:
            return None

    @staticmethod
    def _insert(conn: sqlite3.Connection, node: Node) -> None:
        values = [to_column(field, getattr(node, field)) for field in NODE_FIELDS]
        placeholders = ", ".join("?" for _ in NODE_FIELDS)
        conn.execute(
            f"INSERT INTO nodes ({', '.join(NODE_FIELDS)}) VALUES ({placeholders})",  # noqa: S608
            values,
        )

    @staticmethod
    def _update(
        conn: sqlite3.Connection, node_uuid: str, fields: Mapping[str, object], now: float
    ) -> None:
        assignments = ", ".join(f"{field} = ?" for field in fields)
        values = [to_column(field, value) for field, value in fields.items()]
        conn.execute(
            f"UPDATE nodes SET {assignments}, updated_at = ? WHERE uuid = ?",  # noqa: S608
            [*values, now, node_uuid],
        )

    @staticmethod
    def _name_taken(conn: sqlite3.Connection, name: object) -> bool:
        return conn.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone() is not None

    # --- inventory ----------------------------------------------------------------------

    def _insert_nodes(self, nodes: Sequence[Node]) -> None:
        with self._write() as conn:
            for node in nodes:
                if self._name_taken(conn, node.name):
                    raise DuplicateNode(f"a node named {node.name!r} already exists")
                self._insert(conn, node)

    def _upsert(self, fields: Mapping[str, object], now: float) -> Node:
        with self._write() as conn:
            try:
                existing = self._find(conn, str(fields["name"]))
            except NodeNotFound:
                node = new_node(fields, now=now)
                self._insert(conn, node)
                return node
            changed = merge_fields(existing, fields)
            if changed:
                self._update(conn, existing.uuid, changed, now)
            return self._find(conn, existing.uuid)

    def get_node(self, name_or_uuid: str) -> Node:
        with self._lock, self._translate():
            return self._find(self._connection(), name_or_uuid)

    def list_nodes(
        self,
        *,
        maintenance: bool | None = None,
        fault: str | None = None,
        has_instance: bool | None = None,
    ) -> list[Node]:
        conditions: list[str] = []
        parameters: list[object] = []
        if maintenance is not None:
            conditions.append("maintenance = ?")
            parameters.append(int(maintenance))
        if fault is not None:
            conditions.append("fault = ?")
            parameters.append(fault)
        if has_instance is not None:
            conditions.append(f"instance_uuid IS {'NOT ' if has_instance else ''}NULL")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._lock, self._translate():
            rows = self._connection().execute(f"{_NODE_SELECT}{where} ORDER BY name", parameters)
            return [node_from_row(row) for row in rows]

    def update_node(self, name_or_uuid: str, *, now: float | None = None, **fields: object) -> Node:
        clean = validate_fields(fields, UPDATABLE_FIELDS)
        at = resolve_now(now)
        with self._write() as conn:
            node = self._find(conn, name_or_uuid)
            changed = merge_fields(node, clean)
            if "name" in changed and self._name_taken(conn, changed["name"]):
                raise DuplicateNode(f"a node named {changed['name']!r} already exists")
            if changed:
                self._update(conn, node.uuid, changed, at)
            return self._find(conn, node.uuid)

    def delete_node(self, name_or_uuid: str, *, now: float | None = None) -> None:
        at = resolve_now(now)
        with self._write() as conn:
            node = self._find(conn, name_or_uuid)
            if node.is_locked(at):
                raise NodeLocked(f"node {node.name} is locked by {node.reservation}; not deleted")
            conn.execute("DELETE FROM nodes WHERE uuid = ?", (node.uuid,))

    # --- locks --------------------------------------------------------------------------

    def acquire_lock(
        self, node_uuid: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        holder = check_holder(holder)
        at = resolve_now(now)
        expires_at = at + check_ttl(ttl)
        with self._write() as conn:
            node = self._find(conn, node_uuid)
            if node.is_locked(at):
                return False
            if node.reservation is not None:
                log_takeover(node.name, node.reservation, node.reservation_expires_at, holder)
            conn.execute(
                "UPDATE nodes SET reservation = ?, reservation_expires_at = ? WHERE uuid = ?",
                (holder, expires_at, node.uuid),
            )
            return True

    def renew_lock(
        self, node_uuid: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        holder = check_holder(holder)
        expires_at = resolve_now(now) + check_ttl(ttl)
        with self._write() as conn:
            uuid = self._uuid_or_none(conn, node_uuid)
            cursor = conn.execute(
                "UPDATE nodes SET reservation_expires_at = ? WHERE uuid = ? AND reservation = ?",
                (expires_at, uuid, holder),
            )
            return cursor.rowcount == 1

    def release_lock(self, node_uuid: str, holder: str) -> bool:
        holder = check_holder(holder)
        with self._write() as conn:
            uuid = self._uuid_or_none(conn, node_uuid)
            cursor = conn.execute(
                "UPDATE nodes SET reservation = NULL, reservation_expires_at = NULL "
                "WHERE uuid = ? AND reservation = ?",
                (uuid, holder),
            )
            return cursor.rowcount == 1

    def release_locks_held_by(self, holder: str) -> int:
        holder = check_holder(holder)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE nodes SET reservation = NULL, reservation_expires_at = NULL "
                "WHERE reservation = ?",
                (holder,),
            )
            return cursor.rowcount

    # --- state changes ------------------------------------------------------------------

    def _carry_out(self, checked: Sequence[CheckedChange], now: float | None) -> ApplyPlan:
        with self._write() as conn:
            at = resolve_now(now)
            rows = self._guard_rows(conn, {item.node_uuid for item in checked})
            plan = plan_apply(checked, rows, at)
            # Grouped by the set of fields changed, so each shape is one executemany.
            by_shape: dict[tuple[str, ...], list[list[object]]] = {}
            for node_uuid, fields in plan.updates.items():
                values = [to_column(f, v) for f, v in fields.items()]
                by_shape.setdefault(tuple(fields), []).append([*values, at, node_uuid])
            for shape, parameters in by_shape.items():
                assignments = "".join(f"{field} = ?, " for field in shape)
                conn.executemany(
                    f"UPDATE nodes SET {assignments}updated_at = ? WHERE uuid = ?",  # noqa: S608
                    parameters,
                )
            conn.executemany(
                "INSERT INTO history (node_uuid, at, from_state, to_state, cause, message) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        h.node_uuid,
                        h.at,
                        h.record.from_state,
                        h.record.to_state,
                        h.record.cause,
                        h.record.message,
                    )
                    for h in plan.history
                ],
            )
            conn.executemany(
                "UPDATE notifications SET status = 'superseded' "
                "WHERE instance_uuid = ? AND status = 'pending'",
                [(instance,) for instance in plan.supersede],
            )
            conn.executemany(
                "INSERT INTO notifications (node_uuid, instance_uuid, power_state, created_at, "
                "attempts, next_attempt_at, last_error, status) VALUES (?, ?, ?, ?, 0, ?, NULL, ?)",
                [
                    (o.node_uuid, o.instance_uuid, o.power_state, o.at, o.at, o.status)
                    for o in plan.outbox
                ],
            )
        return plan

    @staticmethod
    def _guard_rows(conn: sqlite3.Connection, uuids: set[str]) -> dict[str, GuardRow]:
        """The GuardRow of each existing node among ``uuids``."""
        wanted = sorted(uuids)
        found: dict[str, GuardRow] = {}
        for start in range(0, len(wanted), 500):  # in chunks: SQLite's parameter limit
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for uuid, instance, expires, *guarded in conn.execute(
                f"{_GUARD_SELECT}({marks})", chunk
            ):
                values = {f: from_column(f, v) for f, v in zip(_GUARDS, guarded, strict=True)}
                found[uuid] = GuardRow(instance, expires, values)
        return found

    def history(self, node: str | None = None, *, limit: int = 100) -> list[HistoryEntry]:
        limit = check_limit(limit)
        query = (
            "SELECT h.id, h.node_uuid, n.name, h.at, h.from_state, h.to_state, h.cause, "
            "h.message FROM history AS h JOIN nodes AS n ON n.uuid = h.node_uuid"
        )
        with self._read() as conn:
            if node is None:
                rows = conn.execute(f"{query} ORDER BY h.id DESC LIMIT ?", (limit,))
            else:
                found = self._find(conn, node)
                rows = conn.execute(
                    f"{query} WHERE h.node_uuid = ? ORDER BY h.id DESC LIMIT ?",
                    (found.uuid, limit),
                )
            return [HistoryEntry(*row) for row in rows]

    # --- outbox -------------------------------------------------------------------------

    def due_notifications(
        self, *, limit: int = 100, now: float | None = None
    ) -> list[Notification]:
        limit = check_limit(limit)
        at = resolve_now(now)
        with self._lock, self._translate():
            rows = self._connection().execute(
                f"{_NOTIFICATION_SELECT} WHERE status = 'pending' AND next_attempt_at <= ? "
                "ORDER BY created_at, id LIMIT ?",
                (at, limit),
            )
            return [_notification_from_row(row) for row in rows]

    def next_notification_at(self) -> float | None:
        with self._lock, self._translate():
            row = (
                self._connection()
                .execute("SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'pending'")
                .fetchone()
            )
            return None if row[0] is None else float(row[0])

    def get_notification(self, notification_id: int) -> Notification:
        with self._lock, self._translate():
            row = (
                self._connection()
                .execute(f"{_NOTIFICATION_SELECT} WHERE id = ?", (notification_id,))
                .fetchone()
            )
        if row is None:
            raise StoreError(f"no notification with id {notification_id}")
        return _notification_from_row(row)

    def mark_delivered(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE notifications SET status = 'delivered', attempts = attempts + 1, "
                "last_error = NULL WHERE id = ? AND status IN ('pending', 'superseded')",
                [(int(i),) for i in ids],
            )

    def mark_dropped(self, notification_id: int, reason: str) -> None:
        with self._write() as conn:
            self._require_notification(conn, notification_id)
            conn.execute(
                "UPDATE notifications SET status = 'dropped', last_error = ? "
                "WHERE id = ? AND status = 'pending'",
                (str(reason), notification_id),
            )

    def defer_notification(
        self,
        notification_id: int,
        *,
        next_attempt_at: float,
        error: str,
    ) -> None:
        with self._write() as conn:
            self._require_notification(conn, notification_id)
            conn.execute(
                "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?, "
                "last_error = ? WHERE id = ? AND status = 'pending'",
                (float(next_attempt_at), str(error), notification_id),
            )

    @staticmethod
    def _require_notification(conn: sqlite3.Connection, notification_id: int) -> None:
        row = conn.execute(
            "SELECT 1 FROM notifications WHERE id = ?", (notification_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no notification with id {notification_id}")

    def notification_counts(self) -> dict[str, int]:
        counts = empty_counts()
        with self._lock, self._translate():
            rows = self._connection().execute(
                "SELECT status, count(*) FROM notifications GROUP BY status"
            )
            for status, count in rows:
                counts[status] = int(count)
        return counts

    def prune(self, *, before: float) -> dict[str, int]:
        with self._write() as conn:
            history = conn.execute("DELETE FROM history WHERE at < ?", (float(before),))
            notifications = conn.execute(
                "DELETE FROM notifications WHERE status != 'pending' AND created_at < ?",
                (float(before),),
            )
            return {"history": history.rowcount, "notifications": notifications.rowcount}

    # --- meta ---------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        check_meta(key, value)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_meta(self, key: str) -> str | None:
        with self._lock, self._translate():
            row = (
                self._connection()
                .execute("SELECT value FROM meta WHERE key = ?", (key,))
                .fetchone()
            )
        return None if row is None else str(row[0])

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` rows (["ok"] for a sound database)."""
        with self._lock, self._translate():
            rows = self._connection().execute("PRAGMA integrity_check").fetchall()
        return [str(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
