"""Stores written by the previous release (SQLite schema 2, JSON format 1) open and migrate.

The fixtures in tests/store/fixtures were written by that release's own code (commit e8a4053;
the SQLite one kept as its text dump): two nodes, a history row, a pending notification, a
lock and a meta value.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from store import NodeChange, ddl, open_store, schema
from tests.store.helpers import INSTANCE, PASSWORD, T0

FIXTURES = Path(__file__).parent / "fixtures"
OLD_FILES = {
    "sqlite": ("schema-v2.sql", "schema version 2 to 4"),
    "json": ("format-v1.json", "format version 1 to 3"),
}


def copy_fixture(tmp_path: Path, backend: str) -> Path:
    """The previous release's store as a file in tmp_path (never the fixture itself)."""
    name = OLD_FILES[backend][0]
    if backend == "json":
        path = tmp_path / name
        shutil.copyfile(FIXTURES / name, path)
    else:
        # Kept as a text dump (reviewable, and *.sqlite is git-ignored); a dump does not
        # carry the two header pragmas, so they are set as schema 2 had them.
        path = tmp_path / "schema-v2.sqlite"
        conn = sqlite3.connect(path)
        conn.executescript((FIXTURES / name).read_text())
        conn.execute("PRAGMA user_version = 2")
        conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
        conn.close()
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize("backend", ["sqlite", "json"])
def test_previous_release_store_is_migrated_with_nothing_lost(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = copy_fixture(tmp_path, backend)
    with caplog.at_level(logging.WARNING, logger="store"), open_store(str(path), backend) as store:
        assert any(OLD_FILES[backend][1] in r.getMessage() for r in caplog.records)
        old_1, old_2 = store.list_nodes()
        assert (old_1.name, old_1.bmc_address, old_1.bmc_port) == ("old-1", "10.0.0.1", 623)
        assert (old_1.bmc_username, old_1.bmc_password) == ("admin", PASSWORD)
        assert (old_1.cipher_suites, old_1.privilege, old_1.session_mode) == (
            (3,),
            "operator",
            "per-cycle",
        )
        assert (old_1.instance_uuid, old_1.power_state, old_1.sync_failures) == (
            INSTANCE,
            "power on",
            2,
        )
        assert (old_1.last_seen_at, old_1.last_error, old_1.updated_at) == (
            T0 + 1,
            "timeout",
            T0 + 1,
        )
        assert (old_2.name, old_2.bmc_address, old_2.bmc_port) == (
            "old-2",
            "bmc2.example.org",
            6230,
        )
        assert (old_2.bmc_password, old_2.maintenance, old_2.fault) == ("", True, "power failure")
        assert old_2.maintenance_reason == "disk swap"
        assert (old_2.reservation, old_2.reservation_expires_at) == ("daemon@h:1", T0 + 62)
        for node in (old_1, old_2):
            assert node.driver == "ipmi" and dict(node.driver_info) == {}
            assert node.provision_state is None and node.health is None
            assert node.created_at == T0
        [entry] = store.history()
        assert (entry.node_name, entry.to_state, entry.message) == ("old-1", "power on", "first")
        [note] = store.due_notifications(now=T0 + 10)
        assert (note.instance_uuid, note.power_state, note.status) == (
            INSTANCE,
            "power on",
            "pending",
        )
        assert store.get_meta("last_cycle") == '{"nodes": 2}'
        # The migrated store takes the new fields.
        store.update_node("old-2", driver="redfish", driver_info={"redfish_system_id": "/s/1"})
        store.apply([NodeChange(old_1.uuid, {"health": "ok"}, None, "power off")], now=T0 + 20)
        assert store.get_node("old-2").driver_info == {"redfish_system_id": "/s/1"}
        assert store.get_node("old-1").health == "ok"
        assert store.notification_counts()["superseded"] == 1
        expected = store.list_nodes()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="store"), open_store(str(path), backend) as store:
        assert store.list_nodes() == expected
    assert not any("migrating" in r.getMessage() for r in caplog.records)
    if backend == "json":
        assert json.loads(path.read_text())["version"] == 3


def _columns(conn: sqlite3.Connection) -> dict[str, set[tuple[object, ...]]]:
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {
        table: {(row[1], row[2], row[3]) for row in conn.execute(f"PRAGMA table_info({table})")}
        for table in tables
        if table != "sqlite_sequence"
    }


def _indexes(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    return {row[0] for row in rows}


def test_migrated_schema_matches_a_new_one(tmp_path: Path) -> None:
    migrated = copy_fixture(tmp_path, "sqlite")
    open_store(str(migrated)).close()
    fresh = tmp_path / "fresh.sqlite"
    open_store(str(fresh)).close()
    old, new = sqlite3.connect(migrated), sqlite3.connect(fresh)
    try:
        # Column names, types and NOT NULL agree (a migration may add columns in another order).
        assert _columns(old) == _columns(new)
        assert _indexes(old) == _indexes(new)
        assert old.execute("PRAGMA user_version").fetchone()[0] == ddl.CURRENT_VERSION
        assert old.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
    finally:
        old.close()
        new.close()
