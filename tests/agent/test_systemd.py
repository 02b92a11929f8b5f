"""`powersync run` under systemd: sd_notify over a real AF_UNIX datagram socket, and SIGHUP.

The daemon runs in a subprocess on the project's simulator (RMCP+ on loopback) with a real
SQLite store; the test binds the notify socket itself (abstract and path forms) and records
every datagram with the time it arrived. The store is made to hang for real (the test holds
an exclusive SQLite lock) to show the watchdog pings stop while the loop is stuck.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from ipmi.sim import open_fleet, write_inventory
from store import open_store
from tests.agent.test_e2e_sim import ROOT, cli, wait_for

pytestmark = pytest.mark.slow

NODES = 4


def agent_toml(path: Path, store: Path, *, interval: float, extra: str = "") -> None:
    path.write_text(
        "[conductor]\n"
        f"sync_power_state_interval = {interval}\n"
        "sync_node_timeout = 0.4\n"
        "sync_jitter_window = 0.0\n"
        "power_state_sync_max_retries = 1000\n"  # the wrong password never means maintenance
        "[ipmi]\n"
        "retry_timeout = 0.2\nretry_max_timeout = 0.4\nretries = 1\n"
        f'[store]\npath = "{store}"\n'
        f"{extra}"
    )
    path.chmod(0o600)


class NotifySocket:
    """The manager's end: every datagram with its arrival time (time.monotonic())."""

    def __init__(self, sock: trio.socket.SocketType, name: str) -> None:
        self.sock = sock
        self.name = name  # what $NOTIFY_SOCKET says
        self.received: list[tuple[float, str]] = []

    async def collect(self) -> None:
        while True:
            data = await self.sock.recv(4096)
            self.received.append((time.monotonic(), data.decode()))

    def with_field(self, field: str, since: float = 0.0) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.received if t >= since and field in m.split("\n")]

    def pings(self, since: float, until: float = float("inf")) -> list[float]:
        return [t for t, m in self.received if since <= t < until and m == "WATCHDOG=1"]

    def transcript(self, start: float) -> str:
        return "\n".join(f"+{t - start:7.3f}s {m!r}" for t, m in self.received)


@asynccontextmanager
async def notify_socket(address: str | bytes, name: str) -> AsyncIterator[NotifySocket]:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(address)
        receiver = NotifySocket(sock, name)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver.collect)
            yield receiver
            nursery.cancel_scope.cancel()


async def until_field(notify: NotifySocket, field: str, since: float, within: float) -> float:
    await wait_for(lambda: notify.with_field(field, since), within=within, what=field)
    return notify.with_field(field, since)[0][0]


