"""Conductors and leases over SQL (several agents on one site; docs/scale-out.md).

A mixin of :class:`store.sql.SqlStore`, kept apart so each module stays readable. It needs
the backend's ``_write``, ``_read`` and ``_clock``, declared here.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from store.base import check_holder, check_lease, check_name, check_now, check_ttl
from store.errors import StoreError
from store.model import Conductor, Lease
from store.plan import LeaseRow, lease_after_acquire, lease_after_renew

T = TypeVar("T")

_CONDUCTOR_SELECT = "SELECT host, started_at, last_heartbeat, info FROM conductors"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """The two calls the shared code makes on a connection (``?`` placeholders)."""

    def execute(self, sql: str, parameters: Sequence[object] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[object]], /) -> object: ...


def lease_rows(db: Db, names: Sequence[str]) -> dict[str, LeaseRow]:
    """The stored rows of the named leases (missing ones left out)."""
    found: dict[str, LeaseRow] = {}
    for name in names:
        row = db.execute(
            "SELECT holder, token, expires_at FROM leases WHERE name = ?", (name,)
        ).fetchone()
        if row is not None:
            found[name] = LeaseRow(row[0], int(row[1]), row[2])
    return found


class SqlConductors(abc.ABC):
    @abc.abstractmethod
    def _write(self, body: Callable[[Db, float], T], now: float | None = None) -> T:
        """Run ``body(db, at)`` in one write transaction; ``at`` is ``now`` or the clock."""

    @abc.abstractmethod
    def _read(self, body: Callable[[Db], T]) -> T:
        """Run ``body(db)`` in one consistent read transaction."""

    # --- several agents on one site -------------------------------------------------------

    def server_time(self) -> float:
        return self._read(lambda db: self._clock(db, None))

    @abc.abstractmethod
    def _clock(self, db: Db, now: float | None) -> float:
        """``now``, or the backend's clock read inside the transaction ``db`` is in."""

    def register_conductor(
        self, host: str, *, now: float | None = None, info: str | None = None
    ) -> Conductor:
        return self._beat(host, check_now(now), info, restart=True)

    def heartbeat(
        self, host: str, *, now: float | None = None, info: str | None = None
    ) -> Conductor:
        return self._beat(host, check_now(now), info, restart=False)

    def _beat(self, host: str, now: float | None, info: str | None, *, restart: bool) -> Conductor:
        host = check_name("host", host)
        if info is not None and not isinstance(info, str):
            raise StoreError(f"info: must be a string or None, got {info!r}")

        def body(db: Db, at: float) -> Conductor:
            row = db.execute(f"{_CONDUCTOR_SELECT} WHERE host = ?", (host,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO conductors (host, started_at, last_heartbeat, info) "
                    "VALUES (?, ?, ?, ?)",
                    (host, at, at, info),
                )
                return Conductor(host, at, at, info)
            old = Conductor(*row)
            started = at if restart else old.started_at
            kept = info if info is not None or restart else old.info
            db.execute(
                "UPDATE conductors SET started_at = ?, last_heartbeat = ?, info = ? WHERE host = ?",
                (started, at, kept, host),
            )
            return Conductor(host, started, at, kept)

        return self._write(body, now)

    def list_conductors(self) -> list[Conductor]:
        return self._read(
            lambda db: [Conductor(*row) for row in db.execute(f"{_CONDUCTOR_SELECT} ORDER BY host")]
        )

    def unregister(self, host: str) -> bool:
        host = check_name("host", host)

        def body(db: Db, at: float) -> bool:
            return db.execute("DELETE FROM conductors WHERE host = ?", (host,)).rowcount == 1

        return self._write(body)

    def acquire_lease(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> Lease | None:
        name = check_name("lease", name)
        holder = check_holder(holder)
        lifetime = check_ttl(ttl)

        def body(db: Db, at: float) -> Lease | None:
            row = lease_rows(db, [name]).get(name)
            lease = lease_after_acquire(name, row, holder, at, lifetime)
            if lease is not None:
                self._store_lease(db, lease, new=row is None)
            return lease

        return self._write(body, check_now(now))

    def renew_lease(self, lease: Lease, *, ttl: float, now: float | None = None) -> Lease | None:
        lease = check_lease(lease)
        lifetime = check_ttl(ttl)

        def body(db: Db, at: float) -> Lease | None:
            row = lease_rows(db, [lease.name]).get(lease.name)
            renewed = lease_after_renew(lease, row, at, lifetime)
            if renewed is not None:
                self._store_lease(db, renewed, new=False)
            return renewed

        return self._write(body, check_now(now))

    def release_lease(self, lease: Lease) -> bool:
        lease = check_lease(lease)

        def body(db: Db, at: float) -> bool:
            cursor = db.execute(
                "UPDATE leases SET holder = NULL, expires_at = NULL "
                "WHERE name = ? AND holder = ? AND token = ?",
                (lease.name, lease.holder, lease.token),
            )
            return cursor.rowcount == 1

        return self._write(body)

    @staticmethod
    def _store_lease(db: Db, lease: Lease, *, new: bool) -> None:
        if new:
            db.execute(
                "INSERT INTO leases (name, holder, token, expires_at) VALUES (?, ?, ?, ?)",
                (lease.name, lease.holder, lease.token, lease.expires_at),
            )
        else:
            db.execute(
                "UPDATE leases SET holder = ?, token = ?, expires_at = ? WHERE name = ?",
                (lease.holder, lease.token, lease.expires_at, lease.name),
            )

    def list_leases(self) -> list[Lease]:
        return self._read(
            lambda db: [
                Lease(name, holder, int(token), float(expires))
                for name, holder, token, expires in db.execute(
                    "SELECT name, holder, token, expires_at FROM leases "
                    "WHERE holder IS NOT NULL ORDER BY name"
                )
            ]
        )
