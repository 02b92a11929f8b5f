"""powersync store: node inventory, power state, locks, history and the notification outbox.

Synchronous, standard library and attrs only. Two backends behind one interface
(:class:`Store`): SQLite (default) and JSON (tiny sites). See docs/store.md.

Exceptions (one root)::

    StoreError
    ├── NodeNotFound
    ├── DuplicateNode
    ├── NodeLocked
    ├── InvalidNode
    ├── StoreCorrupt
    └── SchemaTooNew
"""

from __future__ import annotations

from store.base import Store
from store.errors import (
    DuplicateNode,
    InvalidNode,
    NodeLocked,
    NodeNotFound,
    SchemaTooNew,
    StoreCorrupt,
    StoreError,
)
from store.model import (
    SETTABLE_FIELDS,
    HistoryEntry,
    HistoryRecord,
    Node,
    NodeChange,
    Notification,
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

BACKENDS = ("sqlite", "json")


def open_store(path: str, backend: str = "sqlite") -> Store:
    """Open (creating it 0600 if missing) the store at ``path`` with the given backend."""
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
    "POWER_ERROR",
    "POWER_OFF",
    "POWER_ON",
    "POWER_STATES",
    "REBOOTING",
    "SETTABLE_FIELDS",
    "SOFT_POWER_OFF",
    "DriverInfo",
    "DuplicateNode",
    "HistoryEntry",
    "HistoryRecord",
    "InvalidNode",
    "Node",
    "NodeChange",
    "NodeLocked",
    "NodeNotFound",
    "Notification",
    "SchemaTooNew",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "open_store",
]
