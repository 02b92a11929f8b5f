"""Power actions (agent.sync.actions) on fake BMCs and a real SQLite store, on MockClock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from agent.errors import NodeError
from agent.nova.config import NovaConfig
from agent.sync.actions import ActionResult, power_action, power_status
from agent.sync.policy import POWER_OFF, POWER_ON
from store import Store, open_store
from tests.agent.fake_bmc import FakeFleet, add_nodes
from tests.agent.test_service import InlineStore, make_config, wall

# Notifications on: the actions' Nova events are queued only then.
CONFIG = attrs.evolve(
    make_config(power_state_change_timeout=30.0), nova=NovaConfig(send_power_notifications=True)
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(str(tmp_path / "agent.sqlite")) as opened:
        yield opened


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


async def act(
    store: Store, fleet: FakeFleet, name: str, action: str, **kwargs: object
) -> ActionResult:
    return await power_action(
        InlineStore(store),
        name,
        action,
        config=CONFIG,
        opener=fleet.opener,
        holder="test:2:power",
        wall_clock=wall,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_power_off_records_history_and_queues_nova(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1, instance=True)
    store.update_node(name, power_state=POWER_ON)
    result = await act(store, fleet, name, "off")
    node = store.get_node(name)
    assert fleet[10001].on is False
    assert (node.power_state, node.target_power_state, node.reservation) == (POWER_OFF, None, None)
    entry = store.history(name)[0]
    assert (entry.from_state, entry.to_state, entry.cause) == (POWER_ON, POWER_OFF, "action")
    (pending,) = store.due_notifications(now=wall() + 1)
    assert pending.power_state == POWER_OFF
    assert result.sent is True


async def test_already_in_state_sends_nothing(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    result = await act(store, fleet, name, "on")
    assert result.sent is False
    assert [c for _, c in fleet[10001].commands if c != "status"] == []
    assert store.get_node(name).power_state == POWER_ON


async def test_cycle_of_an_off_node_powers_it_on(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1, on=False)
    await act(store, fleet, name, "cycle")
    assert fleet[10001].on is True
    assert [c for _, c in fleet[10001].commands if c != "status"] == ["on"]
    assert store.get_node(name).power_state == POWER_ON


async def test_soft_off_waits_for_the_operating_system(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    bmc = fleet[10001]
    bmc.follows_commands = False  # the OS takes its time

    async def shut_down_later() -> None:
        await trio.sleep(12)
        bmc.on = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shut_down_later)
        await act(store, fleet, name, "soft-off")
    assert trio.current_time() >= 12
    assert store.get_node(name).power_state == POWER_OFF


async def test_target_not_reached_is_an_error_with_the_real_state_recorded(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    store.update_node(name, power_state=POWER_ON)
    fleet[10001].follows_commands = False
    with pytest.raises(
        NodeError, match=r"power off not reached within 5 s \(hardware reports power on\)"
    ):
        await act(store, fleet, name, "off", wait=True, wait_limit=5.0)
    node = store.get_node(name)
    assert (node.power_state, node.target_power_state, node.reservation) == (POWER_ON, None, None)
    assert node.last_error is not None and "not reached" in node.last_error


async def test_bmc_error_releases_the_lock_and_is_recorded(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    fleet[10001].login_error = "RAKP2 check failed: wrong password for admin"
    with pytest.raises(NodeError, match="wrong password for admin"):
        await act(store, fleet, name, "off")
    node = store.get_node(name)
    assert node.reservation is None and node.target_power_state is None
    assert node.last_error is not None and "wrong password" in node.last_error


async def test_cancelled_action_still_releases_the_lock(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    fleet[10001].hang = True
    with trio.move_on_after(1):
        await act(store, fleet, name, "off")
    node = store.get_node(name)
    assert node.reservation is None


async def test_refusals_are_one_clear_line(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    names = add_nodes(store, fleet, 3)
    with pytest.raises(NodeError, match="node nope: no such node"):
        await act(store, fleet, "nope", "on")
    uuid = store.get_node(names[1]).uuid
    assert store.acquire_lock(uuid, "daemon:1:sync", ttl=300, now=wall())
    with pytest.raises(NodeError, match="is locked by daemon:1:sync"):
        await act(store, fleet, names[1], "off")
    assert fleet[10002].commands == []
    with pytest.raises(NodeError, match="unknown power action"):
        await act(store, fleet, names[2], "explode")


async def test_the_sync_skips_a_node_while_an_action_holds_it(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    from agent.bmc.pool import open_bmc_pool
    from agent.sync.service import SyncService

    (name,) = add_nodes(store, fleet, 1)
    store.update_node(name, power_state=POWER_ON)
    bmc = fleet[10001]
    bmc.follows_commands = False
    async with open_bmc_pool(fleet.opener) as pool:
        service = SyncService(CONFIG, InlineStore(store), pool, wall_clock=wall, holder="d:1:sync")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: act(store, fleet, name, "soft-off"))
            await trio.sleep(2)
            node = store.get_node(name)
            assert node.target_power_state == POWER_OFF
            report = await service.run_cycle()
            assert report.results[0].action == "skip"
            bmc.on = False
    assert store.get_node(name).power_state == POWER_OFF


async def test_status_reads_without_writing(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1, on=False)
    before = store.get_node(name)
    status = await power_status(
        InlineStore(store), name, config=CONFIG, opener=fleet.opener, read_within=5.0
    )
    assert (status.recorded, status.hardware, status.error) == (None, POWER_OFF, None)
    assert store.get_node(name) == before
    fleet[10001].hang = True
    status = await power_status(
        InlineStore(store), name, config=CONFIG, opener=fleet.opener, read_within=5.0
    )
    assert status.hardware is None and status.error == "no answer within 5 s"


# --- the command line -------------------------------------------------------------------------


def cli_config(tmp_path: Path) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "agent.sqlite"}"\n')
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["power", "nope", "on"], "powersync: node nope: no such node"),
        (
            ["sync"],
            "powersync: sync runs one cycle: use `powersync sync --once` (the daemon is `run`)",
        ),
    ],
)
def test_cli_refusals_are_one_line(
    tmp_path: Path,
    store: Store,
    fleet: FakeFleet,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    from agent.cli.main import main

    (name,) = add_nodes(store, fleet, 1)
    store.update_node(name, maintenance=True, maintenance_reason="rack move")
    status = main(["--config", cli_config(tmp_path), *argv])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.strip() == message
    assert "Traceback" not in captured.err


def test_cli_power_with_a_missing_store_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli.main import main

    config = tmp_path / "agent.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "missing.sqlite"}"\n')
    assert main(["--config", str(config), "power", "x", "status"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("powersync: store ") and "missing.sqlite does not exist" in err
    assert "\n" not in err
