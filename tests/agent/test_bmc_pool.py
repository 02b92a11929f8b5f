"""The BMC pool: sessions without a task each, one pool-wide keepalive, closing, throttling.

Fake BMCs on trio's MockClock for the bookkeeping; the real client against the simulator
(``ipmi.sim.open_fleet``) for what only a real session can show: Close Session reaching the
BMC, and a session that stays usable after a caller gave up on a command.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from agent.bmc.pool import CLOSE_CONCURRENCY, KEEPALIVE_CONCURRENCY, BmcPool, open_bmc_pool
from agent.bmc.seam import BmcEndpoint, BmcUnavailable
from agent.config.options import IpmiConfig
from agent.drivers.ipmi import IpmiDriver
from agent.sync.policy import POWER_OFF, POWER_ON
from ipmi.sim import Fleet, open_fleet
from tests.agent.fake_bmc import FakeBmcError, FakeFleet, FakeSession

FAST_IPMI = IpmiConfig(retry_timeout=0.2, retry_backoff=2.0, retry_max_timeout=0.4, retries=4)


def endpoint(port: int, *, mode: str = "persistent") -> BmcEndpoint:
    return BmcEndpoint("ipmi", "127.0.0.1", port, "admin", "fake-secret", session_mode=mode)


def fake_fleet(count: int) -> FakeFleet:
    fleet = FakeFleet()
    for index in range(count):
        fleet.add(10001 + index)
    return fleet


def task_count() -> int:
    """Every task in this trio run, found from the root task down."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def read(pool: BmcPool, key: str, port: int) -> str:
    async with pool.lease(key, endpoint(port)) as bmc:
        return await bmc.get_power()


# --- no task per session ----------------------------------------------------------------


async def test_idle_sessions_cost_no_task(autojump_clock: trio.testing.MockClock) -> None:
    fleet = fake_fleet(50)
    async with open_bmc_pool(fleet.opener, keepalive_interval=25.0) as pool:
        assert await read(pool, "node-0", 10001) == POWER_ON
        with_one = task_count()
        for index in range(1, 50):
            await read(pool, f"node-{index}", 10001 + index)
        assert pool.open_sessions() == 50
        assert task_count() == with_one  # 49 more sessions, not one task more
        assert len(pool._nursery.child_tasks) == 1  # the pool-wide keepalive loop
    assert all(bmc.logins == bmc.closes == 1 for bmc in fleet.bmcs.values())


async def test_commands_run_in_the_callers_task(autojump_clock: trio.testing.MockClock) -> None:
    fleet = fake_fleet(1)
    seen: list[trio.lowlevel.Task] = []

    @asynccontextmanager
    async def opener(point: BmcEndpoint) -> AsyncIterator[FakeSession]:
        seen.append(trio.lowlevel.current_task())
        async with fleet.opener(point) as session:
            yield session

    async with open_bmc_pool(opener) as pool:
        await read(pool, "node-0", 10001)
    assert seen == [trio.lowlevel.current_task()]


# --- keepalive ----------------------------------------------------------------------------


async def test_an_idle_session_gets_keepalives_and_a_used_one_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = fake_fleet(2)
    async with open_bmc_pool(fleet.opener, keepalive_interval=25.0) as pool:
        await read(pool, "idle", 10001)
        await read(pool, "busy", 10002)
        for _ in range(6):  # "busy" is read every 10 s: never idle for 25 s
            await trio.sleep(10)
            await read(pool, "busy", 10002)
    assert fleet[10001].keepalives == 2  # at 25 s and 50 s of idleness
    assert fleet[10001].logins == 1
    assert fleet[10002].keepalives == 0


async def test_keepalives_are_bounded_in_concurrency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    count = KEEPALIVE_CONCURRENCY * 3
    fleet = fake_fleet(count)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sum(bmc.in_flight for bmc in fleet.bmcs.values()))
            await trio.sleep(0.05)

    async with open_bmc_pool(fleet.opener, keepalive_interval=25.0) as pool:
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(read, pool, f"node-{index}", 10001 + index)
        for bmc in fleet.bmcs.values():
            bmc.command_time = 1.0  # every keepalive falls due at once and takes a while
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.sleep(30)
            nursery.cancel_scope.cancel()
    assert all(bmc.keepalives == 1 for bmc in fleet.bmcs.values())
    assert peak == KEEPALIVE_CONCURRENCY


