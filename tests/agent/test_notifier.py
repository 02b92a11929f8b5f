"""The notifier drains the real store's outbox (SQLite and JSON files) to the fake Nova."""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.nova.config import NovaConfig, parse_nova_section
from agent.nova.notifier import Notifier
from agent.storeio import AsyncStore
from store import HistoryRecord, Node, NodeChange, Store, StoreError, open_store
from tests.agent.fake_openstack import FakeOpenStack, nova_table, open_fake_openstack


class WallClock:
    """Real wall-clock time plus an offset the test moves forward (to make retries due)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
async def cloud() -> AsyncIterator[FakeOpenStack]:
    async with open_fake_openstack() as cloud:
        yield cloud


@pytest.fixture(params=["sqlite", "json"])
def store_path(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[tuple[str, str]]:
    backend = request.param
    yield str(tmp_path) + f"/powersync.{backend}", backend  # type: ignore[operator]


@pytest.fixture
def store(store_path: tuple[str, str]) -> Iterator[Store]:
    path, backend = store_path
    with open_store(path, backend) as opened:
        yield opened


def config_for(cloud: FakeOpenStack, **overrides: object) -> NovaConfig:
    return parse_nova_section(nova_table(cloud, **overrides), source="test.toml", environ={})


def notifier_for(
    cloud: FakeOpenStack, store: Store, clock: WallClock | None = None, **overrides: object
) -> Notifier:
    return Notifier(
        config_for(cloud, **overrides),
        AsyncStore(store),
        clock=clock or WallClock(),
        rng=random.Random(6),
    )


def add_nodes(
    store: Store, cloud: FakeOpenStack, count: int, *, host: str | None = "c1"
) -> list[Node]:
    return [
        store.add_node(
            name=f"node-{index}",
            bmc_address="127.0.0.1",
            bmc_username="admin",
            bmc_password="bmc-pw",
            instance_uuid=cloud.add_instance(host=host),
        )
        for index in range(count)
    ]


def power(store: Store, nodes: list[Node], state: str) -> None:
    """One transaction recording a sync-observed change for every node, as the agent does."""
    store.apply(
        [
            NodeChange(
                node.uuid,
                fields={"power_state": state},
                history=HistoryRecord(None, state, "sync"),
                notification=state,
            )
            for node in nodes
        ]
    )


async def wait_until(predicate: object, *, limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_delivers_pending_events_in_one_request(cloud: FakeOpenStack, store: Store) -> None:
    nodes = add_nodes(store, cloud, 3)
    power(store, nodes, "power off")
    notifier = notifier_for(cloud, store)
    report = await notifier.drain_once()
    assert (report.due, report.delivered, report.requests) == (3, 3, 1)
    assert cloud.delivered() == [f"{n.instance_uuid}:POWER_OFF" for n in nodes]
    assert store.notification_counts()["delivered"] == 3
    assert store.notification_counts()["pending"] == 0
    again = await notifier.drain_once()  # nothing is sent twice
    assert (again.due, again.requests) == (0, 0)
    assert cloud.nova_posts == 1


async def test_batch_size_splits_requests(cloud: FakeOpenStack, store: Store) -> None:
    nodes = add_nodes(store, cloud, 5)
    power(store, nodes, "power on")
    report = await notifier_for(cloud, store, batch_size=2).drain_once()
    assert (report.delivered, report.requests) == (5, 3)
    assert cloud.delivered() == [f"{n.instance_uuid}:POWER_ON" for n in nodes]


async def test_superseded_event_is_never_sent(cloud: FakeOpenStack, store: Store) -> None:
    [node] = add_nodes(store, cloud, 1)
    power(store, [node], "power off")
    power(store, [node], "power on")
    await notifier_for(cloud, store).drain_once()
    assert cloud.delivered(node.instance_uuid) == ["POWER_ON"]
    counts = store.notification_counts()
    assert (counts["delivered"], counts["superseded"]) == (1, 1)


async def test_events_for_one_instance_in_order(cloud: FakeOpenStack, store: Store) -> None:
    [node] = add_nodes(store, cloud, 1)
    notifier = notifier_for(cloud, store)
    for state in ("power off", "power on", "power off"):
        power(store, [node], state)
        await notifier.drain_once()
    assert cloud.delivered(node.instance_uuid) == ["POWER_OFF", "POWER_ON", "POWER_OFF"]


async def test_unknown_and_hostless_instances_dropped_with_reason(
    cloud: FakeOpenStack, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    [good] = add_nodes(store, cloud, 1)
    [hostless] = add_nodes_named(store, cloud, "hostless", host=None)
    [gone] = add_nodes_named(store, cloud, "gone")
    assert gone.instance_uuid is not None
    del cloud.instances[gone.instance_uuid]  # deleted in Nova
    power(store, [good, hostless, gone], "power off")
    with caplog.at_level(logging.WARNING, logger="agent.nova.notifier"):
        report = await notifier_for(cloud, store).drain_once()
    assert (report.delivered, report.dropped, report.deferred) == (1, 2, 0)
    counts = store.notification_counts()
    assert (counts["delivered"], counts["dropped"], counts["pending"]) == (1, 2, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(hostless.instance_uuid) in m and "no compute host" in m for m in warnings)
    assert any(str(gone.instance_uuid) in m and "does not know" in m for m in warnings)
    kept = [store.get_notification(i) for i in range(1, 4)]
    reasons = {n.instance_uuid: n.last_error for n in kept if n.status == "dropped"}
    assert "422" in str(reasons[hostless.instance_uuid])
    assert "404" in str(reasons[gone.instance_uuid])
    assert await notifier_for(cloud, store).drain_once() == type(report)()  # never retried


def add_nodes_named(
    store: Store, cloud: FakeOpenStack, name: str, *, host: str | None = "c1"
) -> list[Node]:
    node = store.add_node(
        name=name,
        bmc_address="127.0.0.1",
        bmc_username="admin",
        bmc_password="bmc-pw",
        instance_uuid=cloud.add_instance(host=host),
    )
    return [node]


async def test_nova_down_for_several_rounds_then_back(cloud: FakeOpenStack, store: Store) -> None:
    nodes = add_nodes(store, cloud, 4)
    clock = WallClock()
    notifier = notifier_for(cloud, store, clock)
    power(store, nodes[:2], "power off")
    assert (await notifier.drain_once()).delivered == 2
    cloud.nova_down_status = 503
    power(store, nodes, "power on")
    for _round in range(4):
        report = await notifier.drain_once()
        assert report.delivered == 0 and report.error is not None and "503" in report.error
        assert store.notification_counts()["pending"] == 4
        clock.advance(10)  # past the (capped, jittered) backoff
    pending = store.due_notifications(now=clock())
    assert all(n.attempts == 4 and "503" in str(n.last_error) for n in pending)
    cloud.nova_down_status = None
    report = await notifier.drain_once()
    assert report.delivered == 4
    for node in nodes[:2]:
        assert cloud.delivered(node.instance_uuid) == ["POWER_OFF", "POWER_ON"]
    for node in nodes[2:]:
        assert cloud.delivered(node.instance_uuid) == ["POWER_ON"]
    assert store.notification_counts()["pending"] == 0


async def test_backoff_grows_and_is_capped(cloud: FakeOpenStack, store: Store) -> None:
    [node] = add_nodes(store, cloud, 1)
    clock = WallClock()
    notifier = notifier_for(cloud, store, clock)
    cloud.nova_down_status = 502
    power(store, [node], "power off")
    delays = []
    for _round in range(6):
        now = clock()
        await notifier.drain_once()
        [row] = store.due_notifications(now=now + 1000)
        delays.append(row.next_attempt_at - now)
        clock.advance(row.next_attempt_at - now + 0.01)
    # retry_delay 1 s doubling, capped at 8 s, jittered into [50 %, 100 %].
    for attempt, delay in enumerate(delays):
        assert 0.5 * min(8.0, 2.0**attempt) <= delay <= min(8.0, 2.0**attempt) + 0.1
    assert delays[-1] <= 8.1


async def test_partial_failure_keeps_what_was_delivered(cloud: FakeOpenStack, store: Store) -> None:
    nodes = add_nodes(store, cloud, 4)
    power(store, nodes, "power off")
    cloud.nova_statuses = [None, 503]
    report = await notifier_for(cloud, store, batch_size=2).drain_once()
    assert (report.delivered, report.deferred) == (2, 2)
    counts = store.notification_counts()
    assert (counts["delivered"], counts["pending"]) == (2, 2)


async def test_refusal_reported_once(
    cloud: FakeOpenStack, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = add_nodes(store, cloud, 2)
    cloud.max_version = (2, 70)  # Nova older than Train
    clock = WallClock()
    notifier = notifier_for(cloud, store, clock)
    power(store, nodes, "power off")
    with caplog.at_level(logging.DEBUG, logger="agent.nova.notifier"):
        for _round in range(3):
            report = await notifier.drain_once()
            assert report.deferred == 2
            clock.advance(10)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "2.76" in errors[0] and "Train" in errors[0]
    assert store.notification_counts()["pending"] == 2  # kept for when Nova is upgraded
    cloud.max_version = (2, 104)
    assert (await notifier.drain_once()).delivered == 2


async def test_forbidden_names_the_role(
    cloud: FakeOpenStack, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.roles = ("member",)
    power(store, add_nodes(store, cloud, 1), "power on")
    with caplog.at_level(logging.ERROR, logger="agent.nova.notifier"):
        await notifier_for(cloud, store).drain_once()
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "'service' role" in error


async def test_disabled_sends_nothing(cloud: FakeOpenStack, store: Store) -> None:
    power(store, add_nodes(store, cloud, 1), "power on")
    notifier = Notifier(NovaConfig(), AsyncStore(store))
    assert (await notifier.drain_once()).due == 0
    with trio.fail_after(5):
        await notifier.run()  # returns at once when notifications are off
    assert cloud.nova_posts == 0
    assert store.notification_counts()["pending"] == 1


async def test_run_wakes_on_new_events_and_survives_token_expiry(
    cloud: FakeOpenStack, store: Store
) -> None:
    nodes = add_nodes(store, cloud, 2)
    notifier = notifier_for(cloud, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run)
        power(store, nodes[:1], "power off")
        notifier.wake()
        await wait_until(lambda: len(cloud.delivered()) == 1)
        cloud.revoke_tokens()  # the token expires early, mid-run
        power(store, nodes, "power on")
        notifier.wake()
        await wait_until(lambda: len(cloud.delivered()) == 3)
        # Nova has them; the notifier marks them delivered once it has read the answer.
        await wait_until(lambda: store.notification_counts()["delivered"] == 3)
        nursery.cancel_scope.cancel()
    assert notifier.keystone.authentications == 2
    assert cloud.delivered(nodes[0].instance_uuid) == ["POWER_OFF", "POWER_ON"]
    assert store.notification_counts()["pending"] == 0


async def test_run_retries_by_itself_when_a_retry_is_due(
    cloud: FakeOpenStack, store: Store
) -> None:
    [node] = add_nodes(store, cloud, 1)
    power(store, [node], "power off")
    cloud.nova_statuses = [503, 503]
    notifier = notifier_for(cloud, store, retry_delay=0.05, retry_max_delay=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run)  # never woken: it must wake up for the retry
        await wait_until(lambda: cloud.delivered() != [])
        nursery.cancel_scope.cancel()
    assert cloud.nova_posts == 3
    assert cloud.delivered(node.instance_uuid) == ["POWER_OFF"]


async def test_restart_resumes_from_the_store_file(
    cloud: FakeOpenStack, store_path: tuple[str, str]
) -> None:
    path, backend = store_path
    with open_store(path, backend) as store:
        nodes = add_nodes(store, cloud, 3)
        power(store, nodes[:1], "power off")
        first = notifier_for(cloud, store)
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await wait_until(lambda: len(cloud.delivered()) == 1)
            await cloud.go_away()  # Nova and Keystone gone
            power(store, nodes, "power on")
            first.wake()
            await wait_until(lambda: store.due_notifications(now=time.time() + 100)[0].attempts > 0)
            nursery.cancel_scope.cancel()  # the agent stops with events pending
        assert store.notification_counts()["pending"] == 3
    await cloud.come_back()
    with open_store(path, backend) as store:
        second = notifier_for(cloud, store, retry_delay=0.05, retry_max_delay=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(second.run)
            await wait_until(lambda: store.notification_counts()["pending"] == 0)
            nursery.cancel_scope.cancel()
        assert store.notification_counts()["delivered"] == 4
    # Delivered exactly once each, in order: the first POWER_OFF was not resent.
    assert cloud.delivered(nodes[0].instance_uuid) == ["POWER_OFF", "POWER_ON"]
    for node in nodes[1:]:
        assert cloud.delivered(node.instance_uuid) == ["POWER_ON"]


async def test_secrets_and_tokens_never_logged(
    cloud: FakeOpenStack, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = add_nodes(store, cloud, 2)
    power(store, nodes, "power off")
    with caplog.at_level(logging.DEBUG):
        notifier = notifier_for(cloud, store, password="nova-pass-1")
        await notifier.drain_once()
        cloud.revoke_tokens()
        power(store, nodes, "power on")
        assert (await notifier.drain_once()).delivered == 2  # after a 401 and a new token
        cloud.nova_statuses = [503]
        power(store, nodes, "power off")
        await notifier.drain_once()
        later = WallClock()
        later.advance(100)
        bad = notifier_for(cloud, store, later, password="wrong-nova-pass")
        assert (await bad.drain_once()).deferred == 2
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text}" for r in caplog.records)
    assert len(cloud.tokens) == 2 and len(caplog.records) > 3
    for secret in ["nova-pass-1", "wrong-nova-pass", *cloud.tokens]:
        assert secret not in text
    assert "rejected the [nova] credentials" in text


async def test_rows_queued_by_another_process_are_picked_up(
    cloud: FakeOpenStack, store: Store, store_path: tuple[str, str]
) -> None:
    path, backend = store_path
    [node] = add_nodes(store, cloud, 1)
    # `powersync power NODE off` in another process: it queues the row but cannot wake us.
    script = (
        "import sys\n"
        "from store import HistoryRecord, NodeChange, open_store\n"
        "with open_store(sys.argv[1], sys.argv[2]) as store:\n"
        "    store.apply([NodeChange(sys.argv[3], fields={'power_state': 'power off'},\n"
        "        history=HistoryRecord('power on', 'power off', 'action'),\n"
        "        notification='power off')])\n"
    )
    notifier = Notifier(
        config_for(cloud), AsyncStore(store), rng=random.Random(2), poll_interval=0.05
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.run)
        await trio.run_process(
            [sys.executable, "-c", script, path, backend, node.uuid],
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        await wait_until(lambda: cloud.delivered() != [])
        nursery.cancel_scope.cancel()
    assert cloud.delivered(node.instance_uuid) == ["POWER_OFF"]


class FlakyStore(AsyncStore):
    """The first ``failures`` store calls raise, as a locked or full disk would."""

    def __init__(self, store: Store, failures: int) -> None:
        super().__init__(store)
        self.failures = failures

    async def run(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError(f"database is locked (test {function.__name__})")
        return await super().run(function, *args, **kwargs)


async def test_store_trouble_backs_off_and_recovers(
    cloud: FakeOpenStack, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    [node] = add_nodes(store, cloud, 1)
    power(store, [node], "power on")
    flaky = FlakyStore(store, failures=3)
    config = config_for(cloud, retry_delay=0.02, retry_max_delay=0.1)
    notifier = Notifier(config, flaky, rng=random.Random(3), poll_interval=0.05)
    with caplog.at_level(logging.ERROR, logger="agent.nova.notifier"):
        async with trio.open_nursery() as nursery:
            await nursery.start(notifier.run)
            await wait_until(lambda: cloud.delivered() != [])
            nursery.cancel_scope.cancel()
    assert flaky.failures == 0
    assert any("database is locked" in r.getMessage() for r in caplog.records)
    assert cloud.delivered(node.instance_uuid) == ["POWER_ON"]


async def test_nova_hanging_is_a_timeout_then_a_retry(cloud: FakeOpenStack, store: Store) -> None:
    nodes = add_nodes(store, cloud, 2)
    clock = WallClock()
    notifier = notifier_for(cloud, store, clock, timeout=0.3)
    power(store, nodes, "power off")
    cloud.nova_hang = True
    report = await notifier.drain_once()
    assert report.deferred == 2 and "did not answer within 0.3 s" in str(report.error)
    cloud.nova_hang = False
    clock.advance(10)
    assert (await notifier.drain_once()).delivered == 2
    assert len(cloud.delivered()) == 2
