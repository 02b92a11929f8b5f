"""The sync service with the real IPMI driver and client, over ipmi.testing's fake network.

No fake BMC class of the agent's own here: the IPMI driver logs in with the real RMCP+
client to in-process simulated BMCs, on trio's MockClock, so the seam is exercised as the
daemon uses it (errors translated to BmcError, sessions kept, deadlines).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from agent.bmc.pool import open_bmc_pool
from agent.bmc.seam import Drivers
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.drivers.ipmi import IpmiDriver
from agent.sync.policy import FAULT_POWER_FAILURE, POWER_OFF, POWER_ON
from agent.sync.service import SyncService
from ipmi import open_bmc
from ipmi.proto.constants import ChassisAction
from ipmi.testing import FakeBmc, FakeNetwork, open_fake_network
from store import Store, open_store
from tests.agent.test_service import InlineStore, wall

PASSWORD = "fake-net-secret"
IPMI = IpmiConfig(retry_timeout=0.2, retry_backoff=2.0, retry_max_timeout=0.4, retries=4)


def make_config(**conductor: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "sync_node_timeout": 6.0,
        "sync_jitter_window": 0.0,
        "power_state_sync_max_retries": 1,
    }
    settings.update(conductor)
    return AgentConfig(source="test", conductor=ConductorConfig(**settings), ipmi=IPMI)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(str(tmp_path / "agent.sqlite")) as opened:
        yield opened


def add_bmcs(store: Store, network: FakeNetwork, count: int, **options: Any) -> list[FakeBmc]:
    bmcs = []
    for index in range(count):
        host = f"127.0.0.{index + 2}"  # only ever on the fake network: no socket is opened
        bmcs.append(network.add_bmc(host, 623, password=PASSWORD, power_on=True, **options))
        store.add_node(
            name=f"node-{index}",
            bmc_address=host,
            bmc_port=623,
            bmc_username="admin",
            bmc_password=PASSWORD,
        )
    return bmcs


@asynccontextmanager
async def service_over(
    network: FakeNetwork, store: Store, config: AgentConfig
) -> AsyncIterator[SyncService]:
    driver = IpmiDriver(config.ipmi, connect=network.connect)
    drivers = Drivers({"ipmi": driver})
    async with open_bmc_pool(drivers.open) as pool:
        yield SyncService(
            config, InlineStore(store), pool, wall_clock=wall, holder="t:1:sync", drivers=drivers
        )


async def test_reads_force_and_keeps_one_session_per_bmc(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_fake_network() as network:
        bmcs = add_bmcs(store, network, 3)
        bmcs[1].power_on = False
        async with service_over(network, store, make_config()) as service:
            await service.run_cycle()
            assert [store.get_node(f"node-{i}").power_state for i in range(3)] == [
                POWER_ON,
                POWER_OFF,
                POWER_ON,
            ]
            bmcs[0].power_on = False  # out of band: force drives it back on
            report = await service.run_cycle()
            assert bmcs[0].power_on and bmcs[0].actions == [ChassisAction.POWER_UP]
            assert [r.action for r in report.results].count("forced") == 1
            await service.run_cycle()
            # Long-lived sessions: one login per BMC for three cycles.
            assert service.pool.statistics().logins == 3
            assert all(bmc.protocol.session_count(trio.current_time()) == 1 for bmc in bmcs)
        # Leaving the pool closed every session on the BMC side.
        assert all(bmc.protocol.session_count(trio.current_time()) == 0 for bmc in bmcs)


async def test_silent_and_wrong_password_bmcs_fail_with_the_clients_errors(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_fake_network() as network:
        bmcs = add_bmcs(store, network, 3)
        bmcs[0].silent = True
        bmcs[1].wrong_password = True
        async with service_over(network, store, make_config()) as service:
            first = await service.run_cycle()
            second = await service.run_cycle()
        by_name = {r.name: r for r in first.results}
        assert by_name["node-0"].action == "read-failed"
        assert "NoResponseError" in (by_name["node-0"].error or "")
        assert "AuthenticationError" in (by_name["node-1"].error or "")
        assert by_name["node-2"].action == "record"
        for name in ("node-0", "node-1"):
            node = store.get_node(name)
            assert [r.action for r in second.results if r.name == name] == ["maintenance"]
            assert node.maintenance and node.fault == FAULT_POWER_FAILURE
        assert not store.get_node("node-2").maintenance


async def test_a_hanging_bmc_costs_one_deadline_and_nobody_else_waits(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_fake_network() as network:
        bmcs = add_bmcs(store, network, 4)
        async with service_over(network, store, make_config(sync_node_timeout=3.0)) as service:
            await service.run_cycle()
            bmcs[2].hanging = True
            started = trio.current_time()
            report = await service.run_cycle()
            took = trio.current_time() - started
        failed = [r for r in report.results if r.error]
        assert [r.name for r in failed] == ["node-2"]
        assert took <= 3.0 + 0.5  # one node's deadline (the client's own budget is ~1.8 s)


async def test_a_wrong_password_is_not_retried_at_the_sync_pace(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    # Found: with max_retries raised, a login every cycle (30 a minute at a 2 s interval),
    # each holding a half-open session slot. Now: 0 s, 30 s, 90 s, ... whatever the retries.
    async with open_fake_network() as network:
        (bmc,) = add_bmcs(store, network, 1)
        bmc.wrong_password = True
        config = make_config(sync_power_state_interval=2.0, power_state_sync_max_retries=1000)
        async with service_over(network, store, config) as service:
            with trio.move_on_after(60.0):
                await service.sync_loop()
        logins = network.labels().count("rakp1")
        assert service.cycles_started >= 25
        assert logins == 2, network.labels()  # at 0 s and 30 s; the next is due at 90 s
        node = store.get_node("node-0")
        assert "AuthenticationError" in (node.last_error or "")
        assert "next login attempt in" in (node.last_error or "")
        assert not node.maintenance


async def test_a_bmc_out_of_session_slots_is_not_put_into_maintenance_at_once(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    # Found: sessions left by crashed agents filled every slot; each read then failed with
    # "insufficient resources" and max_retries (3) of those put healthy nodes in maintenance.
    async with open_fake_network() as network:
        add_bmcs(store, network, 1, max_sessions=1)
        config = make_config(sync_power_state_interval=2.0, power_state_sync_max_retries=3)
        async with service_over(network, store, config) as service:
            await service.run_cycle()  # read fine; its session is now the BMC's only slot
            assert store.get_node("node-0").last_seen_at is not None
            service.pool.forget(store.get_node("node-0").uuid)  # the agent "crashed"...
            await trio.sleep(0)
        # ... and its session lingers on the BMC (closing it was lost: a stray session).
        async with (
            open_bmc(
                "127.0.0.2", 623, username="admin", password=PASSWORD, connect=network.connect
            ),
            service_over(network, store, config) as service,
        ):
            with trio.move_on_after(20.0):
                await service.sync_loop()
        node = store.get_node("node-0")
        assert "insufficient resources" in (node.last_error or ""), node.last_error
        assert node.sync_failures == 0 and not node.maintenance
        # The refusals were paced, not one login per 2 s cycle.
        assert network.labels().count("open") <= 6, network.labels()


async def test_health_read_with_the_power_state_is_recorded_with_history(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_fake_network() as network:
        bmcs = add_bmcs(store, network, 2)
        async with service_over(network, store, make_config()) as service:
            await service.run_cycle()
            assert [store.get_node(f"node-{i}").health for i in range(2)] == ["ok", "ok"]
            bmcs[1].fault_bits = 0x08 | 0x04  # main power fault, interlock
            await service.run_cycle()
            await service.run_cycle()  # unchanged: no second history row
            node = store.get_node("node-1")
            assert node.health == "interlock, main power fault"
            notes = [e.message for e in store.history("node-1") if "health" in e.message]
            assert notes == ["health ok -> interlock, main power fault"]
            bmcs[1].fault_bits = 0
            await service.run_cycle()
        assert store.get_node("node-1").health == "ok"
        assert store.history("node-1")[0].message == "health interlock, main power fault -> ok"
        assert not any("health" in e.message for e in store.history("node-0"))


async def test_a_referenced_password_file_is_read_at_login_and_a_loose_one_fails_one_node(
    store: Store, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_fake_network() as network:
        add_bmcs(store, network, 2)
        secret = tmp_path / "bmc.pw"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o644)  # group/world-readable: refused, like ssh refuses a loose key
        store.update_node(
            "node-0", bmc_password="", driver_info={"ipmi_password_file": str(secret)}
        )
        async with service_over(network, store, make_config()) as service:
            first = await service.run_cycle()
            by_name = {r.name: r for r in first.results}
            assert by_name["node-0"].action == "read-failed"
            assert "readable by other users" in (by_name["node-0"].error or "")
            assert PASSWORD not in (by_name["node-0"].error or "")
            assert by_name["node-1"].action == "record"  # the cycle went on
            secret.chmod(0o600)
            second = await service.run_cycle()
        assert [r.action for r in second.results if r.name == "node-0"] == ["record"]
        assert store.get_node("node-0").bmc_password == ""  # still only a reference
