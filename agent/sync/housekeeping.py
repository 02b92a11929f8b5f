"""Keeping the store from growing without bound.

History rows and finished (delivered, dropped, superseded) notifications older than
``[store] history_retention_days`` are deleted once an hour; pending notifications never are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import trio

from agent.storeio import AsyncStore
from store import StoreError

log = logging.getLogger("powersync.store")

PRUNE_EVERY = 3600.0  # seconds between prunes; retention is counted in days
DAY = 86400.0


async def prune_once(
    store: AsyncStore, *, retention_days: float, wall_clock: Callable[[], float] = time.time
) -> dict[str, int]:
    """Delete what is older than ``retention_days``; the counts removed (empty on error)."""
    before = wall_clock() - retention_days * DAY
    try:
        removed = await store.prune(before=before)
    except StoreError as exc:
        log.warning("pruning old history failed (will retry within the hour): %s", exc)
        return {}
    if any(removed.values()):
        log.info(
            "pruned %d history rows and %d finished notifications older than %g days",
            removed.get("history", 0),
            removed.get("notifications", 0),
            retention_days,
        )
    return removed


async def prune_loop(
    store: AsyncStore,
    *,
    retention_days: float | Callable[[], float],
    wall_clock: Callable[[], float] = time.time,
    every: float = PRUNE_EVERY,
) -> None:
    """Prune now, then every ``every`` seconds, until cancelled; 0 days keeps everything.

    ``retention_days`` may be a callable, read before each prune (a reload may change it)."""
    if not callable(retention_days):
        if retention_days <= 0:
            return
        days: Callable[[], float] = partial(float, retention_days)
    else:
        days = retention_days
    while True:
        if days() > 0:
            await prune_once(store, retention_days=days(), wall_clock=wall_clock)
        await trio.sleep(every)
