"""PostgreSQL-specific behaviour, on a real server: restarts, lost commits, secrets, schema."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from store import (
    HistoryRecord,
    NodeChange,
    SchemaTooNew,
    Store,
    StoreCorrupt,
    StoreError,
    open_store,
)
from tests.store.helpers import INSTANCE, add
from tests.store.pgserver import USER, PgServer

SECRET = "hunter2-Very-Secret"


@pytest.fixture
def dsn(pg_server: PgServer) -> Iterator[str]:
    with pg_server.database() as fresh:
        yield fresh


def open_pg(dsn: str, **extra: Any) -> Store:
    return open_store(backend="postgresql", dsn=dsn, password=SECRET, **extra)


def test_server_restart_under_an_open_store_loses_nothing_and_repeats_nothing(
    pg_server: PgServer, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with open_pg(dsn) as store:
        node = add(store, instance_uuid=INSTANCE)
        returned: list[int] = []
        failed: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def writer() -> None:
            # One change per transaction, each with a history row naming it.
            for index in range(100_000):
                if stop.is_set():
                    return
                change = NodeChange(
                    node.uuid,
                    {"sync_failures": index},
                    HistoryRecord(None, "power on", "sync", f"write {index}"),
                    "power on",
                )
                try:
                    store.apply([change])
                except StoreError as exc:
                    failed.append(index)  # allowed only as "outcome unknown": checked below
                    failures.append(str(exc))
                else:
                    returned.append(index)

        with caplog.at_level(logging.WARNING, logger="store"):
            thread = threading.Thread(target=writer)
            thread.start()
            deadline = time.monotonic() + 60  # generous: the machine is shared
            while len(returned) < 50 and time.monotonic() < deadline:
                time.sleep(0.01)
            pg_server.restart()
            before_restart = len(returned)
            while len(returned) < before_restart + 50 and time.monotonic() < deadline + 60:
                time.sleep(0.01)
            stop.set()
            thread.join(60)
        # What a failure needs explained: the counts and the store's warnings.
        context = (before_restart, len(returned), failures, caplog.text[-2000:])
        assert not thread.is_alive(), context
        assert len(returned) >= before_restart + 50, context
        assert any("connection lost" in r.getMessage() for r in caplog.records), context
        assert SECRET not in caplog.text
        messages = [entry.message for entry in store.history(limit=1_000_000)]
        written = [int(message.split()[1]) for message in messages]
        assert len(written) == len(set(written)), ("a write was applied twice", context)
        assert set(returned) <= set(written), ("a write that returned was lost", context)
        assert set(written) <= set(returned) | set(failed), context
        assert all("outcome is unknown" in failure for failure in failures), context
        counts = store.notification_counts()
        assert counts["pending"] == 1 and counts["superseded"] == len(written) - 1, counts
        assert store.get_node(node.uuid).sync_failures == max(written)


@pytest.mark.parametrize("committed", [True, False], ids=["after-commit", "before-commit"])
def test_connection_lost_at_commit_is_resolved_without_applying_twice(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, committed: bool
) -> None:
    import psycopg

    with open_pg(dsn) as store:
        node = add(store)
        real_execute = psycopg.Connection.execute
        broken = []

        def execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kw: Any) -> Any:
            if query == "COMMIT" and not broken:
                broken.append(True)
                if committed:
                    real_execute(self, query, *args, **kw)
                # The connection dies with the COMMIT's answer (or before the COMMIT).
                self.close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return real_execute(self, query, *args, **kw)

        monkeypatch.setattr(psycopg.Connection, "execute", execute)
        with caplog.at_level(logging.WARNING, logger="store"):
            record = HistoryRecord(None, "power on", "sync", "once")
            assert store.apply([NodeChange(node.uuid, {"power_state": "power on"}, record)]) == []
        monkeypatch.undo()
        assert broken == [True]
        assert [entry.message for entry in store.history()] == ["once"]
        assert store.get_node(node.uuid).power_state == "power on"
        expected = "committed before the connection broke" if committed else "did not commit"
        assert any(expected in r.getMessage() for r in caplog.records)


def test_password_and_dsn_secrets_never_shown(
    pg_server: PgServer, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with_secret = dsn.replace(f"{USER}@", f"{USER}:{SECRET}@")
    with caplog.at_level(logging.DEBUG), open_pg(with_secret) as store:
        assert SECRET not in repr(store) and SECRET not in store.path
        assert (
            store.path == f"postgresql://{USER}@127.0.0.1:{pg_server.port}/{dsn.rsplit('/', 1)[1]}"
        )
        add(store)
    unreachable = f"postgresql://{USER}:{SECRET}@127.0.0.1:1/nowhere"
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        open_pg(unreachable)
    assert time.monotonic() - started < 15  # the first connection is not retried
    assert "127.0.0.1:1" in str(error.value)
    assert SECRET not in str(error.value) and SECRET not in repr(error.value)
    assert SECRET not in caplog.text


def test_unparsable_dsn_is_refused_without_echoing_it() -> None:
    with pytest.raises(StoreError, match="cannot be parsed") as error:
        open_store(backend="postgresql", dsn=f"postgresql://u:{SECRET}@[broken", password=SECRET)
    assert SECRET not in str(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_newer_schema_and_foreign_database_refused(pg_server: PgServer, dsn: str) -> None:
    open_pg(dsn).close()
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE powersync_schema SET version = version + 1")
    with pytest.raises(SchemaTooNew, match="newer powersync"):
        open_pg(dsn)
    with pg_server.database() as other, psycopg.connect(other, autocommit=True) as conn:
        conn.execute("CREATE TABLE nodes (x int)")
        with pytest.raises(StoreCorrupt, match="not a powersync store"):
            open_pg(other)


def test_two_handles_racing_for_one_lock_have_one_winner(dsn: str) -> None:
    with open_pg(dsn) as first, open_pg(dsn) as second:
        node = add(first)
        wins: dict[str, int] = {"a": 0, "b": 0}

        def race(
            name: str, store: Store, barrier: threading.Barrier, results: dict[str, bool], n: int
        ) -> None:
            barrier.wait()
            results[name] = store.acquire_lock(node.uuid, f"{name}:{n}", ttl=60)

        for round_number in range(40):
            results: dict[str, bool] = {}
            barrier = threading.Barrier(2, timeout=10)
            threads = [
                threading.Thread(target=race, args=(name, s, barrier, results, round_number))
                for name, s in (("a", first), ("b", second))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(results.values()) == [False, True]
            winner = "a" if results["a"] else "b"
            wins[winner] += 1
            assert first.release_lock(node.uuid, f"{winner}:{round_number}")
        assert wins["a"] + wins["b"] == 40
