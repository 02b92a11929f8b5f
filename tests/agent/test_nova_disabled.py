"""With ``[nova] send_power_notifications = false`` nothing is queued: no outbox rows pile up
to be sent, stale, once sending is switched on later."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from agent.config.options import AgentConfig
from agent.nova.config import NovaConfig
from agent.sync.actions import power_action
from agent.sync.policy import POWER_OFF, POWER_ON
from store import Store, open_store
from tests.agent.fake_bmc import FakeFleet, add_nodes
from tests.agent.test_service import Harness, InlineStore, make_config, wall


def with_nova(config: AgentConfig, *, send: bool) -> AgentConfig:
    return attrs.evolve(config, nova=NovaConfig(send_power_notifications=send))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(str(tmp_path / "agent.sqlite")) as opened:
        yield opened


@pytest.mark.parametrize("send", [False, True])
async def test_power_action_queues_only_when_sending_is_on(
    store: Store, send: bool, autojump_clock: trio.testing.MockClock
) -> None:
    fleet = FakeFleet()
    (name,) = add_nodes(store, fleet, 1, instance=True)
    store.update_node(name, power_state=POWER_ON)
    config = with_nova(make_config(power_state_change_timeout=30.0), send=send)
    await power_action(
        InlineStore(store),
        name,
        "off",
        config=config,
        opener=fleet.opener,
        holder="test:3:power",
        wall_clock=wall,
    )
    assert store.get_node(name).power_state == POWER_OFF
    assert store.history(name)[0].cause == "action"  # the change itself is recorded
    assert store.notification_counts()["pending"] == (1 if send else 0)


async def test_sync_cycle_queues_nothing_when_sending_is_off(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    fleet = FakeFleet()
    add_nodes(store, fleet, 3, instance=True)
    async with Harness(store, fleet, with_nova(make_config(), send=False)) as service:
        report = await service.run_cycle()
    assert report.summary()["changed"] == 3
    assert store.notification_counts()["pending"] == 0


async def test_sync_cycle_queues_when_sending_is_on(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    fleet = FakeFleet()
    add_nodes(store, fleet, 3, instance=True)
    async with Harness(store, fleet, with_nova(make_config(), send=True)) as service:
        await service.run_cycle()
    assert store.notification_counts()["pending"] == 3
