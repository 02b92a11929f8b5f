"""SQLite schema, its migrations, and the checks made when a file is opened.

The schema version lives in ``PRAGMA user_version``; ``PRAGMA application_id`` marks the file
as a powersync store so a foreign SQLite file is never mistaken for an empty store.

Versions:
  1  first schema: outbox rows carried ``delivered``/``dropped`` flags; nodes had no
     session_mode or last_seen_at; no meta table.
  2  outbox ``status`` (pending/delivered/dropped/superseded) replacing the flags, with older
     pending rows of an instance superseded by its newest; nodes.session_mode,
     nodes.last_seen_at; the meta table; indexes for the outbox and history.
  3  the protocol-neutral BMC seam: nodes.driver (existing nodes: "ipmi"), nodes.driver_info
     (a JSON object, existing nodes: {}), nodes.provision_state, nodes.health; an index on
     history time for prune().
  4  several agents on one site: the conductors and leases tables.

The current schema itself is written in store/ddl.py (shared with PostgreSQL).

A migration runs inside the caller's write transaction, so it is all-or-nothing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from store import ddl
from store.errors import SchemaTooNew, StoreCorrupt

log = logging.getLogger("store")

APPLICATION_ID = 0x50575359  # "PWSY"
CURRENT_VERSION = ddl.CURRENT_VERSION

# Kept verbatim: tests build a version-1 file from it to prove the migration path.
SCHEMA_V1 = """
CREATE TABLE nodes (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    bmc_address TEXT NOT NULL,
    bmc_port INTEGER NOT NULL,
    bmc_username TEXT NOT NULL,
    bmc_password TEXT NOT NULL,
    cipher_suites TEXT NOT NULL,
    privilege TEXT NOT NULL,
    instance_uuid TEXT,
    power_state TEXT,
    target_power_state TEXT,
    maintenance INTEGER NOT NULL DEFAULT 0,
    maintenance_reason TEXT,
    fault TEXT,
    reservation TEXT,
    reservation_expires_at REAL,
    last_error TEXT,
    sync_failures INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
    at REAL NOT NULL,
    from_state TEXT,
    to_state TEXT,
    cause TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
    instance_uuid TEXT NOT NULL,
    power_state TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    delivered INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0
);
"""


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the caller's transaction; run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def create_current(conn: sqlite3.Connection) -> None:
    """Create the current schema in an empty database (inside the caller's transaction)."""
    for statement in ddl.current_schema(ddl.SQLITE):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {CURRENT_VERSION}")


def create_v1(conn: sqlite3.Connection) -> None:
    """Create a version-1 database (for migration tests)."""
    _execute_script(conn, SCHEMA_V1)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE nodes ADD COLUMN session_mode TEXT")
    conn.execute("ALTER TABLE nodes ADD COLUMN last_seen_at REAL")
    # The outbox flags become one status column. The table is rebuilt rather than using
    # DROP COLUMN, which older SQLite libraries (before 3.35) do not have.
    conn.execute("ALTER TABLE notifications RENAME TO notifications_v1")
    conn.execute(
        "CREATE TABLE notifications ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " node_uuid TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,"
        " instance_uuid TEXT NOT NULL, power_state TEXT NOT NULL, created_at REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT,"
        " status TEXT NOT NULL DEFAULT 'pending')"
    )
    conn.execute(
        "INSERT INTO notifications (id, node_uuid, instance_uuid, power_state, created_at,"
        " attempts, next_attempt_at, last_error, status)"
        " SELECT id, node_uuid, instance_uuid, power_state, created_at, attempts,"
        " next_attempt_at, last_error,"
        " CASE WHEN delivered THEN 'delivered' WHEN dropped THEN 'dropped' ELSE 'pending' END"
        " FROM notifications_v1"
    )
    conn.execute("DROP TABLE notifications_v1")
    # Version 1 could queue several pending rows for one instance; only the newest may be sent.
    conn.execute(
        "UPDATE notifications SET status = 'superseded' WHERE status = 'pending' AND id < "
        "(SELECT MAX(n2.id) FROM notifications AS n2 "
        " WHERE n2.instance_uuid = notifications.instance_uuid AND n2.status = 'pending')"
    )
    conn.execute("CREATE INDEX history_by_node ON history(node_uuid, id)")
    conn.execute("CREATE INDEX notifications_due ON notifications(status, next_attempt_at)")
    conn.execute("CREATE INDEX notifications_by_instance ON notifications(instance_uuid, status)")
    conn.execute("CREATE INDEX notifications_by_node ON notifications(node_uuid)")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    for statement in ddl.migration_2_to_3(ddl.SQLITE):
        conn.execute(statement)


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    for statement in ddl.migration_3_to_4(ddl.SQLITE):
        conn.execute(statement)


# MIGRATIONS[n] upgrades version n to n + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
}


def migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Upgrade step by step to CURRENT_VERSION (inside the caller's transaction)."""
    for version in range(from_version, CURRENT_VERSION):
        MIGRATIONS[version](conn)
        conn.execute(f"PRAGMA user_version = {version + 1}")


def prepare(conn: sqlite3.Connection, path: str) -> None:
    """Set the pragmas, create, check or migrate the schema, and check the file's health."""
    conn.execute("PRAGMA foreign_keys = ON")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        log.warning("store %s: WAL journal not available (journal_mode=%s)", path, mode)
    conn.execute("PRAGMA synchronous = FULL")
    version, app_id = _versions(conn)
    if version != CURRENT_VERSION or app_id != APPLICATION_ID:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _create_or_migrate(conn, path)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    result = conn.execute("PRAGMA quick_check").fetchall()
    if result != [("ok",)]:
        lines = [line for row in result for line in str(row[0]).splitlines()]
        problems = "; ".join(line for line in lines if not line.startswith("***"))
        problems = problems[:200] + ("..." if len(problems) > 200 else "")
        raise StoreCorrupt(
            f"store {path} is damaged ({problems}); restore it from a backup or move it aside"
        )


def _versions(conn: sqlite3.Connection) -> tuple[int, int]:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    return int(version), int(app_id)


def _create_or_migrate(conn: sqlite3.Connection, path: str) -> None:
    # Re-read inside the write transaction: another process may have just done it.
    version, app_id = _versions(conn)
    if version == 0 and app_id == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise StoreCorrupt(f"{path} is an SQLite database but not a powersync store")
        create_current(conn)
        return
    if app_id != APPLICATION_ID:
        raise StoreCorrupt(f"{path} is an SQLite database but not a powersync store")
    if version > CURRENT_VERSION:
        raise SchemaTooNew(
            f"store {path} has schema version {version}, written by a newer powersync; "
            f"this version understands up to {CURRENT_VERSION}. Upgrade powersync."
        )
    if version < 1:
        raise StoreCorrupt(f"store {path} has an invalid schema version {version}")
    if version < CURRENT_VERSION:
        log.warning(
            "store %s: migrating schema version %d to %d",
            path,
            version,
            CURRENT_VERSION,
        )
        migrate(conn, version)
