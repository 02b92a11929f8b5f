"""SQLite backend (the default).

WAL journal with ``synchronous = FULL`` (a committed transaction survives a crash of the process
and of the machine), a busy timeout so the daemon and a CLI command can share the file, foreign
keys on, the schema version in ``PRAGMA user_version``. Every write is one ``BEGIN IMMEDIATE``
transaction, which takes the database write lock up front: a read-check-write such as a lock
compare-and-set is atomic across processes. The queries themselves are store/sql.py's.

The connection is opened with ``check_same_thread=False`` because the agent calls the store from
trio worker threads; calls are serialised by the caller and, belt and braces, by a lock here.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from store import schema
from store.base import create_private_file, resolve_now, warn_if_exposed
from store.errors import StoreCorrupt, StoreError
from store.sql import SqlStore
from store.sqlagents import Db

BUSY_TIMEOUT = 10.0  # seconds a writer waits for another process's transaction

T = TypeVar("T")


class SqliteStore(SqlStore):
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

    def _write(self, body: Callable[[Db, float], T], now: float | None = None) -> T:
        """One write transaction holding the database write lock from the start."""
        with self._lock, self._translate():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn, resolve_now(now))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _read(self, body: Callable[[Db], T]) -> T:
        """A consistent snapshot for reads that take several statements."""
        with self._lock, self._translate():
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return body(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def _clock(self, db: Db, now: float | None) -> float:
        return resolve_now(now)

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
