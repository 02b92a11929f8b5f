"""The sync service on trio's MockClock with fake BMCs and a real SQLite store."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import attrs
import pytest
import trio
import trio.testing

from agent.bmc.pool import open_bmc_pool
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.nova.config import NovaConfig
from agent.storeio import AsyncStore
from agent.sync.daemon import run_service
from agent.sync.policy import FAULT_POWER_FAILURE, POWER_OFF, POWER_ON
from agent.sync.service import (
    META_LAST_CYCLE,
    SyncService,
    jitter_delay,
)
from agent.sync.sizing import failing_lane_size
from store import Store, open_store
from tests.agent.fake_bmc import FakeFleet, add_nodes

P = ParamSpec("P")
R = TypeVar("R")
EPOCH = 1_800_000_000.0


class InlineStore(AsyncStore):
    """Runs store calls in the trio thread, so MockClock's autojump never fires mid-call."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.applies = 0

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        await trio.lowlevel.checkpoint()
        return function(*args, **kwargs)


def wall() -> float:
    return EPOCH + trio.current_time()


def make_config(**conductor: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "sync_power_state_interval": 60.0,
        "sync_power_state_workers": 8,
        "sync_node_timeout": 15.0,
        "sync_jitter_window": 0.0,
        "power_failure_recovery_interval": 300.0,
        "lock_ttl": 120.0,
    }
    settings.update(conductor)
    ipmi = IpmiConfig(keepalive_interval=25.0)
    # Sending on, so changes queue their Nova events (with it off nothing is queued).
    nova = NovaConfig(send_power_notifications=True)
    return AgentConfig(source="test", conductor=ConductorConfig(**settings), ipmi=ipmi, nova=nova)


