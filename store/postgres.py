"""PostgreSQL backend, for several agents on one site (docs/scale-out.md).

The queries are store/sql.py's, shared with SQLite; the schema is store/ddl.py's. What is
PostgreSQL's own:

- Every write is one SERIALIZABLE transaction (like SQLite's one writer at a time, but only
  transactions that really conflict are retried). Time inside it is the server's
  ``clock_timestamp()`` read at its start, unless the caller passes ``now``.
- A lost connection (server restart, failover, a killed backend) is retried with backoff for
  up to RECONNECT_WINDOW seconds, with a WARNING per attempt. A write is retried only if it
  certainly did not commit: before COMMIT was sent it cannot have; if the connection broke
  during COMMIT, the store reconnects and asks the server for the transaction's status
  (``pg_xact_status``) and retries only an aborted one. So a write is committed once, or
  raised as StoreError; never applied twice.
- The password is passed separately from the DSN; messages and ``repr`` show the DSN without
  any password.

psycopg (3, synchronous API) is imported only here, so the embedded backends need only the
standard library and attrs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from store import ddl
from store.base import check_now
from store.errors import DuplicateNode, SchemaTooNew, StoreCorrupt, StoreError
from store.plan import ApplyPlan, GuardRow
from store.sql import GUARD_COLUMNS, GUARDS, SqlStore
from store.sqlagents import Cursor, Db

log = logging.getLogger("store")

T = TypeVar("T")

RECONNECT_WINDOW = 30.0  # seconds of reconnecting before a call gives up
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0
CONFLICT_RETRIES = 20  # serialization failures / deadlocks retried per call
CONNECT_TIMEOUT = 10  # seconds, per connection attempt
OUTCOME_WAIT = 5.0  # seconds to wait for a transaction the server still reports in progress
_SCHEMA_LOCK = 0x50575359  # transaction-level advisory lock serialising schema creation

# PostgreSQL's versions of the schema: it starts at 4; MIGRATIONS[n] upgrades n to n + 1.
FIRST_VERSION = 4
MIGRATIONS: dict[int, Callable[[ddl.Dialect], list[str]]] = {}


def display_dsn(dsn: str) -> str:
    """``dsn`` for messages: postgresql://user@host:port/dbname, never the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable DSN)"
    user = str(parts.get("user") or "")
    host = parts.get("host") or "localhost"
    port = parts.get("port")
    where = f"{host}:{port}" if port else str(host)
    return f"postgresql://{user + '@' if user else ''}{where}/{parts.get('dbname') or ''}"


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    # The shared queries use "?" and never contain "%" or a literal "?".
    return sql.replace("?", "%s")


