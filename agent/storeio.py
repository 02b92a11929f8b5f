"""Calling the synchronous store from trio.

The store is plain blocking code (sqlite3, file I/O). Every call goes through one worker
thread at a time, so the store never sees concurrent use and the event loop never blocks.
:class:`AsyncStore` offers the store's methods as coroutines (``await store.get_node(x)``);
``run()`` runs any other callable the same way (several calls in one thread hop).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from store import Store

P = ParamSpec("P")
R = TypeVar("R")


def _in_thread(
    method: Callable[Concatenate[Store, P], R],
) -> Callable[Concatenate[AsyncStore, P], Coroutine[Any, Any, R]]:
    """``Store.method`` as a coroutine method of AsyncStore (the backend's own override)."""
    name = method.__name__

    async def call(self: AsyncStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.run(getattr(self.store, name), *args, **kwargs)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


class AsyncStore:
    """Wraps a :class:`store.Store`; each store method is a coroutine run in a worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        def call() -> R:
            return function(*args, **kwargs)

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    get_node = _in_thread(Store.get_node)
    list_nodes = _in_thread(Store.list_nodes)
    upsert_node = _in_thread(Store.upsert_node)
    acquire_lock = _in_thread(Store.acquire_lock)
    release_lock = _in_thread(Store.release_lock)
    apply = _in_thread(Store.apply)
    set_meta = _in_thread(Store.set_meta)
    get_meta = _in_thread(Store.get_meta)
    notification_counts = _in_thread(Store.notification_counts)
    due_notifications = _in_thread(Store.due_notifications)
    next_notification_at = _in_thread(Store.next_notification_at)
    mark_delivered = _in_thread(Store.mark_delivered)
    mark_dropped = _in_thread(Store.mark_dropped)
    defer_notification = _in_thread(Store.defer_notification)
    prune = _in_thread(Store.prune)
    # several agents on one site
    server_time = _in_thread(Store.server_time)
    register_conductor = _in_thread(Store.register_conductor)
    heartbeat = _in_thread(Store.heartbeat)
    list_conductors = _in_thread(Store.list_conductors)
    unregister = _in_thread(Store.unregister)
    acquire_lease = _in_thread(Store.acquire_lease)
    renew_lease = _in_thread(Store.renew_lease)
    release_lease = _in_thread(Store.release_lease)
    list_leases = _in_thread(Store.list_leases)
