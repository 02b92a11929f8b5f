"""Keeping the store from growing without bound.

History rows and finished (delivered, dropped, superseded) notifications older than
``[store] history_retention_days`` are deleted once an hour; pending notifications never are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from agent.storeio import AsyncStore
from store import StoreError

log = logging.getLogger("powersync.store")

PRUNE_EVERY = 3600.0  # seconds between prunes; retention is counted in days
DAY = 86400.0


async def prune_loop(
    store: AsyncStore,
    *,
    retention_days: float,
    wall_clock: Callable[[], float] = time.time,
    every: float = PRUNE_EVERY,
) -> None:
    """Prune now, then every ``every`` seconds, until cancelled; 0 days keeps everything."""
    if retention_days <= 0:
        return
    while True:
        before = wall_clock() - retention_days * DAY
        try:
            removed = await store.run(store.store.prune, before=before)
        except StoreError as exc:
            log.warning("pruning old history failed (will retry in %g s): %s", every, exc)
        else:
            if any(removed.values()):
                log.info(
                    "pruned %d history rows and %d finished notifications older than %g days",
                    removed.get("history", 0),
                    removed.get("notifications", 0),
                    retention_days,
                )
        await trio.sleep(every)
