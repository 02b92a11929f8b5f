"""Several agents on one site, in one process, on a real PostgreSQL server and real BMCs.

Each agent is a SyncService with its own SiteMembership and BMC pool over one shared store;
the simulator counts the reads each BMC answered, so "every node synced exactly once per
cycle" is counted where it happens. (tests/agent/test_site_processes.py runs agents as
separate processes and kills them.)
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from agent.bmc.pool import open_bmc_pool
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.drivers.ipmi import IpmiDriver
from agent.site.membership import SiteMembership
from agent.storeio import AsyncStore
from agent.sync.service import SyncService
from ipmi.sim import open_fleet
from store import OUTBOX_LEASE, Store, bucket_lease, open_store
from tests.store.conftest import pg_server  # noqa: F401 (the session's PostgreSQL server)
from tests.store.pgserver import PgServer

IPMI = IpmiConfig(retry_timeout=0.2, retry_backoff=2.0, retry_max_timeout=0.4, retries=4)
BEAT, DEAD = 0.3, 1.5  # heartbeat_interval, heartbeat_timeout (seconds, real time)
BUCKETS = 8


def config() -> AgentConfig:
    conductor = ConductorConfig(
        sync_node_timeout=3.0, sync_jitter_window=0.0, power_state_sync_max_retries=1
    )
    return AgentConfig(source="site", conductor=conductor, ipmi=IPMI)


@pytest.fixture
def dsn(pg_server: PgServer) -> Iterator[str]:  # noqa: F811
    with pg_server.database() as name:
        yield name


def shared(dsn: str) -> Store:
    return open_store(backend="postgresql", dsn=dsn, password="not-needed-trust")


@asynccontextmanager
async def agent(dsn: str, host: str) -> AsyncIterator[tuple[SyncService, SiteMembership]]:
    with shared(dsn) as store:
        astore = AsyncStore(store)
        site = SiteMembership(
            astore, host=host, heartbeat_interval=BEAT, heartbeat_timeout=DEAD, buckets=BUCKETS
        )
        async with (
            open_bmc_pool(IpmiDriver(IPMI).open_session) as pool,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(site.run)
            yield SyncService(config(), astore, pool, site=site, holder=f"{host}:sync"), site
            nursery.cancel_scope.cancel()


async def settle(*sites: SiteMembership, rounds: int = 12) -> None:
    """Wait (bounded) until the sites hold an even share each, together every bucket once."""
    for _ in range(rounds):
        held = [
            {b for b in range(BUCKETS) if site.lease_for_bucket(b) is not None} for site in sites
        ]
        even = all(len(h) == BUCKETS // len(sites) for h in held)
        if even and len(set().union(*held)) == BUCKETS:
            return
        await trio.sleep(BEAT)
    raise AssertionError(f"buckets never settled: {[s.bucket_count() for s in sites]}")


def reads(fleet: Any) -> list[int]:
    return [bmc.requests for bmc in fleet.bmcs]


async def test_two_agents_share_the_nodes_and_one_takes_over_when_the_other_stops(
    dsn: str,
) -> None:
    password = "site-" + secrets.token_hex(4)
    async with open_fleet(16, password=password, power_on=True) as fleet:
        with shared(dsn) as store:
            for bmc in fleet.bmcs:
                store.add_node(
                    name=bmc.name,
                    bmc_address=bmc.address,
                    bmc_port=bmc.port,
                    bmc_username="admin",
                    bmc_password=password,
                )
        async with agent(dsn, "agent-a") as (sync_a, site_a):
            assert site_a.bucket_count() == BUCKETS  # alone: every bucket
            assert site_a.outbox_lease() is not None
            async with agent(dsn, "agent-b") as (sync_b, site_b):
                await settle(site_a, site_b)
                assert 0 < site_a.bucket_count() < BUCKETS
                assert (site_a.outbox_lease() is None) != (site_b.outbox_lease() is None)
                await sync_a.run_cycle()  # first cycles: log in and record
                await sync_b.run_cycle()
                before = reads(fleet)
                report_a = await sync_a.run_cycle()
                report_b = await sync_b.run_cycle()
                after = reads(fleet)
                names_a = {r.name for r in report_a.results}
                names_b = {r.name for r in report_b.results}
                assert not names_a & names_b  # never both on one node
                assert names_a | names_b == {bmc.name for bmc in fleet.bmcs}
                # Each BMC answered exactly one datagram (one read) in this pair of cycles.
                assert [a - b for a, b in zip(after, before, strict=True)] == [1] * 16
            # agent-b stopped cleanly: it handed its buckets over at once.
            for _ in range(10):
                if site_a.bucket_count() == BUCKETS:
                    break
                await trio.sleep(BEAT)
            assert site_a.bucket_count() == BUCKETS and site_a.outbox_lease() is not None
            report = await sync_a.run_cycle()
            assert len(report.results) == 16
        with shared(dsn) as store:
            assert store.list_conductors() == []  # both left the site
            assert store.list_leases() == []  # and gave every lease back


async def test_a_lease_not_renewed_is_no_longer_trusted_and_its_writes_are_fenced(
    dsn: str,
) -> None:
    # What a SIGSTOPped agent meets when it wakes: its bucket was taken over meanwhile.
    with shared(dsn) as store:
        node = store.add_node(
            name="n1", bmc_address="127.0.0.1", bmc_port=1, bmc_username="a", bmc_password="p"
        )
        async with agent(dsn, "agent-a") as (_, site_a):
            bucket = bucket_lease(site_a.bucket_of(node.uuid))
            lease = site_a.lease_for(node.uuid)
            assert lease is not None
            # No more heartbeats from agent-a after its next one (as if it was stopped);
            # another agent takes the bucket once agent-a's lease has expired.
            site_a.interval = 3600.0
            await trio.sleep(BEAT + DEAD + 0.3)
            taken = store.acquire_lease(bucket, "agent-b", ttl=30)
            assert taken is not None and taken.token > lease.token
            assert site_a.lease_for(node.uuid) is None  # not trusted past its TTL
            assert not store.acquire_lock(node.uuid, "agent-a:sync", ttl=10, fence=lease)
            assert store.acquire_lease(OUTBOX_LEASE, "agent-b", ttl=30) is not None
