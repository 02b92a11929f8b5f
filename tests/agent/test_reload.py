"""The pure parts of the systemd and reload work, and the daemon's reload on MockClock.

The subprocess tests over a real notify socket are in test_systemd.py.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from agent.config.changes import config_changes, keep_running, restart_needed
from agent.config.nodes import StaticNode
from agent.config.options import AgentConfig, StoreConfig
from agent.nova.config import NovaConfig
from agent.sync.daemon import run_service
from agent.sync.reload import Reloader
from agent.sync.sdnotify import (
    SdNotifier,
    loop_alive,
    message,
    socket_address,
    stall_limit,
    watchdog_period,
)
from agent.sync.service import SyncService
from store import Store
from tests.agent.fake_bmc import FakeFleet, add_nodes
from tests.agent.test_service import InlineStore, fleet, make_config, store, wall  # noqa: F401

# --- sd_notify: messages, addresses, the watchdog's decision --------------------------------


def test_messages_are_key_value_lines_and_a_value_stays_on_one_line() -> None:
    assert message(READY=1) == b"READY=1"
    assert message(RELOADING=1, MONOTONIC_USEC=12) == b"RELOADING=1\nMONOTONIC_USEC=12"
    assert message(STATUS="two\nlines") == b"STATUS=two lines"


def test_abstract_addresses_start_with_a_nul() -> None:
    assert socket_address("@powersync/notify") == b"\0powersync/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


@pytest.mark.parametrize(
    ("environ", "period"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_period_is_half_of_watchdog_usec(
    environ: dict[str, str], period: float | None
) -> None:
    assert watchdog_period(environ) == period


def test_the_loop_is_alive_while_it_progressed_within_interval_jitter_and_node_timeout() -> None:
    conductor = make_config(
        sync_power_state_interval=10.0, sync_jitter_window=2.0, sync_node_timeout=3.0
    ).conductor
    limit = stall_limit(conductor)
    assert limit == 15.0
    assert loop_alive(100.0, None, limit)  # not started yet
    assert loop_alive(115.0, 100.0, limit)
    assert not loop_alive(115.1, 100.0, limit)
    off = make_config(sync_power_state_interval=0.0).conductor
    assert loop_alive(1e9, 0.0, stall_limit(off))  # sync off: nothing can be stuck


def test_no_notify_socket_sends_nothing() -> None:
    notifier = SdNotifier.from_environ({})
    assert not notifier.enabled
    assert notifier.notify(READY=1) is False


@pytest.mark.parametrize("abstract", [True, False])
def test_a_datagram_reaches_a_real_socket(tmp_path: Path, abstract: bool) -> None:
    name = f"@powersync-unit-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(socket_address(name))
        receiver.settimeout(5)
        notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": name})
        assert notifier.notify(READY=1, STATUS="cycle 1")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=cycle 1"
        notifier.close()


def test_a_missing_socket_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SdNotifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING):
        assert notifier.notify(WATCHDOG=1) is False
        assert notifier.notify(WATCHDOG=1) is False
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1
    notifier.close()


# --- the diff of two configurations ----------------------------------------------------------


def node(name: str, **fields: Any) -> StaticNode:
    values: dict[str, Any] = {
        "name": name,
        "bmc_address": "127.0.0.1",
        "bmc_username": "admin",
        "bmc_password": "secret-1",
    }
    values.update(fields)
    return StaticNode(**values)


def test_changes_name_each_leaf_and_never_show_a_secret() -> None:
    old = attrs.evolve(
        make_config(sync_power_state_interval=10.0),
        nova=NovaConfig(password="nova-old"),
        nodes=(node("n1"), node("n2")),
    )
    new = attrs.evolve(
        make_config(sync_power_state_interval=5.0),
        source="elsewhere",  # not an option
        nova=NovaConfig(password="nova-new"),
        nodes=(node("n1", bmc_password="secret-2", bmc_port=624), node("n3")),
        logging=attrs.evolve(old.logging, level="debug"),
    )
    said = [str(change) for change in config_changes(old, new)]
    assert said == [
        "conductor.sync_power_state_interval 10 -> 5",
        "nova.password changed",
        "logging.level info -> debug",
        "nodes[n2] present -> removed",
        "nodes[n1].bmc_password changed",
        "nodes[n1].bmc_port 623 -> 624",
        "nodes[n3] absent -> added",
    ]
    assert not any("secret" in text or "nova-" in text for text in said)
    assert config_changes(old, old) == []


def test_fixed_options_are_found_and_keep_their_running_values() -> None:
    old = make_config()
    new = attrs.evolve(
        make_config(sync_power_state_workers=3),
        store=StoreConfig(path="/elsewhere.sqlite", backend="json"),
    )
    changes = config_changes(old, new)
    fixed = restart_needed(changes)
    assert [c.path for c in fixed] == ["store.backend", "store.path"]
    kept = keep_running(new, old, [c.path for c in fixed])
    assert kept.store == old.store
    assert kept.conductor.sync_power_state_workers == 3


# --- the daemon's reload on MockClock ----------------------------------------------------------


class Recorder(SdNotifier):
    def __init__(self) -> None:
        super().__init__("@recorder")
        self.sent: list[tuple[float, dict[str, object]]] = []

    def notify(self, **fields: object) -> bool:
        self.sent.append((trio.current_time(), fields))
        return True

    def times(self, key: str) -> list[float]:
        return [t for t, fields in self.sent if key in fields]


class FakeNotifier:
    def __init__(self, nova: NovaConfig) -> None:
        self.nova = nova
        self.running = False
        self.cancelled = False

    def wake(self) -> None:
        pass

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled = True


async def test_reload_applies_between_passes_replaces_the_notifier_and_refuses_a_bad_file(
    store: Store,  # noqa: F811
    fleet: FakeFleet,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent.errors import ConfigError

    add_nodes(store, fleet, 3)
    fleet[10003].hang = True  # each pass lasts sync_node_timeout
    first = make_config(sync_power_state_interval=30.0, sync_node_timeout=10.0)
    files: list[AgentConfig | ConfigError] = []

    def load() -> AgentConfig:
        item = files.pop(0)
        if isinstance(item, ConfigError):
            raise item
        return item

    made: list[FakeNotifier] = []

    def make_notifier(nova: NovaConfig) -> FakeNotifier | None:
        if not nova.send_power_notifications:  # as the CLI's: no notifier with Nova off
            return None
        made.append(FakeNotifier(nova))
        return made[-1]

    reloader = Reloader(load, make_notifier=make_notifier)
    recorder = Recorder()
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        service: SyncService = await nursery.start(
            lambda task_status: run_service(
                first,
                InlineStore(store),
                bmc_opener=fleet.opener,
                notifier=make_notifier(first.nova),
                handle_signals=False,
                wall_clock=wall,
                systemd=recorder,
                reloader=reloader,
                task_status=task_status,
            )
        )
        await trio.sleep(5)  # pass 1 waits on the hanging BMC
        assert service.cycles_running == 1
        faster = make_config(sync_power_state_interval=12.0, sync_node_timeout=10.0)
        service.reconfigure(faster)
        # Not mid-pass: the running pass keeps its configuration until it ends (t = 10).
        assert service.conductor.sync_power_state_interval == 30.0
        await trio.sleep(5.5)
        assert service.conductor.sync_power_state_interval == 12.0
        await trio.sleep(2)
        assert service.cycles_started == 2  # pass 2 started at t = 12, not t = 30
        # A reload (the file read in a thread) with [nova] changed: the notifier is replaced.
        files.append(attrs.evolve(faster, nova=NovaConfig(send_power_notifications=False)))
        assert await reloader.reload() is not None
        await trio.sleep(0.1)  # the old notifier's task sees its cancellation
        assert made[0].running and made[0].cancelled and not made[1:]  # Nova off: none now
        files.append(ConfigError("agent.toml: [conductor] sync_power_state_workers must be..."))
        assert await reloader.reload() is None
        assert service.conductor.sync_power_state_interval == 12.0
        service.stop()
    reloading, ready = recorder.times("RELOADING"), recorder.times("READY")
    assert len(reloading) == 2 and len(ready) == 3  # the first cycle's, then one per reload
    assert all(
        isinstance(f.get("MONOTONIC_USEC"), int) for _, f in recorder.sent if "RELOADING" in f
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "powersync"]
    assert (
        "reloaded test: conductor.sync_power_state_interval 30 -> 12, "
        "nova.send_power_notifications True -> False" in lines
    )
    assert any(line.startswith("reload refused") for line in lines)


async def test_a_hung_store_stops_the_watchdog_pings(
    store: Store,  # noqa: F811
    fleet: FakeFleet,  # noqa: F811
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_nodes(store, fleet, 2)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")  # a ping every 2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    release = trio.Event()

    class HangingStore(InlineStore):
        hang = False

        async def run(self, function: Any, *args: Any, **kwargs: Any) -> Any:
            if self.hang and function.__name__ == "set_meta":
                await release.wait()
            return await super().run(function, *args, **kwargs)

    astore = HangingStore(store)
    recorder = Recorder()
    config = make_config(sync_power_state_interval=10.0, sync_node_timeout=5.0)
    async with trio.open_nursery() as nursery:
        service: SyncService = await nursery.start(
            lambda task_status: run_service(
                config,
                astore,
                bmc_opener=fleet.opener,
                handle_signals=False,
                wall_clock=wall,
                systemd=recorder,
                task_status=task_status,
            )
        )
        await trio.sleep(25)
        astore.hang = True
        hung_at = trio.current_time()
        await trio.sleep(60)
        release.set()
        astore.hang = False
        await trio.sleep(20)
        service.stop()
    pings = recorder.times("WATCHDOG")
    before = [t for t in pings if t < hung_at]
    during = [t for t in pings if hung_at <= t < hung_at + 60]
    after = [t for t in pings if t >= hung_at + 60]
    assert len(before) >= 10
    # The cycle at t = 30 hangs in its write; limit 10 + 0 + 5 s after its last node.
    assert during and max(during) <= 30 + 15 + 2
    assert len(after) >= 8