@pytest.mark.parametrize("failure", ["error", "hang"])
async def test_a_failed_keepalive_closes_the_session(
    autojump_clock: trio.testing.MockClock, failure: str
) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    async with open_bmc_pool(fleet.opener, keepalive_interval=25.0) as pool:
        await read(pool, "node-0", 10001)
        if failure == "error":
            bmc.error = "session lost"
        else:
            bmc.hang = True
        await trio.sleep(25 + 25 + 1)  # due at 25 s, given up at the latest 25 s later
        assert bmc.closes == 1
        assert pool.open_sessions() == 0
        bmc.error, bmc.hang = None, False
        assert await read(pool, "node-0", 10001) == POWER_ON  # a fresh login
        assert bmc.logins == 2
    assert bmc.closes == 2


# --- errors, cancellation -----------------------------------------------------------------


async def test_a_command_after_an_error_logs_in_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    async with open_bmc_pool(fleet.opener) as pool:
        await read(pool, "node-0", 10001)
        bmc.error = "completion code 0xc3"
        with pytest.raises(FakeBmcError):
            await read(pool, "node-0", 10001)
        await trio.sleep(0.1)  # closing runs in a task of the pool's
        assert bmc.closes == 1 and pool.open_sessions() == 0
        bmc.error = None
        bmc.on = False
        assert await read(pool, "node-0", 10001) == POWER_OFF
        assert bmc.logins == 2
        assert pool.statistics().failures_by_type == {"FakeBmcError": 1}
        assert pool.statistics().sessions_opened == 2
        assert pool.statistics().logins == 2  # what each session's statistics counted


async def test_closing_never_delays_the_caller(autojump_clock: trio.testing.MockClock) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]

    @asynccontextmanager
    async def slow_to_close(point: BmcEndpoint) -> AsyncIterator[FakeSession]:
        async with fleet.opener(point) as session:
            try:
                yield session
            finally:
                await trio.sleep(1.5)  # Close Session to a BMC that no longer answers

    async with open_bmc_pool(slow_to_close) as pool:
        await read(pool, "node-0", 10001)
        bmc.error = "gone"
        started = trio.current_time()
        with pytest.raises(FakeBmcError):
            await read(pool, "node-0", 10001)
        assert trio.current_time() - started == pytest.approx(bmc.command_time)
        assert bmc.closes == 0  # still closing, in the pool's task
        await trio.sleep(2)
        assert bmc.closes == 1


async def test_a_login_cancelled_by_the_deadline_closes_the_half_made_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    made = closed = 0

    @asynccontextmanager
    async def slow_login(point: BmcEndpoint) -> AsyncIterator[FakeSession]:
        nonlocal made, closed
        made += 1  # the BMC holds a session from the first login step on
        try:
            await trio.sleep(10)  # the rest of the handshake
            async with fleet.opener(point) as session:
                yield session
        finally:
            closed += 1

    async with open_bmc_pool(slow_login) as pool:
        with trio.move_on_after(3) as deadline:
            await read(pool, "node-0", 10001)
        assert deadline.cancelled_caught
        assert pool.stage("node-0") == "login to 127.0.0.1:10001"
        assert (made, closed) == (1, 1)
        assert pool.open_sessions() == 0
        assert await read(pool, "node-0", 10001) == POWER_ON  # logs in afresh
        assert (made, closed, bmc.logins) == (2, 1, 1)
    assert (made, closed) == (2, 2)


async def test_a_command_cancelled_by_the_deadline_keeps_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    async with open_bmc_pool(fleet.opener) as pool:
        await read(pool, "node-0", 10001)
        bmc.command_time = 10.0
        with trio.move_on_after(3):
            await read(pool, "node-0", 10001)
        assert pool.stage("node-0") == "a command to 127.0.0.1:10001"
        assert pool.open_sessions() == 1 and bmc.closes == 0
        bmc.command_time = 0.01
        assert await read(pool, "node-0", 10001) == POWER_ON
        assert bmc.logins == 1
        assert pool.statistics().failures == 0


