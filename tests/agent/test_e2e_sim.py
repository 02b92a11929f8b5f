"""End to end against the simulator: real RMCP+ on loopback, a real SQLite store.

Out-of-band flips go through ipmitool (an independent client), so the agent is never the
only judge of what the BMCs were told. The last test runs the daemon and a power action as
two separate processes, as an operator would.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.bmc.pool import open_bmc_pool
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.drivers.ipmi import IpmiDriver
from agent.nova.config import NovaConfig
from agent.storeio import AsyncStore
from agent.sync.policy import FAULT_POWER_FAILURE, POWER_OFF, POWER_ON
from agent.sync.service import SyncService
from ipmi.sim import open_fleet, write_inventory
from store import Store, open_store
from tests.conftest import require_tool
from tests.peers.clients import ipmitool

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.peers

IPMI = IpmiConfig(retry_timeout=0.2, retry_backoff=2.0, retry_max_timeout=0.4, retries=4)


def config(**conductor: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "sync_power_state_workers": 8,
        "sync_node_timeout": 6.0,  # above a re-login after a lost session (2 x 1.8 s)
        "sync_jitter_window": 0.0,
        "power_state_sync_max_retries": 1,
    }
    settings.update(conductor)
    nova = NovaConfig(send_power_notifications=True)  # changes queue their Nova events
    return AgentConfig(source="e2e", conductor=ConductorConfig(**settings), ipmi=IPMI, nova=nova)


def opener() -> Any:
    return IpmiDriver(IPMI).open_session


def import_fleet(store: Store, fleet: Any, password: str) -> None:
    for bmc in fleet.bmcs:
        store.add_node(
            name=bmc.name,
            bmc_address=bmc.address,
            bmc_port=bmc.port,
            bmc_username="admin",
            bmc_password=password,
            instance_uuid=f"00000000-0000-4000-8000-{bmc.index:012d}",
        )


def word(on: bool) -> str:
    return POWER_ON if on else POWER_OFF


async def flip_with_ipmitool(
    fleet: Any, indexes: list[int], op: str, password: str, suite: int
) -> None:
    for index in indexes:
        bmc = fleet.bmcs[index]
        result = await ipmitool(
            bmc.address, bmc.port, username="admin", password=password, cipher_suite=suite, op=op
        ).arun()
        assert result.ok, result.output


async def test_two_hundred_bmcs_both_force_modes_with_ipmitool_flips(tmp_path: Path) -> None:
    require_tool("ipmitool")
    password = "e2e-" + secrets.token_hex(4)
    async with open_fleet(200, port_base=0, password=password, power_on=True) as fleet:
        with open_store(str(tmp_path / "e2e.sqlite")) as store:
            import_fleet(store, fleet, password)
            async with open_bmc_pool(opener()) as pool:
                forcing = SyncService(config(), AsyncStore(store), pool)
                report = await forcing.run_cycle()
                assert report.count("record") == 200
                assert {n.power_state for n in store.list_nodes()} == {POWER_ON}

                flipped = [5, 17, 42, 99, 150, 199]
                await flip_with_ipmitool(fleet, flipped, "off", password, suite=17)
                assert [fleet.bmcs[i].power_on for i in flipped] == [False] * 6
                report = await forcing.run_cycle()
                assert sorted(r.name for r in report.results if r.action == "forced") == [
                    fleet.bmcs[i].name for i in flipped
                ]
                assert all(bmc.power_on for bmc in fleet.bmcs)  # driven back on
                status = await ipmitool(
                    fleet.bmcs[5].address,
                    fleet.bmcs[5].port,
                    username="admin",
                    password=password,
                    cipher_suite=3,
                ).arun()
                assert status.power is True  # an independent client agrees
                assert pool.statistics().sessions_opened == 200  # long-lived sessions reused

                recording = SyncService(
                    config(force_power_state_during_sync=False), AsyncStore(store), pool
                )
                others = [0, 64, 128]
                await flip_with_ipmitool(fleet, others, "off", password, suite=3)
                report = await recording.run_cycle()
                changed = sorted(r.name for r in report.results if r.action == "record-hardware")
                assert changed == [fleet.bmcs[i].name for i in others]
                for bmc in fleet.bmcs:
                    assert store.get_node(bmc.name).power_state == word(bmc.power_on)
                assert [fleet.bmcs[i].power_on for i in others] == [False] * 3
                # Nova hears about each recorded change (the forced ones changed no record).
                assert store.notification_counts()["pending"] == 200
                assert store.notification_counts()["superseded"] == 3


async def test_loss_and_dead_bmcs_maintenance_then_recovery(tmp_path: Path) -> None:
    password = "e2e-" + secrets.token_hex(4)
    dead = {3, 70}
    async with open_fleet(
        120, port_base=0, password=password, power_on=True, faults={"loss": 0.05}, seed=11
    ) as fleet:
        for bmc in fleet.bmcs[::3]:
            bmc.set_power(False)
        with open_store(str(tmp_path / "e2e.sqlite")) as store:
            import_fleet(store, fleet, password)
            async with open_bmc_pool(opener()) as pool:
                service = SyncService(config(), AsyncStore(store), pool)
                await service.run_cycle()
                fleet.set_faults(dead=frozenset(dead))
                first = await service.run_cycle()
                second = await service.run_cycle()
                assert pool.statistics().retransmits > 0  # the loss was real and survived
                for index in dead:
                    name = fleet.bmcs[index].name
                    assert [r.action for r in first.results if r.name == name] == ["read-failed"]
                    assert [r.action for r in second.results if r.name == name] == ["maintenance"]
                    node = store.get_node(name)
                    assert node.last_error is not None
                    assert "NoResponseError" in node.last_error, node.last_error
                    assert node.maintenance and node.fault == FAULT_POWER_FAILURE
                    assert node.power_state is None
                    assert node.maintenance_reason is not None
                    assert "NoResponseError" in node.maintenance_reason
                    assert f":{fleet.bmcs[index].port}" in node.maintenance_reason
                for bmc in fleet.bmcs:
                    if bmc.index not in dead:
                        node = store.get_node(bmc.name)
                        assert not node.maintenance, node.last_error
                        assert node.power_state == word(bmc.power_on), node.last_error
                # A dead BMC costs about one deadline, not one per dead node.
                assert second.duration < 2 * config().conductor.sync_node_timeout, second.summary()

                fleet.set_faults(loss=0.0, dead=frozenset())
                report = await service.run_recovery()
                assert sorted(r.name for r in report.results if r.action == "recovered") == sorted(
                    fleet.bmcs[i].name for i in dead
                )
                for index in dead:
                    node = store.get_node(fleet.bmcs[index].name)
                    assert not node.maintenance and node.fault is None
                    assert node.power_state == word(fleet.bmcs[index].power_on)
                    assert node.sync_failures == 0


# --- the daemon and a power action in two processes -----------------------------------------


def cli(config_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli.main", "--config", str(config_path), *args]


def write_config(path: Path, store_path: Path) -> None:
    path.write_text(
        "\n".join(
            [
                "[conductor]",
                "sync_power_state_interval = 1.0",
                "sync_node_timeout = 0.8",
                "sync_jitter_window = 0.2",
                "power_state_change_timeout = 10",
                "lock_ttl = 30",
                "power_failure_recovery_interval = 2",
                "[ipmi]",
                "retry_timeout = 0.2",
                "retry_max_timeout = 0.4",
                "retries = 2",
                "[store]",
                f'path = "{store_path}"',
                "[logging]",
                'level = "info"',
                "",
            ]
        )
    )
    path.chmod(0o600)


async def wait_for(predicate: Any, *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # quick reads; the simulator must be read from the trio thread
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await trio.sleep(0.2)


async def test_daemon_and_power_action_in_separate_processes(tmp_path: Path) -> None:
    password = "e2e-" + secrets.token_hex(4)
    store_path = tmp_path / "agent.sqlite"
    config_path = tmp_path / "agent.toml"
    inventory = tmp_path / "nodes.toml"
    write_config(config_path, store_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    async with open_fleet(20, port_base=0, password=password, power_on=True) as fleet:
        write_inventory(str(inventory), fleet, "admin", password)
        done = await trio.run_process(
            cli(config_path, "node", "import", str(inventory)), capture_stdout=True, env=env
        )
        assert done.returncode == 0
        once = await trio.run_process(
            cli(config_path, "sync", "--once", "--json"), capture_stdout=True, env=env
        )
        document = json.loads(once.stdout)
        assert document["summary"]["nodes"] == 20
        assert {n["action"] for n in document["nodes"]} == {"record"}

        log_path = tmp_path / "daemon.log"
        with open(log_path, "wb") as log_file:
            daemon = await trio.lowlevel.open_process(
                cli(config_path, "run"), stdout=log_file, stderr=log_file, env=env
            )
            try:
                with open_store(str(store_path)) as store:
                    started = store.get_meta("last_cycle")

                    def new_cycle() -> bool:
                        return store.get_meta("last_cycle") != started

                    await wait_for(new_cycle, within=20, what="the daemon's first cycle")
                    # Out of band: the daemon (force mode) drives it back on.
                    fleet.bmcs[5].set_power(False)
                    await wait_for(lambda: fleet.bmcs[5].power_on, within=10, what="a forced fix")
                    # An operator powers a node off while the daemon runs.
                    action = await trio.run_process(
                        cli(config_path, "power", "sim-0003", "off", "--wait", "--json"),
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                        env=env,
                    )
                    assert action.returncode == 0, action.stderr
                    assert json.loads(action.stdout)["after"] == POWER_OFF
                    assert fleet.bmcs[3].power_on is False
                    mark = store.get_meta("last_cycle")
                    await wait_for(
                        lambda: store.get_meta("last_cycle") != mark, within=10, what="a cycle"
                    )
                    mark = store.get_meta("last_cycle")
                    await wait_for(
                        lambda: store.get_meta("last_cycle") != mark, within=10, what="a cycle"
                    )
                    # Two daemon cycles later the node is still off: the record follows the action.
                    assert fleet.bmcs[3].power_on is False
                    node = store.get_node("sim-0003")
                    assert (node.power_state, node.target_power_state) == (POWER_OFF, None)
                    assert store.history("sim-0003")[0].cause == "action"
                    # A node locked by someone else: one clear line, exit 1.
                    uuid = store.get_node("sim-0007").uuid
                    assert store.acquire_lock(uuid, "operator:42:maintenance", ttl=60)
                    refused = await trio.run_process(
                        cli(config_path, "power", "sim-0007", "off"),
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                        env=env,
                    )
                    assert refused.returncode == 1
                    assert refused.stderr.decode().strip() == (
                        "powersync: node sim-0007 is locked by operator:42:maintenance; "
                        "try again later"
                    )
                    assert store.release_lock(uuid, "operator:42:maintenance")
            finally:
                daemon.send_signal(signal.SIGTERM)
                with trio.fail_after(15):
                    status = await daemon.wait()
        output = log_path.read_text()
        assert status == 0, output
        assert "Traceback" not in output
        assert "SIGTERM received" in output
        assert password not in output
        with open_store(str(store_path)) as store:
            assert all(node.reservation is None for node in store.list_nodes())
            assert all(
                store.get_node(bmc.name).power_state == word(bmc.power_on) for bmc in fleet.bmcs
            )


def test_config_is_what_the_daemon_test_uses(tmp_path: Path) -> None:
    # The daemon test's config must load: a bad key would fail there with a less clear error.
    from agent.config.options import load_config

    path = tmp_path / "agent.toml"
    write_config(path, tmp_path / "s.sqlite")
    loaded = load_config(str(path))
    assert loaded.conductor.sync_power_state_interval == 1.0
    assert loaded.ipmi.retries == 2


async def test_sigterm_mid_cycle_with_hanging_bmcs_exits_cleanly(tmp_path: Path) -> None:
    password = "e2e-" + secrets.token_hex(4)
    store_path = tmp_path / "agent.sqlite"
    config_path = tmp_path / "agent.toml"
    config_path.write_text(
        "\n".join(
            [
                "[conductor]",
                "sync_power_state_interval = 30",
                "sync_node_timeout = 20",  # far longer than the shutdown may take
                "sync_jitter_window = 0",
                "sync_power_state_workers = 8",
                "[store]",
                f'path = "{store_path}"',
                "",
            ]
        )
    )
    config_path.chmod(0o600)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    async with open_fleet(12, port_base=0, password=password, power_on=True) as fleet:
        with open_store(str(store_path)) as store:
            import_fleet(store, fleet, password)
        # Logins complete, then every request is ignored: each node waits on its deadline.
        fleet.set_faults(hanging=frozenset({0, 1, 2, 3}))
        log_path = tmp_path / "daemon.log"
        with open(log_path, "wb") as log_file:
            daemon = await trio.lowlevel.open_process(
                cli(config_path, "run"), stdout=log_file, stderr=log_file, env=env
            )
            try:
                await wait_for(
                    lambda: sum(bmc.requests for bmc in fleet.bmcs[4:]) >= 8,
                    within=20,
                    what="the first cycle reading the healthy BMCs",
                )
                await trio.sleep(1.0)  # the hanging four are still waiting for answers
            finally:
                daemon.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                with trio.fail_after(20):
                    status = await daemon.wait()
        stopped_after = time.monotonic() - signalled
        output = log_path.read_text()
        assert status == 0, output
        assert stopped_after < 8.0, output  # grace (3 s) + session close, not the 20 s deadline
        assert "cut short by shutdown" in output
        assert "Traceback" not in output
        with open_store(str(store_path)) as store:
            summary = json.loads(store.get_meta("last_cycle") or "{}")
            assert summary["nodes"] == 12
            assert all(node.reservation is None for node in store.list_nodes())
            healthy = [store.get_node(bmc.name) for bmc in fleet.bmcs[4:]]
            assert sum(node.power_state == POWER_ON for node in healthy) >= 4
