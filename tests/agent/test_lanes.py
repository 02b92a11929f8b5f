"""The pass scheduler (agent.sync.lanes) on trio's MockClock: lanes, stalled workers, the pace."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from agent.sync.lanes import STALL_FACTOR, STALL_FLOOR, NodePace, run_lanes
from store import Store
from tests.agent.fake_bmc import FakeFleet, add_nodes
from tests.agent.test_service import Harness, make_config
from tests.agent.test_service import store as store


class Recorder:
    """A ``run`` callback: sleeps each item's duration, records concurrency and end times."""

    def __init__(self, durations: dict[str, float]) -> None:
        self.durations = durations
        self.running: set[str] = set()
        self.most_running = 0
        self.most_quick_running = 0
        self.ended: dict[str, float] = {}

    async def __call__(self, name: str) -> bool:
        self.running.add(name)
        self.most_running = max(self.most_running, len(self.running))
        quick = [n for n in self.running if self.durations[n] < 1.0]
        self.most_quick_running = max(self.most_quick_running, len(quick))
        try:
            await trio.sleep(self.durations[name])
        finally:
            self.running.discard(name)
        self.ended[name] = trio.current_time()
        return self.durations[name] < 1.0


def learned_pace(typical: float = 0.01, ceiling: float = 1.0) -> NodePace:
    pace = NodePace(ceiling=ceiling)
    pace.observe(typical)
    return pace


async def run(
    recorder: Recorder,
    healthy: list[str],
    failing: Sequence[str] = (),
    *,
    workers: int,
    failing_workers: int,
    pace: NodePace,
) -> tuple[float, int]:
    started = trio.current_time()
    stalls = await run_lanes(
        [(0.0, name) for name in healthy],
        [(0.0, name) for name in failing],
        workers=workers,
        failing_workers=failing_workers,
        started=started,
        stopping=trio.Event(),
        run=recorder,
        pace=pace,
    )
    return trio.current_time() - started, stalls


def test_pace_starts_at_the_ceiling_then_follows_typical_nodes_within_bounds() -> None:
    pace = NodePace(ceiling=1.0)
    assert pace.stall_after() == 1.0  # nothing learned yet: one retransmission timeout
    pace.observe(0.001)
    assert pace.stall_after() == STALL_FLOOR  # loopback-fast nodes: never below the floor
    for _ in range(200):
        pace.observe(0.1)
    assert pace.stall_after() == pytest.approx(STALL_FACTOR * 0.1, rel=0.01)
    for _ in range(200):
        pace.observe(5.0)
    assert pace.stall_after() == 1.0  # slow BMCs: never above the ceiling


async def test_nodes_that_go_silent_do_not_hold_the_healthy_workers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 6 of 40 healthy nodes went silent since the last pass (8 s each, at the queue's head).
    durations = {f"n{i:02d}": 8.0 if i < 6 else 0.01 for i in range(40)}
    recorder = Recorder(durations)
    elapsed, stalls = await run(
        recorder, sorted(durations), workers=2, failing_workers=8, pace=learned_pace()
    )
    assert len(recorder.ended) == 40
    assert stalls == 6
    # They wait side by side: the pass costs one silence, not 6 / 2 of them.
    assert 8.0 <= elapsed < 9.0
    # The quick nodes were all read long before the silent ones gave up.
    assert max(recorder.ended[n] for n, d in durations.items() if d < 1.0) < 2.0
    assert recorder.most_quick_running <= 2  # never more than `workers` nodes being read


async def test_silent_nodes_share_the_failing_lanes_slots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    durations = {f"f{i}": 8.0 for i in range(2)} | {f"h{i:02d}": 8.0 for i in range(3)}
    durations |= {f"q{i:02d}": 0.01 for i in range(20)}
    recorder = Recorder(durations)
    healthy = [n for n in sorted(durations) if not n.startswith("f")]  # h.. then q..
    elapsed, stalls = await run(
        recorder,
        healthy,
        ["f0", "f1"],
        workers=2,
        failing_workers=3,
        pace=learned_pace(),
    )
    assert len(recorder.ended) == 25
    assert stalls >= 1
    # 2 failing + 2 healthy workers + at most 3 silent in all: never more than 2 + 3 at once.
    assert recorder.most_running <= 5
    # f0 and f1 hold 2 slots and h00 stalls into the third. h01 and h02 find none free,
    # so they hold both healthy workers until the silences end at 8 s: the slots bound
    # how many nodes wait on silence, and the quick nodes wait for that.
    assert 8.0 <= elapsed < 9.0
    assert min(recorder.ended[n] for n in durations if n.startswith("q")) >= 8.0


async def test_the_watchdog_never_holds_a_pass_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder({f"n{i}": 0.01 for i in range(5)})
    # Nothing learned: the watchdog sleeps half the 1 s ceiling, but the pass ends with
    # its last node, not with the watchdog's sleep.
    elapsed, stalls = await run(
        recorder, sorted(recorder.durations), workers=1, failing_workers=4, pace=NodePace(1.0)
    )
    assert stalls == 0
    assert elapsed == pytest.approx(0.05, abs=0.001)


async def test_a_slow_node_is_not_a_stall_before_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Every node takes 0.3 s and the pace knows it: 4 x 0.3 s, nobody is replaced.
    durations = {f"n{i:02d}": 0.3 for i in range(10)}
    recorder = Recorder(durations)
    _, stalls = await run(
        recorder, sorted(durations), workers=2, failing_workers=8, pace=learned_pace(0.3)
    )
    assert stalls == 0
    assert recorder.most_running == 2


async def test_a_bmc_that_dies_costs_the_service_one_deadline_at_once(
    store: Store,
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = FakeFleet()
    names = add_nodes(store, fleet, 12)
    config = make_config(
        sync_power_state_workers=2, sync_failing_node_workers=8, sync_node_timeout=8.0
    )
    async with Harness(store, fleet, config) as service:
        await service.run_cycle()
        for port in range(10001, 10007):
            fleet[port].hang = True
        report = await service.run_cycle()  # they die while in the healthy lane
    # Before the watchdog, the 6 held the 2 healthy workers for 3 deadlines in a row.
    assert 8.0 <= report.duration < 9.5
    actions = {result.name: result.action for result in report.results}
    assert [actions[name] for name in names[6:]] == ["in-sync"] * 6
    assert all(actions[name] == "read-failed" for name in names[:6])