class _PgDb:
    """The shared code's view of a psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[object] = (), /) -> Cursor:
        return self._conn.execute(_placeholders(sql), list(parameters) or None)

    def executemany(self, sql: str, parameters: Iterable[Sequence[object]], /) -> object:
        with self._conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), [list(row) for row in parameters])
        return None


class _Lost(Exception):
    """The connection broke and the transaction certainly did not commit: retry it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class PostgresStore(SqlStore):
    backend = "postgresql"
    native_bool = True

    def __init__(self, dsn: str, password: str | None = None) -> None:
        if not isinstance(dsn, str) or not dsn:
            raise StoreError("postgresql: a DSN is required (e.g. postgresql://user@host/db)")
        try:
            in_dsn = conninfo_to_dict(dsn).get("password")
        except psycopg.ProgrammingError:
            # Never echo it: a DSN may hold a password.
            raise StoreError(
                "postgresql: the DSN cannot be parsed (expected a libpq URI or key=value string)"
            ) from None
        self.path = display_dsn(dsn)
        self._dsn = dsn
        self._password = password
        self._secrets = [str(s) for s in (password, in_dsn) if s]
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        try:
            # The first connection is not retried: a wrong DSN or password fails at once.
            self._conn = self._connect_once()
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open store {self.path}: {self._scrub(str(exc)).strip()}"
            ) from None
        self._prepare_schema()

    # --- connections --------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(str(secret), "******")
        return text

    def _connect_once(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
        if self._password is not None:
            extra["password"] = self._password
        return psycopg.connect(self._dsn, autocommit=True, **extra)

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, reconnecting with backoff if there is none."""
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        if self._conn is not None and self._conn.broken:
            log.warning("store %s: connection lost; reconnecting", self.path)
        self._drop_connection()
        deadline = time.monotonic() + RECONNECT_WINDOW
        delay = FIRST_BACKOFF
        attempt = 1
        while True:
            try:
                self._conn = self._connect_once()
            except psycopg.OperationalError as exc:
                reason = self._scrub(str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
                if time.monotonic() + delay > deadline:
                    raise StoreError(
                        f"store {self.path}: cannot connect for {RECONNECT_WINDOW:g} s: {reason}"
                    ) from None
                log.warning(
                    "store %s: cannot connect (%s); retrying in %.2f s (attempt %d)",
                    self.path,
                    reason,
                    delay,
                    attempt,
                )
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                attempt += 1
            else:
                if attempt > 1:
                    log.warning("store %s: connected again after %d attempts", self.path, attempt)
                return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # broken already: nothing to release
                self._conn.close()
            self._conn = None

    def _broken(self, exc: BaseException) -> bool:
        """True when ``exc`` means the connection is gone (it is then dropped)."""
        if not isinstance(exc, psycopg.OperationalError):
            return False
        conn = self._conn
        state = exc.sqlstate or ""
        # 08: connection exceptions; 57P01-03: the server is shutting down or starting up.
        lost = (
            conn is None
            or conn.closed
            or conn.broken
            or state.startswith("08")
            or state in ("57P01", "57P02", "57P03")
        )
        if lost:
            self._drop_connection()
        return lost

    def _translate(self, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, pg_errors.UniqueViolation):
            return DuplicateNode(f"store {self.path}: {self._scrub(str(exc)).splitlines()[0]}")
        return StoreError(f"store {self.path}: {self._scrub(str(exc)).strip().splitlines()[0]}")

    # --- transactions -------------------------------------------------------------------

    def _write(self, body: Callable[[Db, float], T], now: float | None = None) -> T:
        return self._transaction(
            "BEGIN ISOLATION LEVEL SERIALIZABLE", lambda db, at: body(db, at), now, write=True
        )

    def _read(self, body: Callable[[Db], T]) -> T:
        return self._transaction(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            lambda db, at: body(db),
            None,
            write=False,
        )

    def _transaction(
        self, begin: str, body: Callable[[Db, float], T], now: float | None, *, write: bool
    ) -> T:
        conflicts = 0
        with self._lock:
            deadline = time.monotonic() + RECONNECT_WINDOW
            while True:
                try:
                    return self._attempt(begin, body, now, write=write)
                except _Lost as lost:
                    reason = self._scrub(str(lost.cause).strip().splitlines()[0] or "closed")
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"store {self.path}: connection lost and not back within "
                            f"{RECONNECT_WINDOW:g} s: {reason}"
                        ) from None
                    log.warning(
                        "store %s: connection lost (%s); reconnecting and retrying the %s",
                        self.path,
                        reason,
                        "write (it did not commit)" if write else "read",
                    )
                except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as exc:
                    conflicts += 1
                    if conflicts > CONFLICT_RETRIES:
                        raise self._translate(exc) from exc
                    time.sleep(min(0.001 * 2**conflicts, 0.1))

    def _attempt(
        self, begin: str, body: Callable[[Db, float], T], now: float | None, *, write: bool
    ) -> T:
        xact: str | None = None
        committing = False
        result: T
        try:
            conn = self._connection()
            conn.execute(begin)
            db = _PgDb(conn)
            if write:
                xact, server_now = conn.execute(
                    "SELECT pg_current_xact_id()::text, "
                    "extract(epoch FROM clock_timestamp())::float8"
                ).fetchone()  # type: ignore[misc]
                at = float(server_now) if now is None else now
            else:
                at = 0.0 if now is None else now  # reads ask _clock() when they need time
            result = body(db, at)
            committing = True
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            if self._broken(exc):
                if committing and xact is not None and self._committed(xact):
                    return result
                raise _Lost(exc) from exc
            self._rollback()
            if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
                raise
            raise self._translate(exc) from exc
        except BaseException:
            self._rollback()
            raise
        return result

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                self._drop_connection()

    def _committed(self, xact: str) -> bool:
        """After the connection broke during COMMIT: did that transaction commit?"""
        deadline = time.monotonic() + OUTCOME_WAIT
        while True:
            conn = self._connection()
            try:
                row = conn.execute("SELECT pg_xact_status(%s::xid8)", [xact]).fetchone()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    break
                continue
            status = None if row is None else row[0]
            if status == "committed":
                log.warning("store %s: the write committed before the connection broke", self.path)
                return True
            if status == "aborted":
                return False
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # "in progress": the old backend is still finishing
        raise StoreError(
            f"store {self.path}: the connection broke while committing and the outcome is "
            f"unknown (transaction {xact}); check the store before repeating the change"
        )

    # --- apply, set-based: one statement per table instead of one per row -------------------

    @staticmethod
    def _guard_rows(db: Db, uuids: set[str]) -> dict[str, GuardRow]:
        found: dict[str, GuardRow] = {}
        rows = db.execute(f"{GUARD_COLUMNS} WHERE uuid = ANY(?::text[])", [sorted(uuids)])
        for uuid, instance, expires, *guarded in rows:
            found[uuid] = GuardRow(instance, expires, dict(zip(GUARDS, guarded, strict=True)))
        return found

    def _write_plan(self, db: Db, plan: ApplyPlan) -> None:
        by_shape: dict[tuple[str, ...], list[list[object]]] = {}
        for node_uuid, fields in plan.updates.items():
            by_shape.setdefault(tuple(fields), []).append(
                [node_uuid, *(self._column(f, v) for f, v in fields.items())]
            )
        for shape, rows in by_shape.items():
            if not shape:  # changes that only touch updated_at
                db.execute(
                    "UPDATE nodes SET updated_at = ? WHERE uuid = ANY(?::text[])",
                    [plan.at, [row[0] for row in rows]],
                )
                continue
            columns = list(zip(*rows, strict=True))
            arrays = ", ".join(
                "?::text[]"
                if index == 0
                else f"?::{ddl.column_type(shape[index - 1], ddl.POSTGRESQL)}[]"
                for index in range(len(shape) + 1)
            )
            assignments = "".join(f"{field} = v.{field}, " for field in shape)
            db.execute(
                f"UPDATE nodes AS n SET {assignments}updated_at = ? "  # noqa: S608
                f"FROM unnest({arrays}) AS v(uuid, {', '.join(shape)}) WHERE n.uuid = v.uuid",
                [plan.at, *(list(column) for column in columns)],
            )
        if plan.history:
            records = [h.record for h in plan.history]
            db.execute(
                "INSERT INTO history (node_uuid, at, from_state, to_state, cause, message) "
                "SELECT * FROM unnest(?::text[], ?::float8[], ?::text[], ?::text[], ?::text[], "
                "?::text[])",
                [
                    [h.node_uuid for h in plan.history],
                    [h.at for h in plan.history],
                    [r.from_state for r in records],
                    [r.to_state for r in records],
                    [r.cause for r in records],
                    [r.message for r in records],
                ],
            )
        if plan.supersede:
            db.execute(
                "UPDATE notifications SET status = 'superseded' "
                "WHERE status = 'pending' AND instance_uuid = ANY(?::text[])",
                [plan.supersede],
            )
        if plan.outbox:
            db.execute(
                "INSERT INTO notifications (node_uuid, instance_uuid, power_state, created_at, "
                "next_attempt_at, status) SELECT n, i, p, t, t, s "
                "FROM unnest(?::text[], ?::text[], ?::text[], ?::float8[], ?::text[]) "
                "AS v(n, i, p, t, s)",
                [
                    [o.node_uuid for o in plan.outbox],
                    [o.instance_uuid for o in plan.outbox],
                    [o.power_state for o in plan.outbox],
                    [o.at for o in plan.outbox],
                    [o.status for o in plan.outbox],
                ],
            )

    def _clock(self, db: Db, now: float | None) -> float:
        checked = check_now(now)
        if checked is not None:
            return checked
        row = db.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        return float(row[0])

    # --- schema -------------------------------------------------------------------------

    def _prepare_schema(self) -> None:
        def body(db: Db, at: float) -> None:
            db.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
            found = db.execute("SELECT to_regclass('powersync_schema')::text").fetchone()[0]
            if found is None:
                tables = db.execute(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_name IN "
                    "('nodes', 'history', 'notifications', 'meta')"
                ).fetchone()[0]
                if tables:
                    raise StoreCorrupt(
                        f"{self.path} has a nodes/history table but is not a powersync store"
                    )
                for statement in ddl.current_schema(ddl.POSTGRESQL):
                    db.execute(statement)
                db.execute("CREATE TABLE powersync_schema (version INTEGER NOT NULL)")
                db.execute(
                    "INSERT INTO powersync_schema (version) VALUES (?)", (ddl.CURRENT_VERSION,)
                )
                return
            version = int(db.execute("SELECT version FROM powersync_schema").fetchone()[0])
            if version > ddl.CURRENT_VERSION:
                raise SchemaTooNew(
                    f"store {self.path} has schema version {version}, written by a newer "
                    f"powersync; this version understands up to {ddl.CURRENT_VERSION}. "
                    "Upgrade powersync."
                )
            if version < FIRST_VERSION:
                raise StoreCorrupt(f"store {self.path} has an invalid schema version {version}")
            if version < ddl.CURRENT_VERSION:
                log.warning(
                    "store %s: migrating schema version %d to %d",
                    self.path,
                    version,
                    ddl.CURRENT_VERSION,
                )
                for step in range(version, ddl.CURRENT_VERSION):
                    for statement in MIGRATIONS[step](ddl.POSTGRESQL):
                        db.execute(statement)
                db.execute("UPDATE powersync_schema SET version = ?", (ddl.CURRENT_VERSION,))

        try:
            self._write(body)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __repr__(self) -> str:
        return f"<PostgresStore {self.path}>"
