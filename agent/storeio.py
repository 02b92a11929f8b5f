"""Calling the synchronous store from trio.

The store is plain blocking code (sqlite3, file I/O). Every call goes through one worker
thread at a time, so the store never sees concurrent use and the event loop never blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

from store import Store

P = ParamSpec("P")
R = TypeVar("R")


class AsyncStore:
    """Wraps a :class:`store.Store`; ``await run(method, *args)`` runs it in a worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        def call() -> R:
            return function(*args, **kwargs)

        return await trio.to_thread.run_sync(call, limiter=self._limiter)
