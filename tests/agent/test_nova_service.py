"""End to end: the sync service records power changes and the notifier tells the fake Nova.

Fake BMCs (tests/agent/fake_bmc.py), the real SyncService, a real SQLite file, and the
fake Keystone + Nova over real HTTP on loopback.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from agent.bmc.pool import open_bmc_pool
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.nova.config import parse_nova_section
from agent.nova.notifier import Notifier
from agent.storeio import AsyncStore
from agent.sync.service import SyncService
from store import open_store
from tests.agent.fake_bmc import FakeFleet, add_nodes
from tests.agent.fake_openstack import FakeOpenStack, nova_table, open_fake_openstack


@pytest.fixture
async def cloud() -> AsyncIterator[FakeOpenStack]:
    async with open_fake_openstack() as cloud:
        yield cloud


async def wait_until(predicate: Callable[[], bool], *, limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(0.01)


async def test_sync_cycles_notify_nova(cloud: FakeOpenStack, tmp_path: Path) -> None:
    nova = parse_nova_section(nova_table(cloud), source="test.toml", environ={})
    config = AgentConfig(
        source="test",
        conductor=ConductorConfig(
            sync_power_state_interval=60.0,
            sync_jitter_window=0.0,
            force_power_state_during_sync=False,
        ),
        ipmi=IpmiConfig(keepalive_interval=25.0),
        nova=nova,
    )
    fleet = FakeFleet()
    with open_store(str(tmp_path / "agent.sqlite")) as store:
        names = add_nodes(store, fleet, 3, instance=True)
        instances = [str(store.get_node(name).instance_uuid) for name in names]
        for instance in instances:
            cloud.instances[instance] = "compute-1"
        astore = AsyncStore(store)
        notifier = Notifier(nova, astore, rng=random.Random(1))
        async with (
            open_bmc_pool(fleet.opener, keepalive_interval=25.0) as pool,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(notifier.run)
            service = SyncService(config, astore, pool, notifier=notifier, holder="test:nova")
            await service.run_cycle()  # first readings: every node "power on"
            await wait_until(lambda: len(cloud.delivered()) == 3)
            fleet[10002].on = False  # someone powers a server off behind our back
            await service.run_cycle()
            await wait_until(lambda: len(cloud.delivered()) == 4)
            nursery.cancel_scope.cancel()
        assert store.notification_counts()["delivered"] == 4
        assert store.notification_counts()["pending"] == 0
    assert cloud.delivered(instances[1]) == ["POWER_ON", "POWER_OFF"]
    assert cloud.delivered(instances[0]) == ["POWER_ON"]
