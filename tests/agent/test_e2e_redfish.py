"""One agent for a mixed fleet: IPMI and Redfish BMCs in one store, one pool, one sync.

Real sockets on loopback: ipmi.sim's UDP BMCs and redfish.sim's HTTPS services (a
certificate of its own, verified through its CA file), and OpenStack's sushy-emulator as a
Redfish server nobody here wrote.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.bmc.pool import open_bmc_pool
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.drivers import configured_drivers
from agent.storeio import AsyncStore
from agent.sync.actions import power_action
from agent.sync.policy import FAULT_POWER_FAILURE, POWER_OFF, POWER_ON
from agent.sync.service import SyncService
from ipmi.sim import open_fleet as open_ipmi_fleet
from redfish.sim import open_fleet as open_redfish_fleet
from store import Store, open_store
from tests.redfish.peers import run_sushy_emulator

IPMI = IpmiConfig(retry_timeout=0.2, retry_backoff=2.0, retry_max_timeout=0.4, retries=4)


def config(**conductor: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "sync_node_timeout": 6.0,
        "sync_jitter_window": 0.0,
        "power_state_sync_max_retries": 1,
        "power_state_change_timeout": 25.0,
    }
    settings.update(conductor)
    return AgentConfig(source="e2e", conductor=ConductorConfig(**settings), ipmi=IPMI)


def add_redfish(
    store: Store, name: str, url: str, password: str, ca_file: str, system: str | None = None
) -> None:
    host_port = url.split("://", 1)[1]
    host, _, port = host_port.rpartition(":")
    info: dict[str, str | bool] = {"redfish_address": url, "redfish_verify_ca": ca_file}
    if system is not None:
        info["redfish_system_id"] = system
    store.add_node(
        name=name,
        driver="redfish",
        driver_info=info,
        bmc_address=host,
        bmc_port=int(port),
        bmc_username="admin",
        bmc_password=password,
    )


async def test_a_mixed_fleet_is_synced_forced_and_survives_a_dead_redfish_bmc(
    tmp_path: Path,
) -> None:
    password = "mix-" + secrets.token_hex(4)
    async with (
        open_ipmi_fleet(3, password=password, power_on=True) as ipmi_fleet,
        open_redfish_fleet(3, password=password, power_on=True, tls_dir=str(tmp_path)) as fleet,
    ):
        with open_store(str(tmp_path / "mixed.sqlite")) as store:
            for bmc in ipmi_fleet.bmcs:
                store.add_node(
                    name=f"ipmi-{bmc.index}",
                    bmc_address=bmc.address,
                    bmc_port=bmc.port,
                    bmc_username="admin",
                    bmc_password=password,
                )
            for index, service in enumerate(fleet.bmcs):
                add_redfish(store, f"redfish-{index}", service.url, password, fleet.ca_file)
            cfg = config()
            drivers = configured_drivers(cfg)
            async with open_bmc_pool(drivers.open) as pool:
                sync = SyncService(cfg, AsyncStore(store), pool, drivers=drivers)
                first = await sync.run_cycle()
                assert {r.action for r in first.results} == {"record"}, first.results
                # Out of band, one of each goes off; force (Ironic's default) drives them on.
                ipmi_fleet.bmcs[1].set_power(False)
                fleet.bmcs[2].set_power(False)
                before = [service.requests for service in fleet.bmcs]
                second = await sync.run_cycle()
                forced = sorted(r.name for r in second.results if r.action == "forced")
                assert forced == ["ipmi-1", "redfish-2"], second.results
                assert ipmi_fleet.bmcs[1].power_on and fleet.bmcs[2].power_on
                # A live Redfish session costs one GET per status.
                assert [s.requests - b for s, b in zip(fleet.bmcs, before, strict=True)][:2] == [
                    1,
                    1,
                ]
                # A dead Redfish BMC fails on its own; nobody else waits for it.
                fleet.set_faults(dead=frozenset({0}))
                started = trio.current_time()
                third = await sync.run_cycle()
                fourth = await sync.run_cycle()
                took = trio.current_time() - started
            by_name = {r.name: r for r in third.results}
            assert by_name["redfish-0"].action == "read-failed"
            # Silent on a kept-alive connection: the node's deadline ends the read.
            assert "no answer" in (by_name["redfish-0"].error or "")
            assert {r.action for r in third.results if r.name != "redfish-0"} == {"in-sync"}
            node = store.get_node("redfish-0")
            assert node.maintenance and node.fault == FAULT_POWER_FAILURE
            assert [r.action for r in fourth.results if r.name == "redfish-0"] == ["maintenance"]
            assert took < 2 * (cfg.conductor.sync_node_timeout + 1.0)  # one deadline a cycle
        # Leaving the pool logged out of every Redfish session a BMC could still hear about.
        assert [service.session_count() for service in fleet.bmcs[1:]] == [0, 0]


@pytest.mark.peers
async def test_the_agent_syncs_and_powers_a_sushy_emulator_system(tmp_path: Path) -> None:
    with run_sushy_emulator(tmp_path) as emulator, open_store(str(tmp_path / "s.sqlite")) as store:
        ca = emulator.tls.ca_file
        add_redfish(store, "peer-on", emulator.url, emulator.password, ca, emulator.on_system)
        add_redfish(store, "peer-off", emulator.url, emulator.password, ca, emulator.off_system)
        cfg = config()
        drivers = configured_drivers(cfg)
        astore = AsyncStore(store)
        async with open_bmc_pool(drivers.open) as pool:
            report = await SyncService(cfg, astore, pool, drivers=drivers).run_cycle()
        states = {r.name: r.new_state for r in report.results}
        assert states == {"peer-on": POWER_ON, "peer-off": POWER_OFF}, report.results
        # sushy-emulator's fake driver applies a power change 1-11 s later: --wait sees it.
        result = await power_action(
            astore, "peer-on", "off", config=cfg, opener=drivers.open, drivers=drivers, wait=True
        )
        assert result.after == POWER_OFF and result.sent
        assert store.get_node("peer-on").power_state == POWER_OFF
