"""powersync store: node inventory, power state, locks, history and the notification outbox.

Synchronous, standard library and attrs only. Two backends behind one interface
(:class:`Store`): SQLite (default) and JSON (tiny sites). See docs/store.md.

Exceptions (one root)::

    StoreError
    ├── NodeNotFound
    ├── DuplicateNode
    │   └── InstanceInUse
    ├── NodeLocked
    ├── InvalidNode
    ├── StoreCorrupt
    ├── SchemaTooNew
    └── LeaseLost
"""

from __future__ import annotations

from store.base import Store
from store.errors import (
    DuplicateNode,
    InstanceInUse,
    InvalidNode,
    LeaseLost,
    NodeLocked,
    NodeNotFound,
    SchemaTooNew,
    StoreCorrupt,
    StoreError,
)
from store.model import (
    OUTBOX_LEASE,
    SETTABLE_FIELDS,
    Conductor,
    HistoryEntry,
    HistoryRecord,
    Lease,
    Node,
    NodeChange,
    Notification,
    bucket_lease,
    bucket_of,
)
from store.validate import (
    NOTIFIABLE_STATES,
    POWER_ERROR,
    POWER_OFF,
    POWER_ON,
    POWER_STATES,
    REBOOTING,
    SOFT_POWER_OFF,
    DriverInfo,
)

BACKENDS = ("sqlite", "json", "postgresql")


def open_store(
    path: str = "",
    backend: str = "sqlite",
    *,
    dsn: str | None = None,
    password: str | None = None,
) -> Store:
    """Open the store with the given backend.

    ``sqlite`` / ``json``: the file at ``path`` (created 0600 if missing). ``postgresql``: the
    database at ``dsn`` (or ``path`` when no dsn is given), e.g.
    ``postgresql://powersync@db.example.org/powersync``; ``password`` is passed separately so
    it never has to be in the DSN, and it never appears in messages or ``repr``.
    """
    if backend == "postgresql":
        from store.postgres import PostgresStore

        return PostgresStore(dsn if dsn is not None else str(path), password)
    path = str(path)
    if backend == "sqlite":
        from store.sqlite import SqliteStore

        return SqliteStore(path)
    if backend == "json":
        from store.jsonstore import JsonStore

        return JsonStore(path)
    raise StoreError(f"unknown store backend {backend!r} (expected one of: {', '.join(BACKENDS)})")


__all__ = [
    "BACKENDS",
    "NOTIFIABLE_STATES",
    "OUTBOX_LEASE",
    "POWER_ERROR",
    "POWER_OFF",
    "POWER_ON",
    "POWER_STATES",
    "REBOOTING",
    "SETTABLE_FIELDS",
    "SOFT_POWER_OFF",
    "Conductor",
    "DriverInfo",
    "DuplicateNode",
    "HistoryEntry",
    "HistoryRecord",
    "InstanceInUse",
    "InvalidNode",
    "Lease",
    "LeaseLost",
    "Node",
    "NodeChange",
    "NodeLocked",
    "NodeNotFound",
    "Notification",
    "SchemaTooNew",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "bucket_lease",
    "bucket_of",
    "open_store",
]
