"""SQLite-specific behaviour: pragmas, schema versions and migration, damage, permissions."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from store import NodeChange, SchemaTooNew, StoreCorrupt, StoreError, open_store
from store import sqlite as sqlite_backend
from store.schema import APPLICATION_ID, CURRENT_VERSION, create_v1
from tests.store.helpers import INSTANCE, INSTANCE_2, PASSWORD, T0, add

NODE_1 = "11111111-1111-4111-8111-111111111111"
NODE_2 = "22222222-2222-4222-8222-222222222222"


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with open_store(str(path)):
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        conn.close()


def test_foreign_keys_enforced(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with open_store(str(path)) as store:
        conn = store._conn  # type: ignore[attr-defined]
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO history (node_uuid, at, cause) VALUES ('missing', 1.0, 'sync')"
            )


def test_new_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    old_umask = os.umask(0o022)  # the common default: would give 0644 without care
    try:
        with open_store(str(path)) as store:
            add(store)  # forces the WAL and shared-memory files into existence
            for suffix in ("", "-wal", "-shm"):
                assert mode_of(f"{path}{suffix}") == 0o600, suffix
    finally:
        os.umask(old_umask)


def test_exposed_file_logs_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite"
    open_store(str(path)).close()
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="store"), open_store(str(path)):
        pass
    [record] = [r for r in caplog.records if "accessible" in r.getMessage()]
    assert str(path) in record.getMessage() and "644" in record.getMessage()
    caplog.clear()
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING, logger="store"), open_store(str(path)):
        pass
    assert not [r for r in caplog.records if "accessible" in r.getMessage()]


def build_v1(path: Path) -> None:
    """A version-1 store as the first release would have left it, written by hand."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    create_v1(conn)
    for uuid, name, instance in ((NODE_1, "old-1", INSTANCE), (NODE_2, "old-2", INSTANCE_2)):
        conn.execute(
            "INSERT INTO nodes (uuid, name, bmc_address, bmc_port, bmc_username, bmc_password, "
            "cipher_suites, privilege, instance_uuid, power_state, maintenance, sync_failures, "
            "created_at, updated_at) VALUES (?, ?, '127.0.0.1', 623, 'admin', ?, '17,3', "
            "'administrator', ?, 'power on', 0, 1, ?, ?)",
            (uuid, name, PASSWORD, instance, T0, T0),
        )
    conn.execute(
        "INSERT INTO history (node_uuid, at, from_state, to_state, cause, message) "
        "VALUES (?, ?, NULL, 'power on', 'sync', 'v1 row')",
        (NODE_1, T0),
    )
    outbox = [
        # (node, instance, state, delivered, dropped)
        (NODE_1, INSTANCE, "power off", 1, 0),
        (NODE_1, INSTANCE, "power on", 0, 0),  # older pending: must become superseded
        (NODE_1, INSTANCE, "power off", 0, 0),  # newest pending: stays pending
        (NODE_2, INSTANCE_2, "power on", 0, 1),
        (NODE_2, INSTANCE_2, "power off", 0, 0),
    ]
    for index, (node, instance, state, delivered, dropped) in enumerate(outbox):
        conn.execute(
            "INSERT INTO notifications (node_uuid, instance_uuid, power_state, created_at, "
            "next_attempt_at, delivered, dropped) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (node, instance, state, T0 + index, T0 + index, delivered, dropped),
        )
    conn.execute("COMMIT")
    conn.close()


def test_migration_from_version_1(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "old.sqlite"
    build_v1(path)
    with caplog.at_level(logging.WARNING, logger="store"), open_store(str(path)) as store:
        assert any("migrating schema version 1 to 4" in r.getMessage() for r in caplog.records)
        node = store.get_node("old-1")
        assert node.uuid == NODE_1
        assert node.bmc_password == PASSWORD and node.cipher_suites == (17, 3)
        assert node.power_state == "power on" and node.sync_failures == 1
        assert node.session_mode is None and node.last_seen_at is None
        assert (node.driver, dict(node.driver_info), node.health) == ("ipmi", {}, None)
        assert [h.message for h in store.history("old-1")] == ["v1 row"]
        assert store.notification_counts() == {
            "pending": 2,
            "delivered": 1,
            "dropped": 1,
            "superseded": 1,
        }
        due = store.due_notifications(now=T0 + 100)
        assert [(n.instance_uuid, n.power_state) for n in due] == [
            (INSTANCE, "power off"),
            (INSTANCE_2, "power off"),
        ]
        # The migrated store is fully usable: new columns, meta, superseding.
        store.apply([NodeChange(NODE_1, {"last_seen_at": T0 + 5}, None, "power on")], now=T0 + 5)
        store.set_meta("k", "v")
        assert store.get_node(NODE_1).last_seen_at == T0 + 5
        assert store.notification_counts()["superseded"] == 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT_VERSION
    columns = {row[1] for row in conn.execute("PRAGMA table_info(notifications)")}
    assert "status" in columns and "delivered" not in columns
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    # Opening again does not migrate again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="store"), open_store(str(path)) as store:
        assert store.get_meta("k") == "v"
    assert not any("migrating" in r.getMessage() for r in caplog.records)


def test_newer_schema_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    with open_store(str(path)) as store:
        add(store)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"{path}.*version {CURRENT_VERSION + 1}"):
        open_store(str(path))
    # Untouched: still the newer version, data still there.
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT_VERSION + 1
    assert conn.execute("SELECT name FROM nodes").fetchall() == [("node-1",)]
    conn.close()


def test_foreign_sqlite_database_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt, match=f"{path}.*not a powersync store"):
        open_store(str(path))
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("things",)]
    conn.close()


def filled_store(path: Path, count: int = 200) -> None:
    with open_store(str(path)) as store:
        for i in range(count):
            add(store, f"n{i:04d}")


@pytest.mark.parametrize(
    ("offset", "garbage"),
    [
        (0, b"this is not sqlite" * 4),  # header
        (100, b"\xff" * 3996),  # the schema page
        (2 * 4096, b"\xa5" * 4096),  # a whole b-tree page
        (3 * 4096 + 50, b"\x00" * 2000),  # half a page of cell pointers and data
    ],
)
def test_damaged_database_reported_naming_the_file(
    tmp_path: Path, offset: int, garbage: bytes
) -> None:
    path = tmp_path / "damaged.sqlite"
    filled_store(path)
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(garbage)
    size = os.path.getsize(path)
    with pytest.raises(StoreCorrupt) as error:
        open_store(str(path))
    message = str(error.value)
    assert str(path) in message and "\n" not in message and len(message) < 400
    # Never replaced or repaired behind the operator's back.
    assert os.path.getsize(path) == size
    with open(path, "rb") as file:
        file.seek(offset)
        assert file.read(len(garbage)) == garbage


def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    # A zero-length file is a valid empty SQLite database (e.g. `touch store.sqlite`).
    path = tmp_path / "empty.sqlite"
    path.touch(mode=0o600)
    with open_store(str(path)) as store:
        assert store.list_nodes() == []
        add(store)
    with open_store(str(path)) as store:
        assert store.get_node("node-1").bmc_password == PASSWORD


def test_busy_database_gives_up_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.sqlite"
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT", 0.2)
    with open_store(str(path)) as store:
        node = add(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
        try:
            with pytest.raises(StoreError, match=f"{path} is busy"):
                store.acquire_lock(node.uuid, "me", ttl=5)
            assert store.get_node(node.uuid).reservation is None  # readers are not blocked
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store.acquire_lock(node.uuid, "me", ttl=5)
