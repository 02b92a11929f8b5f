"""Nova ends at the newest state: requests that stalled past the timeout and were applied
later, and events queued by another process (``powersync power``) a second apart."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from agent.nova.notifier import META_IN_DOUBT, Notifier
from agent.storeio import AsyncStore
from store import Store, open_store
from tests.agent.fake_openstack import FakeOpenStack, open_fake_openstack
from tests.agent.test_notifier import (
    WallClock,
    add_nodes,
    config_for,
    notifier_for,
    power,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def cloud() -> AsyncIterator[FakeOpenStack]:
    async with open_fake_openstack() as cloud:
        yield cloud


@pytest.fixture(params=["sqlite", "json"])
def store_path(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    return str(tmp_path / f"powersync.{request.param}"), request.param


@pytest.fixture
def store(store_path: tuple[str, str]) -> Iterator[Store]:
    with open_store(*store_path) as opened:
        yield opened


def quick(cloud: FakeOpenStack, store: Store, **overrides: object) -> Notifier:
    settings: dict[str, object] = {"timeout": 0.3, "retry_delay": 0.05, "retry_max_delay": 0.1}
    settings.update(overrides)
    return notifier_for(cloud, store, **settings)


async def test_a_stalled_older_event_applied_late_is_corrected(
    cloud: FakeOpenStack, store: Store
) -> None:
    """Nova accepts POWER_OFF, stalls past our timeout and applies it after the newer
    POWER_ON: the agent must still leave Nova at POWER_ON, as hardware and store say."""
    [node] = add_nodes(store, cloud, 1)
    instance = str(node.instance_uuid)
    cloud.nova_stalls = [1.0]
    notifier = quick(cloud, store, in_doubt_window=1.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run)
        power(store, [node], "power off")
        notifier.wake()
        await wait_until(lambda: store.due_notifications(now=time.time() + 100)[0].attempts > 0)
        power(store, [node], "power on")  # the node flips back; POWER_OFF is superseded
        notifier.wake()
        await wait_until(lambda: cloud.stalled_applied == 1)
        await wait_until(lambda: store.notification_counts()["pending"] == 0)
        await trio.sleep(0.3)  # nothing else lands
        nursery.cancel_scope.cancel()
    assert store.get_node(node.uuid).power_state == "power on"
    assert cloud.power[instance] == "POWER_ON"
    # The late POWER_OFF landed before the POWER_ON that was held back for it.
    assert cloud.delivered(instance) == ["POWER_OFF", "POWER_ON"]


async def test_same_state_retry_is_not_held(cloud: FakeOpenStack, store: Store) -> None:
    [node] = add_nodes(store, cloud, 1)
    clock = WallClock()
    cloud.nova_hang = True
    notifier = quick(cloud, store, clock=clock, in_doubt_window=1000.0)
    power(store, [node], "power off")
    report = await notifier.drain_once()
    assert report.deferred == 1 and "did not answer" in str(report.error)
    cloud.nova_hang = False
    clock.advance(1)
    assert (await notifier.drain_once()).delivered == 1  # a late POWER_OFF changes nothing
    power(store, [node], "power on")
    held = await notifier.drain_once()
    assert (held.delivered, cloud.nova_posts) == (0, 2)  # waits for the window
    [row] = store.due_notifications(now=clock() + 2000)
    assert "held" in str(row.last_error) and row.next_attempt_at > clock() + 900
    clock.advance(1001)
    assert (await notifier.drain_once()).delivered == 1
    assert cloud.power[str(node.instance_uuid)] == "POWER_ON"


async def test_refused_connection_is_not_in_doubt(cloud: FakeOpenStack, store: Store) -> None:
    [node] = add_nodes(store, cloud, 1)
    clock = WallClock()
    notifier = quick(cloud, store, clock=clock, in_doubt_window=1000.0)
    power(store, [node], "power on")
    assert (await notifier.drain_once()).delivered == 1  # a token and a live connection
    await cloud.go_away()
    power(store, [node], "power off")
    assert (await notifier.drain_once()).deferred == 1
    await cloud.come_back()
    power(store, [node], "power on")
    clock.advance(1)
    assert (await notifier.drain_once()).delivered == 1  # nothing was sent: no wait
    assert store.get_meta(META_IN_DOUBT) in (None, "{}")


async def test_doubt_survives_a_restart(cloud: FakeOpenStack, store: Store) -> None:
    [node] = add_nodes(store, cloud, 1)
    clock = WallClock()
    cloud.nova_hang = True
    power(store, [node], "power off")
    await quick(cloud, store, clock=clock, in_doubt_window=1000.0).drain_once()
    cloud.nova_hang = False
    power(store, [node], "power on")
    clock.advance(1)
    restarted = quick(cloud, store, clock=clock, in_doubt_window=1000.0)
    assert (await restarted.drain_once()).delivered == 0
    clock.advance(1000)
    assert (await restarted.drain_once()).delivered == 1


async def test_gateway_timeout_is_in_doubt(cloud: FakeOpenStack, store: Store) -> None:
    [node] = add_nodes(store, cloud, 1)
    clock = WallClock()
    notifier = quick(cloud, store, clock=clock, in_doubt_window=1000.0)
    cloud.nova_statuses = [504]
    power(store, [node], "power off")
    await notifier.drain_once()
    power(store, [node], "power on")
    clock.advance(1)
    assert (await notifier.drain_once()).delivered == 0
    clock.advance(1000)
    assert (await notifier.drain_once()).delivered == 1


ACTIONS = """
import sys, time
from store import HistoryRecord, NodeChange, open_store
path, backend, node = sys.argv[1:4]
with open_store(path, backend) as store:
    for before, after in (("power on", "power off"), ("power off", "power on")):
        store.apply([NodeChange(node, fields={"power_state": after},
            history=HistoryRecord(before, after, "action", "powersync power"),
            notification=after, supersede=False)])  # as agent.sync.actions does
        time.sleep(1.0)
"""


async def test_actions_a_second_apart_in_another_process_reach_nova_in_order(
    cloud: FakeOpenStack, store: Store, store_path: tuple[str, str]
) -> None:
    """``powersync power off`` then ``on`` a second later: Nova hears both, in order,
    each promptly, although that process cannot wake the daemon."""
    path, backend = store_path
    [node] = add_nodes(store, cloud, 1)
    instance = str(node.instance_uuid)
    notifier = Notifier(config_for(cloud), AsyncStore(store), rng=random.Random(4))
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run)
        await trio.run_process([sys.executable, "-c", ACTIONS, path, backend, node.uuid], cwd=ROOT)
        await wait_until(lambda: len(cloud.delivered(instance)) == 2, limit=5.0)
        nursery.cancel_scope.cancel()
    assert cloud.delivered(instance) == ["POWER_OFF", "POWER_ON"]
    rows = [store.get_notification(i) for i in (1, 2)]
    assert [row.status for row in rows] == ["delivered", "delivered"]
    received = [event.at for event in cloud.events]
    for row, at in zip(rows, received, strict=True):
        assert 0 <= at - row.created_at < 2.0  # prompt: the daemon's poll alone takes 10 s