@pytest.fixture(params=["sqlite", "json"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    with open_store(str(tmp_path / f"agent.{request.param}"), request.param) as opened:
        yield opened


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


class Harness:
    """A SyncService over fake BMCs; ``async with Harness(...) as h`` gives h.service."""

    def __init__(self, store: Store, fleet: FakeFleet, config: AgentConfig) -> None:
        self.store = store
        self.fleet = fleet
        self.config = config
        self.astore = InlineStore(store)

    async def __aenter__(self) -> SyncService:
        self._pool_cm = open_bmc_pool(
            self.fleet.opener,
            keepalive_interval=self.config.ipmi.keepalive_interval,
            min_command_interval=self.config.conductor.min_command_interval,
        )
        pool = await self._pool_cm.__aenter__()
        return SyncService(self.config, self.astore, pool, wall_clock=wall, holder="test:1:sync")

    async def __aexit__(self, *exc: object) -> None:
        await self._pool_cm.__aexit__(None, None, None)


def power(store: Store, name: str) -> str | None:
    return store.get_node(name).power_state


# --- Ironic's rules, end to end through the service ---------------------------------------


async def test_first_cycle_records_hardware_and_queues_notifications(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    names = add_nodes(store, fleet, 4, instance=True)
    fleet[10002].on = False
    async with Harness(store, fleet, make_config()) as service:
        report = await service.run_cycle()
    assert [power(store, n) for n in names] == [POWER_ON, POWER_OFF, POWER_ON, POWER_ON]
    assert report.summary()["changed"] == 4
    assert {r.action for r in report.results} == {"record"}
    assert store.notification_counts()["pending"] == 4
    history = store.history(names[1])
    assert (history[0].from_state, history[0].to_state, history[0].cause) == (
        None,
        POWER_OFF,
        "sync",
    )
    assert store.get_node(names[0]).last_seen_at == pytest.approx(wall(), abs=1.0)


async def test_force_drives_hardware_back_and_counts_the_correction(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1, instance=True)
    async with Harness(store, fleet, make_config()) as service:
        await service.run_cycle()  # records power on
        fleet[10001].on = False  # someone pulled the plug out of band
        report = await service.run_cycle()
        node = store.get_node(name)
        assert fleet[10001].on is True  # driven back to the record
        assert report.results[0].action == "forced"
        assert node.power_state == POWER_ON
        assert node.sync_failures == 1  # a corrected mismatch counts, as in Ironic
        assert node.reservation is None  # the lock was released
        assert [c for _, c in fleet[10001].commands if c != "status"] == ["on"]
        assert store.history(name)[0].cause == "sync"
        assert store.notification_counts()["pending"] == 1  # only the first recording
        await service.run_cycle()
        assert store.get_node(name).sync_failures == 0  # a matching read clears it


async def test_without_force_the_record_follows_the_hardware(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1, instance=True)
    config = make_config(force_power_state_during_sync=False)
    async with Harness(store, fleet, config) as service:
        await service.run_cycle()
        fleet[10001].on = False
        report = await service.run_cycle()
    assert report.results[0].action == "record-hardware"
    assert fleet[10001].on is False
    assert power(store, name) == POWER_OFF
    assert [c for _, c in fleet[10001].commands if c != "status"] == []
    assert store.notification_counts()["pending"] == 1  # POWER_OFF supersedes POWER_ON
    assert store.notification_counts()["superseded"] == 1


async def test_max_retries_then_maintenance_then_recovery(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1, instance=True)
    async with Harness(store, fleet, make_config(power_state_sync_max_retries=2)) as service:
        await service.run_cycle()
        fleet[10001].error = "completion code 0xd4 (insufficient privilege) from BMC"
        for attempt in (1, 2):
            await service.run_cycle()
            node = store.get_node(name)
            assert (node.sync_failures, node.maintenance) == (attempt, False)
            assert node.power_state == POWER_ON
        report = await service.run_cycle()
        node = store.get_node(name)
        assert report.results[0].action == "maintenance"
        assert node.maintenance and node.fault == FAULT_POWER_FAILURE
        assert node.power_state is None
        assert node.maintenance_reason is not None
        assert "0xd4 (insufficient privilege)" in node.maintenance_reason
        # In maintenance: the sync leaves it alone, recovery probes it.
        report = await service.run_cycle()
        assert report.results[0].action == "skip"
        report = await service.run_recovery()
        assert report.results[0].action == "still-failing"
        assert store.get_node(name).maintenance
        fleet[10001].error = None
        report = await service.run_recovery()
        node = store.get_node(name)
        assert report.results[0].action == "recovered"
        assert not node.maintenance and node.fault is None and node.maintenance_reason is None
        assert (node.power_state, node.sync_failures) == (POWER_ON, 0)
        assert [h.cause for h in store.history(name)][:2] == ["recovery", "max-retries"]


async def test_recovery_never_clears_an_operator_maintenance(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    store.update_node(name, maintenance=True, maintenance_reason="rack move")
    async with Harness(store, fleet, make_config()) as service:
        assert (await service.run_recovery()).results == ()
        report = await service.run_cycle()
    assert report.results[0].action == "skip"
    node = store.get_node(name)
    assert node.maintenance and node.maintenance_reason == "rack move"
    assert fleet[10001].commands == []


# --- scheduling ---------------------------------------------------------------------------


async def test_a_hanging_bmc_costs_one_deadline_and_does_not_stall_the_others(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    names = add_nodes(store, fleet, 20)
    fleet[10003].hang = True
    fleet[10011].hang = True
    config = make_config(sync_power_state_workers=2, sync_node_timeout=5.0)
    async with Harness(store, fleet, config) as service:
        report = await service.run_cycle()
    by_name = {r.name: r for r in report.results}
    assert by_name[names[2]].action == "read-failed"
    assert by_name[names[2]].error is not None
    assert "sync_node_timeout (5 s) during login to 127.0.0.1:10003" in by_name[names[2]].error
    assert sum(1 for r in report.results if r.action == "record") == 18
    # Two hanging nodes at two workers: each costs its deadline once, the 18 others
    # still run (virtual time, deterministic): far less than 20 deadlines.
    assert 5.0 <= report.duration < 5.0 * 2 + 1.0


@pytest.mark.parametrize(
    ("failing_workers", "shortest", "longest"), [(1, 47.9, 60.0), (8, 7.9, 9.0)]
)
async def test_nodes_that_failed_last_cycle_wait_in_their_own_lane(
    store: Store,
    fleet: FakeFleet,
    autojump_clock: trio.testing.MockClock,
    failing_workers: int,
    shortest: float,
    longest: float,
) -> None:
    names = add_nodes(store, fleet, 12)
    dead = [10001 + i for i in range(6)]
    config = make_config(
        sync_power_state_workers=2,
        sync_failing_node_workers=failing_workers,
        sync_node_timeout=8.0,
    )
    async with Harness(store, fleet, config) as service:
        await service.run_cycle()
        for port in dead:
            fleet[port].hang = True
        await service.run_cycle()  # the 6 hang in the healthy lane once and are marked failing
        report = await service.run_cycle()
    # With one failing slot the 6 dead BMCs cost a deadline each, one after the other; with
    # enough slots they wait side by side and the cycle costs one deadline.
    assert shortest <= report.duration <= longest
    actions = {result.name: result.action for result in report.results}
    assert [actions[name] for name in names[6:]] == ["in-sync"] * 6
    assert all(actions[name] == "read-failed" for name in names[:6])


async def test_cycles_never_overlap_and_an_overrun_is_a_warning(
    store: Store,
    fleet: FakeFleet,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_nodes(store, fleet, 3)
    for port in (10001, 10002, 10003):
        fleet[port].hang = True
    config = make_config(
        sync_power_state_interval=10.0,
        sync_power_state_workers=1,
        sync_failing_node_workers=1,  # keep the hanging nodes queued behind each other
        sync_node_timeout=8.0,
    )
    starts: list[float] = []
    running: list[int] = []
    async with Harness(store, fleet, config) as service:
        original = service.run_cycle

        async def watched() -> Any:
            starts.append(trio.current_time())
            running.append(service.cycles_running)
            return await original()

        service.run_cycle = watched  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="powersync.sync"):
            with trio.move_on_after(80):
                await service.sync_loop()
    assert len(starts) >= 2
    assert running == [0] * len(running)  # no cycle ever started while one ran
    gaps = [b - a for a, b in itertools_pairwise(starts)]
    # 3 hanging nodes x 8 s at one worker and one silent slot: the first cycle lets one wait
    # aside (16 s), later ones queue all three in the failing lane (24 s).
    assert all(gap >= 16.0 for gap in gaps)
    warnings = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
    assert warnings and "sync_power_state_workers (now 1)" in warnings[0]


def itertools_pairwise(values: list[float]) -> list[tuple[float, float]]:
    return list(itertools.pairwise(values))


async def test_cycles_follow_the_interval(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    add_nodes(store, fleet, 2)
    starts: list[float] = []
    async with Harness(store, fleet, make_config(sync_power_state_interval=30.0)) as service:
        original = service.run_cycle

        async def watched() -> Any:
            starts.append(trio.current_time())
            return await original()

        service.run_cycle = watched  # type: ignore[method-assign]
        with trio.move_on_after(95):
            await service.sync_loop()
    assert [round(s - starts[0]) for s in starts] == [0, 30, 60, 90]


async def test_node_starts_are_jittered_deterministically(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    add_nodes(store, fleet, 6)
    async with Harness(store, fleet, make_config(sync_jitter_window=4.0)) as service:
        start = trio.current_time()
        await service.run_cycle()
    for node in store.list_nodes():
        first_command = fleet.bmcs[("127.0.0.1", node.bmc_port)].commands[0][0]
        expected = jitter_delay(node.uuid, 4.0)
        assert 0.0 <= expected < 4.0
        # the login (0.01 s of virtual time) comes between the start and the command
        assert first_command - start == pytest.approx(expected + 0.01, abs=1e-6)
    assert len({jitter_delay(n.uuid, 4.0) for n in store.list_nodes()}) == 6


async def test_one_request_in_flight_per_bmc_and_min_interval(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    bmc = fleet.add(10001)
    for index in range(4):  # four nodes behind one BMC endpoint (a chassis manager)
        store.add_node(
            name=f"blade-{index}",
            bmc_address="127.0.0.1",
            bmc_port=10001,
            bmc_username="admin",
            bmc_password="x",
        )
    config = make_config(min_command_interval=2.0)
    async with Harness(store, fleet, config) as service:
        await service.run_cycle()
    assert bmc.max_in_flight == 1
    times = [t for t, _ in bmc.commands]
    assert len(times) == 4
    assert all(b - a >= 2.0 for a, b in itertools_pairwise(times))


async def test_one_batch_per_cycle(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    add_nodes(store, fleet, 10)
    calls: list[int] = []
    original = store.apply

    def counting_apply(changes: Any, **kwargs: Any) -> list[str]:
        calls.append(len(changes))
        return original(changes, **kwargs)

    store.apply = counting_apply  # type: ignore[method-assign]
    async with Harness(store, fleet, make_config()) as service:
        await service.run_cycle()
        await service.run_cycle()
    assert calls == [10, 10]  # every node is seen each cycle (last_seen_at), in one batch


# --- sessions -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "logins"), [("persistent", 1), ("per-cycle", 3)])
async def test_session_modes(
    store: Store,
    fleet: FakeFleet,
    autojump_clock: trio.testing.MockClock,
    mode: str,
    logins: int,
) -> None:
    add_nodes(store, fleet, 2, session_mode=mode)
    async with Harness(store, fleet, make_config()) as service:
        for _ in range(3):
            await service.run_cycle()
        await trio.sleep(1)
    for bmc in fleet.bmcs.values():
        assert bmc.logins == logins
        assert bmc.closes == logins  # every session closed, the long-lived ones at the end


async def test_idle_persistent_sessions_get_keepalives(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    add_nodes(store, fleet, 1)
    async with Harness(store, fleet, make_config()) as service:
        await service.run_cycle()
        await trio.sleep(60)  # keepalive_interval is 25 s
    assert fleet[10001].keepalives == 2
    assert fleet[10001].logins == 1


async def test_a_failed_persistent_session_is_replaced(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    async with Harness(store, fleet, make_config()) as service:
        await service.run_cycle()
        fleet[10001].error = "session lost"
        await service.run_cycle()
        fleet[10001].error = None
        await service.run_cycle()
    assert fleet[10001].logins == 2
    assert store.get_node(name).sync_failures == 0


# --- locks and concurrent edits ------------------------------------------------------------


async def test_locked_nodes_are_skipped_and_expired_locks_taken_over(
    store: Store,
    fleet: FakeFleet,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = add_nodes(store, fleet, 2)
    async with Harness(store, fleet, make_config()) as service:
        await service.run_cycle()
        fleet[10001].on = False
        fleet[10002].on = False
        assert store.acquire_lock(store.get_node(names[0]).uuid, "other:9:cli", ttl=600, now=wall())
        # a killed agent's lock that expired 1 s ago
        assert store.acquire_lock(
            store.get_node(names[1]).uuid, "dead:7:sync", ttl=1, now=wall() - 2
        )
        with caplog.at_level(logging.WARNING, logger="powersync.sync"):
            report = await service.run_cycle()
    by_name = {r.name: r for r in report.results}
    assert by_name[names[0]].action == "skip"
    assert by_name[names[0]].detail == "locked by other:9:cli"
    assert fleet[10001].on is False  # not touched
    assert by_name[names[1]].action == "forced"
    assert fleet[10002].on is True
    assert store.get_node(names[1]).reservation is None
    assert any(
        "took over the expired lock of dead:7:sync" in r.getMessage() for r in caplog.records
    )


async def test_an_abandoned_power_action_target_is_cleared(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    node = store.get_node(name)
    store.apply([_target_change(node.uuid, POWER_OFF)])
    async with Harness(store, fleet, make_config()) as service:
        report = await service.run_cycle()
    node = store.get_node(name)
    assert node.target_power_state is None
    assert node.last_error is not None and "abandoned" in node.last_error
    assert report.results[0].action == "record"


def _target_change(uuid: str, target: str) -> Any:
    from store import NodeChange

    return NodeChange(uuid, fields={"target_power_state": target})


async def test_a_node_changed_during_the_cycle_keeps_the_newer_state(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    bmc = fleet[10001]
    bmc.command_time = 5.0
    async with Harness(store, fleet, make_config(force_power_state_during_sync=False)) as service:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.run_cycle)
            await trio.sleep(2)  # the read is in flight
            store.update_node(name, maintenance=True, maintenance_reason="operator")
        report = service.last_report
    assert report is not None and report.dropped == (name,)
    node = store.get_node(name)
    assert node.power_state is None and node.maintenance_reason == "operator"


# --- the daemon -----------------------------------------------------------------------------


async def test_graceful_stop_finishes_quickly_and_closes_sessions(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    names = add_nodes(store, fleet, 5)
    fleet[10005].hang = True
    config = make_config(sync_power_state_interval=20.0, sync_node_timeout=15.0)
    astore = InlineStore(store)
    async with trio.open_nursery() as nursery:
        service: SyncService = await nursery.start(
            lambda task_status: run_service(
                config,
                astore,
                bmc_opener=fleet.opener,
                handle_signals=False,
                wall_clock=wall,
                task_status=task_status,
            )
        )
        await trio.sleep(25)  # the second cycle is waiting on the hanging BMC
        stop_at = trio.current_time()
        service.stop(grace=3.0)
    assert trio.current_time() - stop_at <= 3.0 + 3.5  # grace + session close bound
    for port in (10001, 10002, 10003, 10004):
        assert fleet[port].logins == fleet[port].closes == 1
    summary = store.get_meta(META_LAST_CYCLE)
    assert summary is not None and '"nodes": 5' in summary
    report = service.last_report
    assert report is not None
    assert [r.detail for r in report.results if r.name == names[4]] == ["cut short by shutdown"]
    assert all(power(store, n) == POWER_ON for n in names[:4])


async def test_static_nodes_are_upserted_at_start(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    from agent.config.nodes import StaticNode

    fleet.add(10001, on=False)
    static = StaticNode(
        name="static-1",
        bmc_address="127.0.0.1",
        bmc_username="admin",
        bmc_password="pw",
        bmc_port=10001,
    )
    config = attrs.evolve(make_config(), nodes=(static,))
    async with trio.open_nursery() as nursery:
        service: SyncService = await nursery.start(
            lambda task_status: run_service(
                config,
                InlineStore(store),
                bmc_opener=fleet.opener,
                handle_signals=False,
                wall_clock=wall,
                task_status=task_status,
            )
        )
        await trio.sleep(1)
        service.stop()
    node = store.get_node("static-1")
    assert node.power_state == POWER_OFF
    assert node.cipher_suites == (17, 3)


# --- metrics --------------------------------------------------------------------------------


async def test_metrics_follow_the_cycles(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    from agent.metrics.sync import ServiceMetrics

    names = add_nodes(store, fleet, 4, instance=True)
    fleet[10004].error = "completion code 0xc3 (timeout)"
    metrics = ServiceMetrics(wall_clock=wall)
    async with Harness(store, fleet, make_config()) as service:
        service.metrics = metrics
        await service.run_cycle()
        await trio.sleep(30)
        text = metrics.registry.render()
    assert 'powersync_nodes{power_state="power on"} 3' in text
    assert 'powersync_nodes{power_state="unknown"} 1' in text
    assert "powersync_sync_cycle_nodes 4" in text
    assert 'powersync_sync_node_results_total{action="record"} 3' in text
    assert 'powersync_sync_node_results_total{action="read-failed"} 1' in text
    assert 'powersync_bmc_failures_total{type="FakeBmcError"} 1' in text
    assert 'powersync_notifications{status="pending"} 3' in text
    assert "powersync_bmc_rtt_seconds_count 3" in text
    assert "powersync_bmc_sessions_open 3" in text
    # the age is computed when scraped: 30 s of virtual time after the reads
    line = next(x for x in text.splitlines() if f'node="{names[0]}"' in x)
    assert float(line.split()[-1]) == pytest.approx(30.0, abs=0.5)
    assert f'node="{names[3]}"' not in text  # never read successfully


async def test_metrics_endpoint_served_by_the_daemon(store: Store, fleet: FakeFleet) -> None:
    import httpx

    from agent.metrics.sync import ServiceMetrics

    add_nodes(store, fleet, 2)
    metrics = ServiceMetrics(host="127.0.0.1", port=0)
    config = make_config(sync_power_state_interval=1.0, sync_node_timeout=0.5)
    async with trio.open_nursery() as nursery:
        service: SyncService = await nursery.start(
            lambda task_status: run_service(
                config,
                AsyncStore(store),
                bmc_opener=fleet.opener,
                metrics=metrics,
                handle_signals=False,
                task_status=task_status,
            )
        )
        with trio.fail_after(10):
            while service.last_report is None:
                await trio.sleep(0.05)
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{metrics.bound_port}/metrics")
        service.stop()
    assert response.status_code == 200
    assert 'powersync_nodes{power_state="power on"} 2' in response.text


async def test_a_deleted_node_loses_its_session(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    names = add_nodes(store, fleet, 2)
    async with Harness(store, fleet, make_config()) as service:
        await service.run_cycle()
        assert service.pool.open_sessions() == 2
        store.delete_node(names[0])
        await service.run_cycle()
        await trio.sleep(1)
        assert fleet[10001].closes == 1  # Close Session sent while the pool lives on
        assert service.pool.open_sessions() == 1


async def test_sync_once_shows_progress_for_large_fleets(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    import io

    from agent.cli.sync import format_result, format_summary, sync_once

    add_nodes(store, fleet, 60)
    for bmc in fleet.bmcs.values():
        bmc.command_time = 0.1
    progress = io.StringIO()
    report = await sync_once(
        make_config(sync_power_state_workers=2), store, opener=fleet.opener, progress=progress
    )
    lines = progress.getvalue().split("\r")
    assert any(line.endswith("/60 nodes") for line in lines)
    assert report.summary()["ok"] == 60
    assert format_result(report.results[0]) == "node-0000: unknown -> power on  record"
    assert format_summary(report.summary()).startswith("summary: 60 nodes, 60 read, 0 failed")
    for bmc in fleet.bmcs.values():
        assert bmc.closes == bmc.logins == 1  # the one-shot closes its sessions


async def test_sync_once_starts_every_node_at_once_unless_asked_to_jitter(
    store: Store, fleet: FakeFleet
) -> None:
    # Real clock: bounds that only slowness could cross in the safe direction.
    from agent.cli.sync import sync_once

    add_nodes(store, fleet, 20)
    started = trio.current_time()
    report = await sync_once(make_config(sync_jitter_window=8.0), store, opener=fleet.opener)
    assert report.summary()["ok"] == 20
    assert trio.current_time() - started < 6.0  # nobody waited for a slot in the 8 s window
    started = trio.current_time()
    await sync_once(make_config(sync_jitter_window=1.0), store, opener=fleet.opener, jitter=True)
    assert trio.current_time() - started > 0.3  # 20 starts spread over the 1 s window


async def test_a_bmc_that_stops_answering_mid_session_costs_one_deadline(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    (name,) = add_nodes(store, fleet, 1)
    async with Harness(store, fleet, make_config(sync_node_timeout=5.0)) as service:
        await service.run_cycle()
        fleet[10001].hang = True
        report = await service.run_cycle()
        assert report.duration == pytest.approx(5.0, abs=0.1)
        (result,) = report.results
        assert result.action == "read-failed"
        assert result.error is not None
        assert result.error.endswith("(5 s) during a command to 127.0.0.1:10001")
        await trio.sleep(1)
        # The client forgets an abandoned request, so the session is kept (BMCs have few
        # session slots); a BMC that stays silent fails the next command, which closes it.
        assert fleet[10001].closes == 0
        assert service.pool.open_sessions() == 1
        fleet[10001].hang = False
        report = await service.run_cycle()
    assert report.results[0].action == "in-sync"
    assert fleet[10001].logins == 1
    assert store.get_node(name).sync_failures == 0


def test_retry_budget_matches_the_client_policy() -> None:
    from agent.drivers.ipmi import IpmiDriver

    assert IpmiDriver(IpmiConfig()).retry_budget == pytest.approx(1 + 2 + 4 + 4)  # 11 s
    fast = IpmiConfig(retry_timeout=0.2, retry_backoff=2.0, retry_max_timeout=0.4, retries=4)
    assert IpmiDriver(fast).retry_budget == pytest.approx(0.2 + 0.4 + 0.4 + 0.4 + 0.4)


async def test_sync_and_recovery_passes_are_numbered_separately(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    add_nodes(store, fleet, 1)
    async with Harness(store, fleet, make_config()) as service:
        assert (await service.run_cycle()).cycle == 1
        assert (await service.run_recovery()).cycle == 1
        assert (await service.run_cycle()).cycle == 2
    summary = store.get_meta(META_LAST_CYCLE)
    assert summary is not None and '"cycle": 2' in summary


async def test_a_bug_in_the_rules_is_not_counted_as_a_bmc_failure(
    store: Store,
    fleet: FakeFleet,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The BMC answers; the policy then fails. Before the seam, that error was caught with
    # the BMC's and recorded as a failed read (max_retries of those put a healthy node into
    # "power failure" maintenance). Now it goes up as the bug it is, and nothing is counted.
    (name,) = add_nodes(store, fleet, 1)

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug in the sync rules")

    monkeypatch.setattr("agent.sync.service.decide_sync", broken)
    async with Harness(store, fleet, make_config(power_state_sync_max_retries=0)) as service:
        with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
            await service.run_cycle()
    node = store.get_node(name)
    assert node.sync_failures == 0
    assert not node.maintenance and node.fault is None and node.last_error is None


async def test_nodes_in_ironic_sync_excluded_provision_states_are_left_alone(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    # Found: an `enroll` node was synced (read, recorded, even forced).
    names = add_nodes(store, fleet, 3)
    store.update_node(names[0], provision_state="enroll")
    store.update_node(names[1], provision_state="clean wait")
    store.update_node(names[2], provision_state="active")
    async with Harness(store, fleet, make_config()) as service:
        report = await service.run_cycle()
    skipped = {r.name: r.detail for r in report.results if r.action == "skip"}
    assert set(skipped) == {names[0], names[1]}, report.results
    assert fleet[10001].commands == [] and fleet[10002].commands == []
    assert power(store, names[0]) is None and power(store, names[2]) == POWER_ON


async def test_bmcs_in_flight_stay_within_workers_plus_failing_workers(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    # Found: the sync pass and the recovery pass each had the failing lane's budget, so slow
    # logins (stepping aside) plus recovery probes put more BMCs in flight than configured.
    names = add_nodes(store, fleet, 24)
    for bmc in fleet.bmcs.values():
        bmc.login_time = 3.0  # slow logins: healthy nodes stall and step aside
    for name in names[18:]:
        store.update_node(name, maintenance=True, fault=FAULT_POWER_FAILURE)
    config = make_config(sync_power_state_workers=2, sync_failing_node_workers=3)
    async with Harness(store, fleet, config) as service, trio.open_nursery() as nursery:
        nursery.start_soon(service.run_recovery)
        await service.run_cycle()
    assert fleet.max_in_flight <= 2 + 3, fleet.max_in_flight
    assert fleet.max_in_flight >= 4  # the lanes did run side by side


async def test_a_config_that_cannot_keep_its_interval_is_warned_once_and_again_on_reload(
    store: Store,
    fleet: FakeFleet,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_nodes(store, fleet, 6)
    config = make_config(
        sync_power_state_interval=10.0,
        sync_power_state_workers=2,
        sync_failing_node_workers=2,
        sync_node_timeout=8.0,
        sync_jitter_window=4.0,
    )
    async with Harness(store, fleet, config) as service:
        with caplog.at_level(logging.WARNING, logger="powersync.sync"):
            await service.run_cycle()
            for port in range(10001, 10006):
                fleet[port].hang = True
            await service.run_cycle()  # the 5 go silent: failing from now on
            await service.run_cycle()
            await service.run_cycle()
            service.reconfigure(config)
            await service.run_cycle()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    spread = [m for m in messages if m.startswith("sync_jitter_window (4 s) + sync_node_timeout")]
    waves = [m for m in messages if "nodes are failing but sync_failing_node_workers is 2" in m]
    assert len(spread) == 2, messages  # at the first cycle and after the reload, not per cycle
    assert "raise sync_power_state_interval to at least 12 s" in spread[0]
    assert len(waves) == 2, messages
    assert waves[0].startswith("5 nodes are failing") and "in 3 waves, up to 24 s" in waves[0]
    assert "more than the interval (10 s)" in waves[0]


async def test_an_unset_failing_lane_is_sized_from_the_failing_nodes(
    store: Store, fleet: FakeFleet, autojump_clock: trio.testing.MockClock
) -> None:
    add_nodes(store, fleet, 4)
    config = make_config(sync_failing_node_workers=None, sync_node_timeout=8.0)
    async with Harness(store, fleet, config) as service:
        assert service.failing_workers == 128
        await service.run_cycle()
    assert failing_lane_size(None, 3) == 128
    assert failing_lane_size(None, 700) == 700
    assert failing_lane_size(None, 5000) == 1024  # a bound on BMCs in flight all the same
    assert failing_lane_size(16, 700) == 16  # an operator's choice is kept