async def test_the_real_client_keeps_a_session_whose_command_was_abandoned() -> None:
    """A late answer to the abandoned request is dropped as stale; the session still works."""
    password = "pool-" + secrets.token_hex(4)
    async with open_fleet(1, password=password, power_on=True) as fleet:
        sim = fleet.bmcs[0]
        point = BmcEndpoint("ipmi", sim.address, sim.port, "admin", password)
        async with open_bmc_pool(IpmiDriver(FAST_IPMI).open_session) as pool:

            async def get() -> str:
                async with pool.lease("sim-0", point) as bmc:
                    return await bmc.get_power()

            assert await get() == POWER_ON
            fleet.set_faults(slow={0}, slow_delay=1.0)
            with trio.move_on_after(0.3) as deadline:
                await get()
            assert deadline.cancelled_caught
            # Every late answer is sent (waiting in our socket) before the next request goes
            # out, however loaded the machine: a fixed sleep left only 0.2 s of margin.
            with trio.fail_after(10):
                while fleet.statistics()["delayed_pending"]:
                    await trio.sleep(0.05)
            fleet.set_faults(slow=frozenset())
            sim.set_power(False)
            assert await get() == POWER_OFF
            assert pool.statistics().sessions_opened == 1
            assert pool.statistics().logins == 1
            assert pool.statistics().drops >= 1  # the stale answer
            assert fleet.session_count() == 1
        assert fleet.session_count() == 0  # Close Session reached the BMC


# --- closing ------------------------------------------------------------------------------


async def sessions_on_the_bmcs(fleet: Fleet, count: int) -> None:
    """Wait (bounded) until the simulator holds ``count`` sessions: Close Session arrived."""
    with trio.move_on_after(10):
        while fleet.session_count() != count:
            await trio.sleep(0.02)
    assert fleet.session_count() == count


async def test_forget_retain_and_aclose_send_close_session_to_the_simulator() -> None:
    password = "pool-" + secrets.token_hex(4)
    async with open_fleet(3, password=password, power_on=True) as fleet:
        points = [BmcEndpoint("ipmi", b.address, b.port, "admin", password) for b in fleet.bmcs]
        async with open_bmc_pool(IpmiDriver(FAST_IPMI).open_session) as pool:
            for index, point in enumerate(points):
                async with pool.lease(f"k{index}", point) as bmc:
                    assert await bmc.get_power() == POWER_ON
            assert fleet.session_count() == 3 and pool.open_sessions() == 3
            pool.forget("k0")
            await sessions_on_the_bmcs(fleet, 2)
            assert pool.open_sessions() == 2
            assert set(pool.last_rtt) == {"k1", "k2"}  # nothing kept for a deleted node
            pool.retain({"k2"})
            await sessions_on_the_bmcs(fleet, 1)
            assert pool.open_sessions() == 1
            assert set(pool.last_rtt) == {"k2"}
        assert fleet.session_count() == 0
        assert pool.statistics().logins == 3


async def test_forget_while_in_use_closes_after_the_command(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    results: list[str] = []
    async with open_bmc_pool(fleet.opener) as pool:

        async def reader() -> None:
            results.append(await read(pool, "node-0", 10001))

        await read(pool, "node-0", 10001)
        bmc.command_time = 5.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(1)
            pool.forget("node-0")
            await trio.sleep(1)
            assert bmc.closes == 0  # the command in flight finishes first
        assert results == [POWER_ON]
        await trio.sleep(0.1)
        assert bmc.closes == 1 and pool.open_sessions() == 0


async def test_a_closed_pool_refuses_work(autojump_clock: trio.testing.MockClock) -> None:
    fleet = fake_fleet(1)
    async with open_bmc_pool(fleet.opener) as pool:
        async with pool.lease("node-0", endpoint(10001)) as bmc:
            await bmc.get_power()
            await pool.aclose()
            assert fleet[10001].closes == 1  # aclose waits for Close Session
            with pytest.raises(BmcUnavailable):
                await bmc.get_power()
        with pytest.raises(BmcUnavailable):
            pool.lease("node-0", endpoint(10001))


async def test_per_cycle_leases_log_in_and_close_each_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    async with open_bmc_pool(fleet.opener) as pool:
        for _ in range(3):
            async with pool.lease("node-0", endpoint(10001, mode="per-cycle")) as node:
                assert await node.get_power() == POWER_ON
                await node.set_power("power off")
                assert await node.get_power() == POWER_OFF
                await node.set_power("on")
            assert bmc.closes == bmc.logins  # closed before the lease ends
        assert pool.open_sessions() == 0
        assert pool.stage("node-0") == "a command to 127.0.0.1:10001"
    assert bmc.logins == 3
    assert pool.statistics().requests == 12


# --- one request in flight per endpoint ---------------------------------------------------


async def test_one_request_in_flight_per_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    bmc.command_time = 1.0
    async with (
        open_bmc_pool(fleet.opener, min_command_interval=0.5) as pool,
        trio.open_nursery() as nursery,
    ):
        for key in ("a", "b", "a", "b", "c"):  # three nodes behind one BMC address
            nursery.start_soon(read, pool, key, 10001)
        await trio.sleep(0.2)
        assert {pool.stage(key) for key in "abc"} >= {
            "waiting for another command to 127.0.0.1:10001"
        }
    assert bmc.max_in_flight == 1
    assert len(bmc.commands) == 5
    times = [at for at, _ in bmc.commands]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 1.0 + 0.5 - 1e-9  # the command, then the configured gap


async def test_a_waiter_cancelled_at_the_gate_lets_the_others_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    bmc.command_time = 2.0
    async with open_bmc_pool(fleet.opener) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, pool, "a", 10001)
            await trio.sleep(0.5)
            with trio.move_on_after(1):
                await read(pool, "b", 10001)  # gives up while waiting for "a"
            assert pool.stage("b") == "waiting for another command to 127.0.0.1:10001"
        assert await read(pool, "c", 10001) == POWER_ON
    assert bmc.max_in_flight == 1
    assert [name for _, name in bmc.commands] == ["status", "status"]


