"""The store over SQL, written once for SQLite and PostgreSQL.

A backend supplies the connection handling: :meth:`SqlStore._write` runs a function in one
write transaction (and may run it again if the transaction certainly did not commit, e.g.
after a lost connection), :meth:`SqlStore._read` runs one in a read transaction, and
:meth:`SqlStore._clock` says what "now" is inside a transaction. Queries are written with
``?`` placeholders; a :class:`Db` for another parameter style translates them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from store.base import (
    Store,
    check_holder,
    check_lease,
    check_limit,
    check_meta,
    check_now,
    check_ttl,
    empty_counts,
    instance_taken,
    log_takeover,
    merge_fields,
    stamp_new_nodes,
)
from store.errors import DuplicateNode, LeaseLost, NodeLocked, NodeNotFound, StoreError
from store.model import (
    CODECS,
    GUARD_FIELDS,
    NODE_FIELDS,
    NOTIFICATION_FIELDS,
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
    fence_names,
    lease_current,
    plan_apply,
)
from store.rows import from_column, node_from_row, to_column
from store.sqlagents import Db, SqlConductors, lease_rows
from store.validate import parse_uuid

T = TypeVar("T")

_NODE_SELECT = f"SELECT {', '.join(NODE_FIELDS)} FROM nodes"  # noqa: S608
_NOTIFICATION_SELECT = f"SELECT {', '.join(NOTIFICATION_FIELDS)} FROM notifications"  # noqa: S608
GUARDS = sorted(GUARD_FIELDS)
_CODEDGUARDS = [field for field in GUARDS if field in CODECS]
GUARD_COLUMNS = (
    f"SELECT uuid, instance_uuid, reservation_expires_at, {', '.join(GUARDS)} "  # noqa: S608
    "FROM nodes"
)
CHUNK = 500  # rows per IN (...) list: SQLite's parameter limit


class SqlStore(SqlConductors, Store):
    native_bool = False  # PostgreSQL has a boolean type; SQLite stores 0/1

    # --- what a backend supplies ----------------------------------------------------------

    # --- helpers --------------------------------------------------------------------------

    def _column(self, field: str, value: object) -> object:
        return to_column(field, value, native_bool=self.native_bool)

    @staticmethod
    def _find(db: Db, name_or_uuid: str) -> Node:
        canonical = parse_uuid(name_or_uuid) if isinstance(name_or_uuid, str) else None
        if canonical is not None:
            row = db.execute(f"{_NODE_SELECT} WHERE uuid = ?", (canonical,)).fetchone()
        else:
            row = db.execute(f"{_NODE_SELECT} WHERE name = ?", (name_or_uuid,)).fetchone()
        if row is None:
            raise NodeNotFound(f"no node named or with uuid {name_or_uuid!r}")
        return node_from_row(row)

    @classmethod
    def _uuid_or_none(cls, db: Db, name_or_uuid: str) -> str | None:
        """The uuid of a node named or identified so (locks take either, as acquire does)."""
        try:
            return cls._find(db, name_or_uuid).uuid
        except NodeNotFound:
            return None

    @classmethod
    def _check_uuid_free(cls, db: Db, node_uuid: str) -> None:
        row = db.execute("SELECT name FROM nodes WHERE uuid = ?", (node_uuid,)).fetchone()
        if row is not None:
            raise DuplicateNode(f"uuid {node_uuid} is already node {row[0]!r}")

    def _insert(self, db: Db, nodes: Sequence[Node]) -> None:
        placeholders = ", ".join("?" for _ in NODE_FIELDS)
        db.executemany(
            f"INSERT INTO nodes ({', '.join(NODE_FIELDS)}) VALUES ({placeholders})",  # noqa: S608
            [[self._column(f, getattr(node, f)) for f in NODE_FIELDS] for node in nodes],
        )

    def _update(self, db: Db, node_uuid: str, fields: Mapping[str, object], now: float) -> None:
        assignments = ", ".join(f"{field} = ?" for field in fields)
        values = [self._column(field, value) for field, value in fields.items()]
        db.execute(
            f"UPDATE nodes SET {assignments}, updated_at = ? WHERE uuid = ?",  # noqa: S608
            [*values, now, node_uuid],
        )

    @staticmethod
    def _check_instance_free(db: Db, instance_uuid: object, node_uuid: str) -> None:
        if instance_uuid is None:
            return
        row = db.execute(
            "SELECT name FROM nodes WHERE instance_uuid = ? AND uuid <> ?",
            (instance_uuid, node_uuid),
        ).fetchone()
        if row is not None:
            raise instance_taken(instance_uuid, row[0])

    @staticmethod
    def _name_taken(db: Db, name: object) -> bool:
        return db.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone() is not None

    def _require_lease(self, db: Db, fence: Lease | None, at: float) -> bool:
        if fence is None:
            return True
        return lease_current(check_lease(fence), lease_rows(db, [fence.name]).get(fence.name), at)

    # --- inventory ------------------------------------------------------------------------

    def _insert_nodes(self, nodes: Sequence[Node], now: float | None) -> list[Node]:
        def body(db: Db, at: float) -> list[Node]:
            stamped = stamp_new_nodes(nodes, at)
            for node in stamped:
                if self._name_taken(db, node.name):
                    raise DuplicateNode(f"a node named {node.name!r} already exists")
                self._check_uuid_free(db, node.uuid)
                self._check_instance_free(db, node.instance_uuid, node.uuid)
            self._insert(db, stamped)
            return stamped

        return self._write(body, now)

    def _upsert(self, fields: Mapping[str, object], now: float | None, uuid: str | None) -> Node:
        def body(db: Db, at: float) -> Node:
            try:
                existing = self._find(db, str(fields["name"]))
            except NodeNotFound:
                node = new_node(fields, now=at, uuid=uuid)
                self._check_uuid_free(db, node.uuid)
                self._check_instance_free(db, node.instance_uuid, node.uuid)
                self._insert(db, [node])
                return node
            changed = merge_fields(existing, fields)
            if "instance_uuid" in changed:
                self._check_instance_free(db, changed["instance_uuid"], existing.uuid)
            if changed:
                self._update(db, existing.uuid, changed, at)
            return self._find(db, existing.uuid)

        return self._write(body, now)

    def get_node(self, name_or_uuid: str) -> Node:
        return self._read(lambda db: self._find(db, name_or_uuid))

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
            parameters.append(self._column("maintenance", maintenance))
        if fault is not None:
            conditions.append("fault = ?")
            parameters.append(fault)
        if has_instance is not None:
            conditions.append(f"instance_uuid IS {'NOT ' if has_instance else ''}NULL")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        query = f"{_NODE_SELECT}{where} ORDER BY name"
        return self._read(lambda db: [node_from_row(row) for row in db.execute(query, parameters)])

    def update_node(self, name_or_uuid: str, *, now: float | None = None, **fields: object) -> Node:
        clean = validate_fields(fields, UPDATABLE_FIELDS)

        def body(db: Db, at: float) -> Node:
            node = self._find(db, name_or_uuid)
            changed = merge_fields(node, clean)
            if "name" in changed and self._name_taken(db, changed["name"]):
                raise DuplicateNode(f"a node named {changed['name']!r} already exists")
            if "instance_uuid" in changed:
                self._check_instance_free(db, changed["instance_uuid"], node.uuid)
            if changed:
                self._update(db, node.uuid, changed, at)
            return self._find(db, node.uuid)

        return self._write(body, check_now(now))

    def delete_node(self, name_or_uuid: str, *, now: float | None = None) -> None:
        def body(db: Db, at: float) -> None:
            node = self._find(db, name_or_uuid)
            if node.is_locked(at):
                raise NodeLocked(f"node {node.name} is locked by {node.reservation}; not deleted")
            db.execute("DELETE FROM nodes WHERE uuid = ?", (node.uuid,))  # cascades

        self._write(body, check_now(now))

    # --- locks ----------------------------------------------------------------------------

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
        lifetime = check_ttl(ttl)

        def body(db: Db, at: float) -> bool:
            node = self._find(db, node_uuid)
            if node.is_locked(at) or not self._require_lease(db, fence, at):
                return False
            if node.reservation is not None:
                log_takeover(node.name, node.reservation, node.reservation_expires_at, holder)
            db.execute(
                "UPDATE nodes SET reservation = ?, reservation_expires_at = ? WHERE uuid = ?",
                (holder, at + lifetime, node.uuid),
            )
            return True

        return self._write(body, check_now(now))

    def renew_lock(
        self, node_uuid: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        holder = check_holder(holder)
        lifetime = check_ttl(ttl)

        def body(db: Db, at: float) -> bool:
            uuid = self._uuid_or_none(db, node_uuid)
            cursor = db.execute(
                "UPDATE nodes SET reservation_expires_at = ? WHERE uuid = ? AND reservation = ?",
                (at + lifetime, uuid, holder),
            )
            return cursor.rowcount == 1

        return self._write(body, check_now(now))

    def release_lock(self, node_uuid: str, holder: str) -> bool:
        holder = check_holder(holder)

        def body(db: Db, at: float) -> bool:
            uuid = self._uuid_or_none(db, node_uuid)
            cursor = db.execute(
                "UPDATE nodes SET reservation = NULL, reservation_expires_at = NULL "
                "WHERE uuid = ? AND reservation = ?",
                (uuid, holder),
            )
            return cursor.rowcount == 1

        return self._write(body)

    def release_locks_held_by(self, holder: str) -> int:
        holder = check_holder(holder)

        def body(db: Db, at: float) -> int:
            cursor = db.execute(
                "UPDATE nodes SET reservation = NULL, reservation_expires_at = NULL "
                "WHERE reservation = ?",
                (holder,),
            )
            return cursor.rowcount

        return self._write(body)

    # --- state changes --------------------------------------------------------------------

    def _carry_out(self, checked: Sequence[CheckedChange], now: float | None) -> ApplyPlan:
        def body(db: Db, at: float) -> ApplyPlan:
            rows = self._guard_rows(db, {item.node_uuid for item in checked})
            plan = plan_apply(checked, rows, at, lease_rows(db, fence_names(checked)))
            self._write_plan(db, plan)
            return plan

        return self._write(body, now)

    def _write_plan(self, db: Db, plan: ApplyPlan) -> None:
        # Grouped by the set of fields changed, so each shape is one executemany.
        by_shape: dict[tuple[str, ...], list[list[object]]] = {}
        for node_uuid, fields in plan.updates.items():
            values = [self._column(f, v) for f, v in fields.items()]
            by_shape.setdefault(tuple(fields), []).append([*values, plan.at, node_uuid])
        for shape, parameters in by_shape.items():
            assignments = "".join(f"{field} = ?, " for field in shape)
            db.executemany(
                f"UPDATE nodes SET {assignments}updated_at = ? WHERE uuid = ?",  # noqa: S608
                parameters,
            )
        if plan.history:
            db.executemany(
                "INSERT INTO history (node_uuid, at, from_state, to_state, cause, message) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (h.node_uuid, h.at, r.from_state, r.to_state, r.cause, r.message)
                    for h in plan.history
                    for r in (h.record,)
                ],
            )
        if plan.supersede:
            db.executemany(
                "UPDATE notifications SET status = 'superseded' "
                "WHERE instance_uuid = ? AND status = 'pending'",
                [(instance,) for instance in plan.supersede],
            )
        if plan.outbox:
            db.executemany(
                "INSERT INTO notifications (node_uuid, instance_uuid, power_state, created_at, "
                "attempts, next_attempt_at, last_error, status) VALUES (?, ?, ?, ?, 0, ?, NULL, ?)",
                [
                    (o.node_uuid, o.instance_uuid, o.power_state, o.at, o.at, o.status)
                    for o in plan.outbox
                ],
            )

    @staticmethod
    def _guard_rows(db: Db, uuids: set[str]) -> dict[str, GuardRow]:
        """The GuardRow of each existing node among ``uuids``."""
        wanted = sorted(uuids)
        found: dict[str, GuardRow] = {}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            marks = ", ".join("?" for _ in chunk)
            for uuid, instance, expires, *guarded in db.execute(
                f"{GUARD_COLUMNS} WHERE uuid IN ({marks})", chunk
            ):
                values = dict(zip(GUARDS, guarded, strict=True))
                for field in _CODEDGUARDS:  # only maintenance needs decoding (0/1)
                    values[field] = from_column(field, values[field])
                found[uuid] = GuardRow(instance, expires, values)
        return found

    def history(self, node: str | None = None, *, limit: int = 100) -> list[HistoryEntry]:
        limit = check_limit(limit)
        query = (
            "SELECT h.id, h.node_uuid, n.name, h.at, h.from_state, h.to_state, h.cause, "
            "h.message FROM history AS h JOIN nodes AS n ON n.uuid = h.node_uuid"
        )

        def body(db: Db) -> list[HistoryEntry]:
            if node is None:
                rows = db.execute(f"{query} ORDER BY h.id DESC LIMIT ?", (limit,))
            else:
                found = self._find(db, node)
                rows = db.execute(
                    f"{query} WHERE h.node_uuid = ? ORDER BY h.id DESC LIMIT ?",
                    (found.uuid, limit),
                )
            return [HistoryEntry(*row) for row in rows]

        return self._read(body)

    # --- outbox ---------------------------------------------------------------------------

    def due_notifications(
        self, *, limit: int = 100, now: float | None = None, fence: Lease | None = None
    ) -> list[Notification]:
        limit = check_limit(limit)
        checked_now = check_now(now)

        def body(db: Db) -> list[Notification]:
            at = self._clock(db, checked_now)
            if not self._require_lease(db, fence, at):
                assert fence is not None
                raise LeaseLost(f"lease {fence.name} of {fence.holder} is no longer current")
            rows = db.execute(
                f"{_NOTIFICATION_SELECT} WHERE status = 'pending' AND next_attempt_at <= ? "
                "ORDER BY created_at, id LIMIT ?",
                (at, limit),
            )
            return [Notification(*row) for row in rows]

        return self._read(body)

    def next_notification_at(self) -> float | None:
        def body(db: Db) -> float | None:
            row = db.execute(
                "SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'pending'"
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return self._read(body)

    def get_notification(self, notification_id: int) -> Notification:
        def body(db: Db) -> Any:
            return db.execute(
                f"{_NOTIFICATION_SELECT} WHERE id = ?", (int(notification_id),)
            ).fetchone()

        row = self._read(body)
        if row is None:
            raise StoreError(f"no notification with id {notification_id}")
        return Notification(*row)

    def mark_delivered(self, ids: Sequence[int]) -> None:
        if not ids:
            return

        def body(db: Db, at: float) -> None:
            db.executemany(
                "UPDATE notifications SET status = 'delivered', attempts = attempts + 1, "
                "last_error = NULL WHERE id = ? AND status IN ('pending', 'superseded')",
                [(int(i),) for i in ids],
            )

        self._write(body)

    def _change_pending(
        self, notification_id: int, assignments: str, values: Sequence[object]
    ) -> None:
        def body(db: Db, at: float) -> None:
            row = db.execute(
                "SELECT 1 FROM notifications WHERE id = ?", (int(notification_id),)
            ).fetchone()
            if row is None:
                raise StoreError(f"no notification with id {notification_id}")
            db.execute(
                f"UPDATE notifications SET {assignments} WHERE id = ? AND status = 'pending'",  # noqa: S608
                [*values, int(notification_id)],
            )

        self._write(body)

    def mark_dropped(self, notification_id: int, reason: str) -> None:
        self._change_pending(notification_id, "status = 'dropped', last_error = ?", [str(reason)])

    def defer_notification(
        self,
        notification_id: int,
        *,
        next_attempt_at: float,
        error: str,
    ) -> None:
        self._change_pending(
            notification_id,
            "attempts = attempts + 1, next_attempt_at = ?, last_error = ?",
            [float(next_attempt_at), str(error)],
        )

    def notification_counts(self) -> dict[str, int]:
        def body(db: Db) -> dict[str, int]:
            counts = empty_counts()
            for status, count in db.execute(
                "SELECT status, count(*) FROM notifications GROUP BY status"
            ):
                counts[status] = int(count)
            return counts

        return self._read(body)

    def prune(self, *, before: float) -> dict[str, int]:
        def body(db: Db, at: float) -> dict[str, int]:
            history = db.execute("DELETE FROM history WHERE at < ?", (float(before),))
            notifications = db.execute(
                "DELETE FROM notifications WHERE status != 'pending' AND created_at < ?",
                (float(before),),
            )
            return {"history": history.rowcount, "notifications": notifications.rowcount}

        return self._write(body)

    # --- meta -----------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        check_meta(key, value)

        def body(db: Db, at: float) -> None:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

        self._write(body)

    def get_meta(self, key: str) -> str | None:
        row = self._read(
            lambda db: db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])
