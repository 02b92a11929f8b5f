"""End to end against OpenIPMI's ipmi_sim: an independent BMC implementation (suite 3).

ipmi_sim keeps the chassis power in a file per BMC and logs what it was asked to do, so
the tests see exactly which commands the agent sent.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.bmc.pool import open_bmc_pool
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.drivers.ipmi import IpmiDriver
from agent.nova.config import NovaConfig
from agent.storeio import AsyncStore
from agent.sync.actions import power_action
from agent.sync.policy import FAULT_POWER_FAILURE, POWER_OFF, POWER_ON
from agent.sync.service import SyncService
from store import Store, open_store
from tests.conftest import require_tool
from tests.peers.ipmi_sim import IpmiSimBmc, ipmi_sim_fleet

pytestmark = pytest.mark.peers

IPMI = IpmiConfig(
    cipher_suites=(3,), retry_timeout=0.3, retry_backoff=2.0, retry_max_timeout=0.6, retries=2
)


def config(**conductor: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "sync_node_timeout": 5.0,
        "sync_jitter_window": 0.0,
        "power_state_sync_max_retries": 1,
        "power_state_change_timeout": 10.0,
    }
    settings.update(conductor)
    # Notifications on: the actions' Nova events are queued only then.
    nova = NovaConfig(send_power_notifications=True)
    return AgentConfig(source="e2e", conductor=ConductorConfig(**settings), ipmi=IPMI, nova=nova)


def opener() -> Any:
    return IpmiDriver(IPMI).open_session


@pytest.fixture
def password() -> str:
    return "ps" + secrets.token_hex(6)


@pytest.fixture
def bmcs(tmp_path: Path, password: str) -> Iterator[list[IpmiSimBmc]]:
    require_tool("ipmi_sim")
    with ipmi_sim_fleet(3, directory=tmp_path / "bmcs", password=password, power_on=True) as fleet:
        yield fleet


@pytest.fixture
def store(tmp_path: Path, bmcs: list[IpmiSimBmc], password: str) -> Iterator[Store]:
    with open_store(str(tmp_path / "agent.sqlite")) as opened:
        for index, bmc in enumerate(bmcs):
            opened.add_node(
                name=f"osim-{index}",
                bmc_address=bmc.host,
                bmc_port=bmc.port,
                bmc_username="admin",
                bmc_password=password,
                cipher_suites=(3,),  # Debian's ipmi_sim has no SHA-256 suites
                instance_uuid=f"00000000-0000-4000-8000-{index:012d}",
            )
        yield opened


def word(on: bool) -> str:
    return POWER_ON if on else POWER_OFF


async def test_both_force_modes(store: Store, bmcs: list[IpmiSimBmc]) -> None:
    bmcs[1].set_power(False)
    async with open_bmc_pool(opener()) as pool:
        forcing = SyncService(config(), AsyncStore(store), pool)
        report = await forcing.run_cycle()
        assert [r.new_state for r in report.results] == [POWER_ON, POWER_OFF, POWER_ON]

        bmcs[0].set_power(False)  # out of band, behind the agent's back
        bmcs[0].clear_calls()
        report = await forcing.run_cycle()
        assert [r.action for r in report.results] == ["forced", "in-sync", "in-sync"]
        assert "set power 1" in bmcs[0].calls()  # ipmi_sim was told to power on
        assert bmcs[0].power_on
        assert store.get_node("osim-0").power_state == POWER_ON

        recording = SyncService(
            config(force_power_state_during_sync=False), AsyncStore(store), pool
        )
        bmcs[2].set_power(False)
        bmcs[2].clear_calls()
        report = await recording.run_cycle()
        assert [r.action for r in report.results] == ["in-sync", "in-sync", "record-hardware"]
        assert not any(call.startswith("set power") for call in bmcs[2].calls())
        assert not bmcs[2].power_on
        assert store.get_node("osim-2").power_state == POWER_OFF
    for index, bmc in enumerate(bmcs):
        assert store.get_node(f"osim-{index}").power_state == word(bmc.power_on)


async def test_max_retries_maintenance_and_recovery(store: Store, bmcs: list[IpmiSimBmc]) -> None:
    async with open_bmc_pool(opener()) as pool:
        service = SyncService(config(), AsyncStore(store), pool)
        await service.run_cycle()
        bmcs[1].stop()  # the BMC goes away
        first = await service.run_cycle()
        second = await service.run_cycle()
        assert [r.action for r in first.results] == ["in-sync", "read-failed", "in-sync"]
        assert [r.action for r in second.results] == ["in-sync", "maintenance", "in-sync"]
        node = store.get_node("osim-1")
        assert node.maintenance and node.fault == FAULT_POWER_FAILURE
        assert node.power_state is None
        assert node.maintenance_reason is not None
        assert f"{bmcs[1].host}:{bmcs[1].port}" in node.maintenance_reason
        assert "NoResponseError" in node.maintenance_reason
        # still down: the recovery pass leaves it in maintenance
        report = await service.run_recovery()
        assert [r.action for r in report.results] == ["still-failing"]

        bmcs[1].restart()  # back, with every session forgotten
        report = await service.run_recovery()
        assert [r.action for r in report.results] == ["recovered"]
        node = store.get_node("osim-1")
        assert not node.maintenance and node.fault is None and node.maintenance_reason is None
        assert node.power_state == POWER_ON
        report = await service.run_cycle()
        assert [r.action for r in report.results] == ["in-sync"] * 3


async def test_power_actions(store: Store, bmcs: list[IpmiSimBmc]) -> None:
    astore = AsyncStore(store)
    result = await power_action(
        astore, "osim-2", "off", config=config(), opener=opener(), wait=True, wait_limit=10.0
    )
    assert result.after == POWER_OFF
    assert "set power 0" in bmcs[2].calls()
    assert not bmcs[2].power_on
    node = store.get_node("osim-2")
    assert (node.power_state, node.target_power_state, node.reservation) == (POWER_OFF, None, None)
    assert store.history("osim-2")[0].cause == "action"

    bmcs[0].clear_calls()
    await power_action(
        astore, "osim-0", "cycle", config=config(), opener=opener(), wait=True, wait_limit=10.0
    )
    # ipmi_sim runs a power cycle as "off now, on a second later"; the agent waits for on.
    calls = bmcs[0].calls()
    assert "set power 0" in calls and "set power 1" in calls
    assert bmcs[0].power_on
    assert store.get_node("osim-0").power_state == POWER_ON
    pending = store.due_notifications(now=store.get_node("osim-0").updated_at + 1)
    assert {n.power_state for n in pending} == {POWER_OFF, POWER_ON}


async def test_power_action_while_the_daemon_runs(
    tmp_path: Path, store: Store, bmcs: list[IpmiSimBmc]
) -> None:
    root = Path(__file__).resolve().parents[2]
    config_path = tmp_path / "agent.toml"
    config_path.write_text(
        "\n".join(
            [
                "[conductor]",
                "sync_power_state_interval = 1.0",
                "sync_node_timeout = 0.9",
                "sync_jitter_window = 0",
                "power_state_change_timeout = 10",
                "lock_ttl = 30",
                "[ipmi]",
                "cipher_suites = [3]",
                "retry_timeout = 0.2",
                "retry_max_timeout = 0.2",
                "retries = 2",
                "[store]",
                f'path = "{tmp_path / "agent.sqlite"}"',
                "",
            ]
        )
    )
    config_path.chmod(0o600)
    env = dict(os.environ, PYTHONPATH=str(root))
    argv = [sys.executable, "-m", "agent.cli.main", "--config", str(config_path)]

    def cycles() -> int:
        text = store.get_meta("last_cycle")
        return 0 if text is None else int(text.split('"cycle": ')[1].split(",")[0])

    async def wait_cycles(count: int) -> None:
        target = cycles() + count
        deadline = time.monotonic() + 20
        while cycles() < target:
            assert time.monotonic() < deadline, "the daemon stopped cycling"
            await trio.sleep(0.2)

    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log_file:
        daemon = await trio.lowlevel.open_process(
            [*argv, "run"], stdout=log_file, stderr=log_file, env=env
        )
        try:
            await wait_cycles(1)
            bmcs[1].clear_calls()
            action = await trio.run_process(
                [*argv, "power", "osim-1", "off", "--wait"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
            )
            assert action.returncode == 0, action.stderr
            assert action.stdout.decode().strip() == "osim-1: power off done, now power off"
            await wait_cycles(2)
            # The daemon (force mode) did not turn it back on: it never asked ipmi_sim to.
            assert "set power 1" not in bmcs[1].calls()
            assert "set power 0" in bmcs[1].calls()
            assert not bmcs[1].power_on
            assert store.get_node("osim-1").power_state == POWER_OFF
        finally:
            daemon.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                status = await daemon.wait()
    assert status == 0, log_path.read_text()