async def test_closing_the_pool_closes_every_session_with_a_few_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    count = CLOSE_CONCURRENCY + 44
    fleet = fake_fleet(count)
    closing = peak = 0

    @asynccontextmanager
    async def slow_to_close(point: BmcEndpoint) -> AsyncIterator[FakeSession]:
        nonlocal closing, peak
        async with fleet.opener(point) as session:
            try:
                yield session
            finally:
                closing += 1
                peak = max(peak, closing)
                await trio.sleep(0.1)  # Close Session's round trip
                closing -= 1

    async with open_bmc_pool(slow_to_close) as pool:
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(read, pool, f"node-{index}", 10001 + index)
        assert pool.open_sessions() == count
    assert all(bmc.closes == 1 for bmc in fleet.bmcs.values())
    assert peak == CLOSE_CONCURRENCY


async def test_a_node_forgotten_while_its_caller_waits_gets_no_new_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fleet = fake_fleet(1)
    bmc = fleet[10001]
    bmc.command_time = 2.0
    refused: list[BaseException] = []

    async def read_gone(pool: BmcPool) -> None:
        try:
            await read(pool, "gone", 10001)
        except BmcUnavailable as exc:
            refused.append(exc)

    async with open_bmc_pool(fleet.opener) as pool, trio.open_nursery() as nursery:
        nursery.start_soon(read, pool, "other", 10001)  # holds the BMC for 2 s
        await trio.sleep(0.5)
        nursery.start_soon(read_gone, pool)  # waits behind "other"
        await trio.sleep(0.5)
        assert pool.stage("gone") == "waiting for another command to 127.0.0.1:10001"
        pool.forget("gone")
    assert len(refused) == 1
    assert bmc.logins == 1  # only "other" ever logged in


async def test_keepalives_keep_a_real_session_from_idling_out() -> None:
    password = "pool-" + secrets.token_hex(4)
    # The simulated BMC drops a session idle for 1 s; the pool's keepalive comes every 0.3 s.
    async with open_fleet(1, password=password, power_on=True, idle_timeout=1.0) as fleet:
        sim = fleet.bmcs[0]
        point = BmcEndpoint("ipmi", sim.address, sim.port, "admin", password)
        async with open_bmc_pool(
            IpmiDriver(FAST_IPMI).open_session, keepalive_interval=0.3
        ) as pool:
            async with pool.lease("sim-0", point) as bmc:
                assert await bmc.get_power() == POWER_ON
            answered = sim.requests
            await trio.sleep(2.5)
            assert sim.requests >= answered + 3  # keepalives reached the BMC
            assert fleet.session_count() == 1
            async with pool.lease("sim-0", point) as bmc:
                assert await bmc.get_power() == POWER_ON
            assert pool.statistics().logins == 1  # never logged in again
            assert pool.statistics().failures == 0


async def test_the_endpoint_gate_is_fair_and_survives_a_cancelled_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from agent.bmc.gate import EndpointGate

    gate = EndpointGate()
    order: list[str] = []

    async def user(name: str, hold: float) -> None:
        await gate.acquire()
        try:
            order.append(name)
            await trio.sleep(hold)
        finally:
            gate.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(user, "first", 1.0)
        await trio.sleep(0.1)
        for name in ("second", "third"):
            nursery.start_soon(user, name, 0.5)
            await trio.sleep(0.1)
        with trio.move_on_after(0.2):
            await user("impatient", 0.5)  # parked behind the others, then gives up
        nursery.start_soon(user, "fourth", 0.5)
    assert order == ["first", "second", "third", "fourth"]
    assert gate.busy is False
