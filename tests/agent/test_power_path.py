"""Power actions as an Ironic operator expects them, against the simulator on loopback.

The simulator's hardware takes real time to change (PowerTiming), as a server does: these
tests check that an action is reported done only once the hardware got there, and that a
daemon running beside it leaves the node alone meanwhile.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import trio

from agent.bmc.pool import open_bmc_pool
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.drivers.ipmi import IpmiDriver
from agent.storeio import AsyncStore
from agent.sync.actions import power_action
from agent.sync.policy import POWER_OFF, POWER_ON
from agent.sync.service import SyncService
from ipmi.sim import PowerTiming, open_fleet
from store import Store, open_store

IPMI = IpmiConfig(retry_timeout=0.2, retry_backoff=2.0, retry_max_timeout=0.4, retries=4)
OFF_DELAY, ON_DELAY = 1.0, 1.5  # seconds the simulated server takes


def config(**conductor: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "sync_power_state_interval": 0.3,
        "sync_node_timeout": 6.0,
        "sync_jitter_window": 0.0,
        "power_state_sync_max_retries": 1,
        "power_state_change_timeout": 20.0,
    }
    settings.update(conductor)
    return AgentConfig(source="test", conductor=ConductorConfig(**settings), ipmi=IPMI)


def add(store: Store, bmc: Any, password: str, **extra: Any) -> str:
    node = store.add_node(
        name=bmc.name,
        bmc_address=bmc.address,
        bmc_port=bmc.port,
        bmc_username="admin",
        bmc_password=password,
        **extra,
    )
    return node.name


async def test_cycle_is_done_only_after_off_then_on_with_the_daemon_beside_it(
    tmp_path: Path,
) -> None:
    # Found: `power cycle --wait` returned "done, now power on" at +0.7 s (the state read
    # before the machine had gone off), and the daemon then forced "on" into the transition
    # and put the node into "power failure" maintenance.
    password = "pp-" + secrets.token_hex(4)
    timing = PowerTiming(power_off_delay=OFF_DELAY, power_on_delay=ON_DELAY)
    async with open_fleet(1, password=password, power_on=True, timing=timing) as fleet:
        bmc = fleet.bmcs[0]
        with open_store(str(tmp_path / "s.sqlite")) as store:
            name = add(store, bmc, password)
            astore = AsyncStore(store)
            seen: list[tuple[float, bool]] = []
            async with (
                open_bmc_pool(IpmiDriver(IPMI).open_session) as pool,
                trio.open_nursery() as nursery,
            ):
                daemon = SyncService(config(), astore, pool)
                await daemon.run_cycle()  # records power on
                nursery.start_soon(daemon.sync_loop)

                async def watch() -> None:
                    while True:
                        seen.append((trio.current_time(), bmc.power_on))
                        await trio.sleep(0.05)

                nursery.start_soon(watch)
                started = trio.current_time()
                result = await power_action(
                    astore,
                    name,
                    "cycle",
                    config=config(),
                    opener=IpmiDriver(IPMI).open_session,
                    wait=True,
                )
                done = trio.current_time() - started
                await trio.sleep(1.0)  # a few more daemon cycles after the action
                daemon.stop(0.0)
                nursery.cancel_scope.cancel()
            assert result.after == POWER_ON and result.sent
            # The hardware went off, then on again; the action ended after both.
            went_off = next(t for t, on in seen if not on) - started
            came_on = next(t for t, on in seen if on and t - started > went_off) - started
            assert OFF_DELAY * 0.8 <= went_off < came_on <= done + 0.1
            assert done >= OFF_DELAY + ON_DELAY * 0.8
            node = store.get_node(name)
            assert node.power_state == POWER_ON and not node.maintenance, node.last_error
            assert node.sync_failures == 0 and node.target_power_state is None
            # The daemon never sent a command of its own to the node.
            assert [e.cause for e in store.history(name) if e.cause != "sync"] == ["action"]


async def test_a_node_in_maintenance_can_still_be_powered(tmp_path: Path) -> None:
    # Found: "node ... is in maintenance; run --maintenance off first". Ironic allows power
    # actions in maintenance (operators power off the node they put there).
    password = "pp-" + secrets.token_hex(4)
    async with open_fleet(1, password=password, power_on=True) as fleet:
        with open_store(str(tmp_path / "s.sqlite")) as store:
            name = add(store, fleet.bmcs[0], password)
            store.update_node(name, maintenance=True, maintenance_reason="disk swap")
            result = await power_action(
                AsyncStore(store),
                name,
                "off",
                config=config(),
                opener=IpmiDriver(IPMI).open_session,
                wait=True,
            )
            assert result.after == POWER_OFF and not fleet.bmcs[0].power_on
            node = store.get_node(name)
            assert node.maintenance and node.maintenance_reason == "disk swap"
            assert node.power_state == POWER_OFF and node.reservation is None
