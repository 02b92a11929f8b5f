"""Several agents on one site: heartbeats, each agent's share of the nodes, and takeover.

Nodes are spread over ``BUCKETS`` buckets (``store.bucket_of``: the same in every agent);
an agent syncs the nodes of the buckets whose lease it holds. Every ``heartbeat_interval``
each agent heartbeats (Ironic's conductor heartbeat), counts the live agents (heartbeat
within ``heartbeat_timeout``, by the database's clock), renews its leases, takes free or
expired buckets up to its fair share and hands back what is above it. A dead agent's leases
expire after ``heartbeat_timeout``; the others take them at their next heartbeat, so its
nodes go unsynced for at most ``heartbeat_timeout`` plus one heartbeat and one sync
interval. A stopping agent releases everything at once.

Safety does not rest on timing: every write and every node lock is fenced by the bucket's
lease (``NodeChange.fence``, ``acquire_lock(fence=...)``), checked in the store's own
transaction, so an agent paused past its leases (SIGSTOP, a partition) writes and powers
nothing when it wakes. Locally, a lease counts as held only until its renewal time plus the
TTL minus a margin on the monotonic clock, so a woken agent also stops *reading* the nodes
it lost before the store tells it so. One agent at a time holds the outbox lease and drains
the Nova outbox.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from collections.abc import Callable, Mapping

import attrs
import trio

from agent.storeio import AsyncStore
from store import OUTBOX_LEASE, Lease, StoreError, bucket_lease, bucket_of

log = logging.getLogger("powersync.site")

BUCKETS = 64  # enough to spread 10,000 nodes evenly over a handful of agents
SAFETY_MARGIN = 0.25  # of the TTL: a lease older than TTL x (1 - margin) is not trusted


def default_host() -> str:
    """Ironic's conductor ``host`` default: the machine's host name."""
    return socket.gethostname()


@attrs.define
class _Held:
    lease: Lease
    trusted_until: float  # trio.current_time() until which the lease is ours for sure


class SiteMembership:
    """One agent's place on a shared site. Run :meth:`run` in a nursery; ask :meth:`lease_for`."""

    def __init__(
        self,
        store: AsyncStore,
        *,
        host: str,
        heartbeat_interval: float = 10.0,
        heartbeat_timeout: float = 60.0,
        buckets: int = BUCKETS,
        info: Callable[[], Mapping[str, object] | None] = lambda: None,
    ) -> None:
        self.store = store
        self.host = host
        self.interval = heartbeat_interval
        self.timeout = heartbeat_timeout
        self.buckets = buckets
        self.info = info  # the last cycle's summary, for `powersync status`
        self._held: dict[str, _Held] = {}  # lease name -> what we hold
        self.alive_agents = 1
        self.ready = trio.Event()  # set after the first round of leases
        self.changed = trio.Event()  # set (and replaced) when the share changes

    # --- what the sync and the notifier ask -----------------------------------------------

    def bucket_of(self, node_uuid: str) -> int:
        return bucket_of(node_uuid, self.buckets)

    def lease_for(self, node_uuid: str) -> Lease | None:
        """The lease under which this agent may read and act on the node, or None."""
        return self._trusted(bucket_lease(bucket_of(node_uuid, self.buckets)))

    def lease_for_bucket(self, bucket: int) -> Lease | None:
        return self._trusted(bucket_lease(bucket))

    def outbox_lease(self) -> Lease | None:
        """The outbox drainer's lease, if this agent holds it (only then does it drain)."""
        return self._trusted(OUTBOX_LEASE)

    def bucket_count(self) -> int:
        return sum(1 for name in self._held if name != OUTBOX_LEASE)

    def _trusted(self, name: str) -> Lease | None:
        held = self._held.get(name)
        if held is None or trio.current_time() >= held.trusted_until:
            return None
        return held.lease

    # --- the loop --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat and rebalance until cancelled; then hand everything back at once."""
        try:
            await self._register()
            await self._round()
            self.ready.set()
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                try:
                    await self._round()
                except StoreError as exc:  # the store retries; we try again next beat
                    log.warning("heartbeat of %s failed: %s", self.host, exc)
        finally:
            with trio.CancelScope(shield=True):
                await self._leave()

    async def _register(self) -> None:
        await self.store.register_conductor(self.host, info=self._info())
        log.info(
            "agent %s joined the site (heartbeat every %g s, dead after %g s)",
            self.host,
            self.interval,
            self.timeout,
        )

    def _info(self) -> str | None:
        info = self.info()
        return None if info is None else json.dumps(dict(info), sort_keys=True)

    async def _round(self) -> None:
        started = trio.current_time()
        await self.store.heartbeat(self.host, info=self._info())
        conductors = await self.store.list_conductors()
        leases = await self.store.list_leases()
        now = await self.store.server_time()
        alive = [c for c in conductors if c.alive(now, self.timeout)]
        self.alive_agents = max(1, len(alive))
        want = math.ceil(self.buckets / self.alive_agents)
        taken = {lease.name: lease for lease in leases if lease.expires_at > now}
        before = set(self._held)
        # Renew what we hold; forget what is no longer ours.
        for name in list(self._held):
            renewed = await self.store.renew_lease(self._held[name].lease, ttl=self.timeout)
            if renewed is None:
                log.warning("agent %s lost lease %s (taken over)", self.host, name)
                del self._held[name]
            else:
                self._hold(renewed, started)
        # Above the fair share (another agent joined): hand the highest buckets back.
        mine = sorted((n for n in self._held if n != OUTBOX_LEASE), key=_bucket_number)
        for name in mine[want:]:
            await self.store.release_lease(self._held.pop(name).lease)
        # Below it: take free or expired buckets, and the outbox lease if nobody has it.
        free = [
            bucket_lease(b)
            for b in range(self.buckets)
            if bucket_lease(b) not in taken and bucket_lease(b) not in self._held
        ]
        for name in free[: max(0, want - self.bucket_count())]:
            await self._acquire(name, started)
        if OUTBOX_LEASE not in self._held and OUTBOX_LEASE not in taken:
            await self._acquire(OUTBOX_LEASE, started)
        if set(self._held) != before:
            log.info(
                "agent %s holds %d of %d buckets (%d agent(s) alive)%s",
                self.host,
                self.bucket_count(),
                self.buckets,
                self.alive_agents,
                " and drains the Nova outbox" if OUTBOX_LEASE in self._held else "",
            )
            self.changed.set()
            self.changed = trio.Event()

    async def _acquire(self, name: str, started: float) -> None:
        lease = await self.store.acquire_lease(name, self.host, ttl=self.timeout)
        if lease is not None:
            self._hold(lease, started)

    def _hold(self, lease: Lease, started: float) -> None:
        # Trusted from when we asked (the store's time may be later), minus a margin.
        self._held[lease.name] = _Held(lease, started + self.timeout * (1 - SAFETY_MARGIN))

    async def _leave(self) -> None:
        """Release every lease and unregister, so the others take over at once."""
        leases = [held.lease for held in self._held.values()]
        self._held.clear()
        try:
            with trio.move_on_after(5.0):
                for lease in leases:
                    await self.store.release_lease(lease)
                await self.store.unregister(self.host)
        except StoreError as exc:
            log.warning("agent %s could not hand its nodes over: %s", self.host, exc)
            return
        log.info("agent %s left the site; %d lease(s) handed over", self.host, len(leases))


def _bucket_number(name: str) -> int:
    return int(name.rsplit(":", 1)[1])