@asynccontextmanager
async def daemon(
    config: Path, log_path: Path, notify: NotifySocket, watchdog_usec: int | None = None
) -> AsyncIterator[trio.Process]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=notify.name)
    env.pop("WATCHDOG_PID", None)
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    with open(log_path, "wb") as log_file:
        process = await trio.lowlevel.open_process(
            cli(config, "run"), stdout=log_file, stderr=log_file, env=env
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                with trio.move_on_after(5):
                    await process.wait()


async def enrol(config: Path, fleet: object, tmp: Path, password: str) -> None:
    inventory = tmp / "nodes.toml"
    bmcs = fleet.bmcs  # type: ignore[attr-defined]
    write_inventory(str(inventory), [(b.name, b.address, b.port) for b in bmcs], "admin", password)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = await trio.run_process(cli(config, "node", "import", str(inventory)), env=env)
    assert done.returncode == 0


async def stop(process: trio.Process, notify: NotifySocket) -> float:
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        status = await process.wait()
    assert status == 0
    return await until_field(notify, "STOPPING=1", sent, within=1)


async def test_ready_status_watchdog_pings_a_hung_store_silences_them_and_stopping(
    tmp_path: Path,
) -> None:
    password = "sd-" + secrets.token_hex(4)
    store = tmp_path / "agent.sqlite"
    config = tmp_path / "agent.toml"
    agent_toml(config, store, interval=1.0)
    name = "powersync-test-" + secrets.token_hex(6)
    log_path = tmp_path / "daemon.log"
    async with (
        open_fleet(NODES, password=password, power_on=True) as fleet,
        notify_socket(b"\0" + name.encode(), "@" + name) as notify,
    ):
        await enrol(config, fleet, tmp_path, password)
        start = time.monotonic()
        async with daemon(config, log_path, notify, watchdog_usec=1_000_000) as process:
            ready = await until_field(notify, "READY=1", start, within=20)
            # READY=1 comes with the first cycle's summary: the fleet has been read once.
            first = notify.with_field("READY=1")[0][1]
            assert f"STATUS=sync pass 1: {NODES} nodes, {NODES} read, 0 failed" in first, first
            assert "sync pass 1:" in log_path.read_text()

            # WATCHDOG_USEC = 1 s: a ping about every 0.5 s while the loop runs.
            await trio.sleep(3.0)
            pings = notify.pings(ready, ready + 3.0)
            assert 4 <= len(pings) <= 8, notify.transcript(start)
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert all(0.3 <= gap <= 0.8 for gap in gaps), gaps
            statuses = notify.with_field("READY=1") + [
                (t, m) for t, m in notify.received if m.startswith("STATUS=sync pass ")
            ]
            assert len(statuses) >= 3  # one STATUS= per cycle

            # A hung store: the test holds the write lock, so the cycle's write waits (the
            # busy timeout is 10 s: it blocks, it does not fail). Limit = 1 + 0 + 0.4 s.
            held = sqlite3.connect(store, timeout=5, isolation_level=None, check_same_thread=False)
            await trio.to_thread.run_sync(held.execute, "BEGIN EXCLUSIVE")
            locked = time.monotonic()
            await trio.sleep(6.0)
            await trio.to_thread.run_sync(held.execute, "COMMIT")
            released = time.monotonic()
            held.close()
            await wait_for(
                lambda: notify.pings(released), within=4, what="pings again after the release"
            )
            silent = notify.pings(locked, released)
            last = max(silent, default=locked)
            assert released - last >= 3.5, notify.transcript(start)
            assert not notify.pings(locked + 2.5, released), notify.transcript(start)
            await stop(process, notify)
    output = log_path.read_text()
    assert "watchdog pings stopped" in output and "watchdog pings resumed" in output
    assert "busy" not in output  # the write waited for the lock; no cycle failed
    assert "Traceback" not in output and password not in output
    print(notify.transcript(start))


async def test_sighup_reloads_live_options_warns_on_fixed_ones_and_refuses_a_bad_file(
    tmp_path: Path,
) -> None:
    password = "sd-" + secrets.token_hex(4)
    store = tmp_path / "agent.sqlite"
    config = tmp_path / "agent.toml"
    agent_toml(config, store, interval=2.0)
    log_path = tmp_path / "daemon.log"
    secret = tmp_path / "bmc-password"
    secret.write_text("wrong-password\n")
    secret.chmod(0o600)
    async with (
        open_fleet(NODES + 1, password=password, power_on=True) as fleet,
        notify_socket(str(tmp_path / "notify.sock"), str(tmp_path / "notify.sock")) as notify,
    ):
        enrolled, locked_out = fleet.bmcs[:NODES], fleet.bmcs[NODES]
        await enrol(config, type("F", (), {"bmcs": enrolled}), tmp_path, password)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        added = await trio.run_process(
            cli(config, "node", "add", locked_out.name, "--address", locked_out.address,
                "--port", str(locked_out.port), "--username", "admin",
                "--password-file", str(secret)),
            env=env,
        )  # fmt: skip
        assert added.returncode == 0
        start = time.monotonic()
        async with daemon(config, log_path, notify) as process:
            await until_field(notify, "READY=1", start, within=20)
            await wait_for(
                lambda: "login to" in log_path.read_text(), within=10, what="the refused login"
            )
            before = [bmc.requests for bmc in enrolled]
            await trio.sleep(4.0)
            slow = [bmc.requests - b for bmc, b in zip(enrolled, before, strict=True)]

            # Interval 2 -> 0.6 s, level info -> debug, a new store path; the password fixed.
            agent_toml(
                config,
                tmp_path / "elsewhere.sqlite",
                interval=0.6,
                extra='[logging]\nlevel = "debug"\n',
            )
            secret.write_text(password + "\n")
            hup = time.monotonic()
            process.send_signal(signal.SIGHUP)
            reloading = await until_field(notify, "RELOADING=1", hup, within=5)
            ready = await until_field(notify, "READY=1", reloading, within=5)
            message = notify.with_field("RELOADING=1", hup)[0][1]
            usec = int(message.split("MONOTONIC_USEC=")[1].split("\n")[0])
            assert abs(usec / 1e6 - reloading) < 1.0  # CLOCK_MONOTONIC, in µs
            assert ready >= reloading
            before = [bmc.requests for bmc in enrolled]
            await trio.sleep(4.0)
            fast = [bmc.requests - b for bmc, b in zip(enrolled, before, strict=True)]
            assert all(2 <= n <= 3 for n in slow), slow
            assert all(n >= 5 for n in fast), fast
            # The fixed password is read at the next login: the 30 s wait ended with the reload.
            with open_store(str(store)) as db:
                node = db.get_node(locked_out.name)
                assert (node.power_state, node.last_error) == ("power on", None), node
            output = log_path.read_text()
            assert f"reloaded {config}: conductor.sync_power_state_interval 2 -> 0.6, " \
                "logging.level info -> debug" in output  # fmt: skip
            assert (
                f"reload of {config}: store.path {store} -> {tmp_path / 'elsewhere.sqlite'}: "
                "needs a restart" in output
            )
            assert not (tmp_path / "elsewhere.sqlite").exists()

            # A bad file is refused with its one-line error; the daemon runs on as it was.
            config.write_text("[conductor]\nsync_power_state_workers = -2\n")
            hup = time.monotonic()
            process.send_signal(signal.SIGHUP)
            reloading = await until_field(notify, "RELOADING=1", hup, within=5)
            await until_field(notify, "READY=1", reloading, within=5)
            await trio.sleep(1.5)
            assert process.returncode is None
            before = [bmc.requests for bmc in enrolled]
            await trio.sleep(2.0)
            assert all(bmc.requests - b >= 3 for bmc, b in zip(enrolled, before, strict=True))
            await stop(process, notify)
    output = log_path.read_text()
    refused = [line for line in output.splitlines() if "reload refused" in line]
    assert len(refused) == 1 and " ERROR " in refused[0], refused
    assert refused[0].endswith(
        f"reload refused, still running on the previous configuration: {config}: [conductor] "
        "sync_power_state_workers must be an integer >= 1 (got -2)"
    )
    assert "Traceback" not in output and password not in output
    print(notify.transcript(start))
    print("\n".join(line for line in output.splitlines() if "reload" in line))


async def test_a_sighup_while_the_store_opens_does_not_kill_the_daemon(tmp_path: Path) -> None:
    store = tmp_path / "agent.sqlite"
    config = tmp_path / "agent.toml"
    agent_toml(config, store, interval=1.0)
    # An empty database, locked by the test: the daemon's open (creating the schema) waits.
    held = sqlite3.connect(store, timeout=5, isolation_level=None, check_same_thread=False)
    store.chmod(0o600)
    held.execute("BEGIN EXCLUSIVE")
    log_path = tmp_path / "daemon.log"
    name = "powersync-test-" + secrets.token_hex(6)
    async with (
        notify_socket(b"\0" + name.encode(), "@" + name) as notify,
        daemon(config, log_path, notify) as process,
    ):
        await trio.sleep(1.5)  # started, and waiting on the store (the default busy wait: 10 s)
        assert process.returncode is None and not notify.with_field("READY=1")
        process.send_signal(signal.SIGHUP)
        await trio.sleep(0.5)
        assert process.returncode is None, log_path.read_text()  # SIGHUP's default would end it
        held.execute("COMMIT")
        held.close()
        await until_field(notify, "READY=1", 0.0, within=20)
        await stop(process, notify)
    assert "Traceback" not in log_path.read_text()
