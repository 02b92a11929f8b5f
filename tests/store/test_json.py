"""JSON-specific behaviour: the file format, atomic replacement, damage, reload, permissions."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from store import NodeChange, SchemaTooNew, StoreCorrupt, StoreError, jsonstore, open_store
from tests.store.helpers import INSTANCE, PASSWORD, T0, add


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_file_is_readable_json(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        node = add(store, instance_uuid=INSTANCE)
        store.apply([NodeChange(node.uuid, {"power_state": "power on"}, None, "power on")], now=T0)
    document = json.loads(path.read_text())
    assert document["format"] == "powersync-store" and document["version"] == 3
    [stored] = document["nodes"]
    assert stored["name"] == "node-1" and stored["power_state"] == "power on"
    assert stored["cipher_suites"] == [17, 3]
    assert (stored["driver"], stored["driver_info"], stored["health"]) == ("ipmi", {}, None)
    assert document["notifications"][0]["instance_uuid"] == INSTANCE


def test_new_files_are_private_and_no_temporaries_left(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    old_umask = os.umask(0o022)
    try:
        with open_store(str(path), "json") as store:
            for i in range(5):
                add(store, f"n{i}")
    finally:
        os.umask(old_umask)
    assert mode_of(path) == 0o600
    assert mode_of(f"{path}.lock") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.lock"]


def test_stale_temporary_from_a_crash_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    open_store(str(path), "json").close()
    stale = tmp_path / ".s.json.abc123.tmp"
    stale.write_text('{"half": ')
    other = tmp_path / ".other.json.abc123.tmp"  # not ours: left alone
    other.write_text("x")
    with open_store(str(path), "json") as store:
        assert store.list_nodes() == []
    assert not stale.exists()
    assert other.exists()


def test_exposed_file_logs_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.json"
    open_store(str(path), "json").close()
    os.chmod(path, 0o640)
    with caplog.at_level(logging.WARNING, logger="store"), open_store(str(path), "json"):
        pass
    [record] = [r for r in caplog.records if "accessible" in r.getMessage()]
    assert str(path) in record.getMessage() and "640" in record.getMessage()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"   \n",
        b"{not json",
        b'{"format": "powersync-store", "version": 1, "nodes": [',  # truncated
        b"\xff\xfe\x00garbage",
        b'{"format": "powersync-store", "version": 1, "nodes": [{"name": "x"}], '
        b'"history": [], "notifications": [], "meta": {}, '
        b'"next_ids": {"history": 1, "notification": 1}}',
        b'{"format": "powersync-store", "version": 1}',
        b'{"format": "powersync-store", "version": "one"}',
    ],
)
def test_damaged_file_reported_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt) as error:
        open_store(str(path), "json")
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert path.read_bytes() == content  # never replaced


def test_other_json_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"nodes": []}')
    with pytest.raises(StoreCorrupt, match="not a powersync store"):
        open_store(str(path), "json")


def test_newer_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        add(store)
    document = json.loads(path.read_text())
    document["version"] = 4
    path.write_text(json.dumps(document))
    with pytest.raises(SchemaTooNew, match=f"{path}.*version 4"):
        open_store(str(path), "json")
    assert json.loads(path.read_text())["version"] == 4


def test_reload_after_another_process_changed_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        node = add(store)
        assert store.get_node(node.uuid).maintenance is False
        # Another writer (here: by hand, as an operator might) replaces the file.
        document = json.loads(path.read_text())
        document["nodes"][0]["maintenance"] = True
        replacement = tmp_path / "edited.json"
        replacement.write_text(json.dumps(document))
        os.replace(replacement, path)
        assert store.get_node(node.uuid).maintenance is True
        # And a damaged replacement is reported, not papered over with the cached copy.
        path.write_text("{oops")
        with pytest.raises(StoreCorrupt, match=str(path)):
            store.get_node(node.uuid)


def test_store_file_removed_under_us(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        add(store)
        path.unlink()
        with pytest.raises(StoreError, match="disappeared"):
            store.list_nodes()


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        add(store)
        before = path.read_bytes()

        def disk_full(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        # Fault injection: the disk fills up while the new version is being flushed.
        monkeypatch.setattr(os, "fsync", disk_full)
        with pytest.raises(StoreError, match=str(path)):
            add(store, "node-2")
        monkeypatch.undo()
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.json.lock"]
        assert [n.name for n in store.list_nodes()] == ["node-1"]
        assert store.get_node("node-1").bmc_password == PASSWORD
        add(store, "node-2")
        assert len(store.list_nodes()) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bmc_port", "623"),
        ("power_state", "on"),
        ("cipher_suites", [256]),
        ("name", ""),
        ("driver", "Bad Driver"),
        ("driver_info", ["not", "an", "object"]),
    ],
)
def test_hand_edited_invalid_value_reported(tmp_path: Path, field: str, value: object) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        add(store)
    document = json.loads(path.read_text())
    document["nodes"][0][field] = value
    path.write_text(json.dumps(document))
    with pytest.raises(StoreCorrupt, match=f"{path}.*{field}:"):
        open_store(str(path), "json")


def test_duplicate_names_in_file_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        add(store, "a")
        add(store, "b")
    document = json.loads(path.read_text())
    document["nodes"][1]["name"] = "a"
    path.write_text(json.dumps(document))
    with pytest.raises(StoreCorrupt, match=r"'a'.*twice"):
        open_store(str(path), "json")


def test_busy_lock_file_gives_up_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.json"
    monkeypatch.setattr(jsonstore, "BUSY_TIMEOUT", 0.2)
    with open_store(str(path), "json") as store:
        add(store)
        # Another process (here: another open file description) holds the lock.
        with open(f"{path}.lock", "rb") as other:
            fcntl.flock(other.fileno(), fcntl.LOCK_EX)
            with pytest.raises(StoreError, match=f"{path} is busy"):
                store.list_nodes()
            fcntl.flock(other.fileno(), fcntl.LOCK_UN)
        assert [n.name for n in store.list_nodes()] == ["node-1"]


def test_same_size_same_mtime_replacement_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        add(store, "node-1")
        before = os.stat(path)
        text = path.read_text()
        replacement = tmp_path / "edit.json"
        replacement.write_text(text.replace('"node-1"', '"node-2"'))
        os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert os.stat(replacement).st_size == before.st_size
        os.replace(replacement, path)
        assert [n.name for n in store.list_nodes()] == ["node-2"]


def test_no_file_descriptor_leak(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with open_store(str(path), "json") as store:
        node = add(store)
        before = len(os.listdir("/proc/self/fd"))
        for i in range(50):
            store.acquire_lock(node.uuid, f"h{i}", ttl=1, now=T0 + 2 * i)
            store.list_nodes()
        assert len(os.listdir("/proc/self/fd")) == before
    with open_store(str(path), "json") as other:
        assert other.get_node(node.uuid).reservation == "h49"
