"""Two agents as separate `powersync run` processes on one real PostgreSQL server.

The simulated fleet runs in the test process and counts, per BMC, the datagrams it answered
and the power actions it carried out: "each node synced by one agent" and "no double power
action" are counted where they happen. Agents are SIGKILLed and SIGSTOPped for real.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ipmi.sim import Fleet, open_fleet
from store import OUTBOX_LEASE, Store, bucket_lease, bucket_of, open_store
from tests.agent.fake_openstack import FakeOpenStack, nova_table, open_fake_openstack
from tests.store.conftest import pg_server  # noqa: F401 (the session's PostgreSQL server)
from tests.store.pgserver import PgServer

pytestmark = pytest.mark.slow

INTERVAL, BEAT, DEAD = 1.0, 0.5, 2.5  # sync interval, heartbeat interval and timeout (s)
NODES = 12
BUCKETS = 64


@pytest.fixture
def dsn(pg_server: PgServer) -> Iterator[str]:  # noqa: F811
    with pg_server.database() as name:
        yield name


def shared(dsn: str) -> Store:
    return open_store(backend="postgresql", dsn=dsn, password=None)


def agent_config(tmp: Path, host: str, dsn: str, *, conductor: str = "", extra: str = "") -> Path:
    """The agent's config: ``conductor`` lines go into [conductor], ``extra`` sections last."""
    path = tmp / f"{host}.toml"
    path.write_text(
        "[conductor]\n"
        f'host = "{host}"\n'
        f"sync_power_state_interval = {INTERVAL}\n"
        "sync_node_timeout = 0.8\n"
        "sync_jitter_window = 0.0\n"
        f"heartbeat_interval = {BEAT}\n"
        f"heartbeat_timeout = {DEAD}\n"
        "power_state_change_timeout = 5.0\n"
        "lock_ttl = 10.0\n"
        "power_state_sync_max_retries = 5\n" + conductor + "[ipmi]\n"
        "retry_timeout = 0.2\nretry_max_timeout = 0.4\nretries = 2\n"
        "[store]\n"
        'backend = "postgresql"\n'
        f'dsn = "{dsn}"\n' + extra
    )
    path.chmod(0o600)
    return path


class Agent:
    def __init__(self, tmp: Path, host: str, dsn: str, **options: str) -> None:
        self.host = host
        self.log = tmp / f"{host}.log"
        config = agent_config(tmp, host, dsn, **options)
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent.cli.main", "--config", str(config), "run"],
                stdout=output,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
            )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def enrol(
    dsn: str, fleet: Fleet, password: str, instances: dict[str, str] | None = None
) -> dict[str, str]:
    """Every BMC of the fleet as a node of the shared store (with its Nova instance, if
    given); returns the nodes' uuids by name."""
    with shared(dsn) as store:
        added = [
            store.add_node(
                name=bmc.name,
                bmc_address=bmc.address,
                bmc_port=bmc.port,
                bmc_username="admin",
                bmc_password=password,
                instance_uuid=None if instances is None else instances[bmc.name],
            )
            for bmc in fleet.bmcs
        ]
    return {node.name: node.uuid for node in added}


def holders(dsn: str) -> dict[str, int]:
    with shared(dsn) as store:
        now = store.server_time()
        counts: dict[str, int] = {}
        for lease in store.list_leases():
            if lease.name.startswith("bucket:") and lease.expires_at > now:
                counts[lease.holder] = counts.get(lease.holder, 0) + 1
        return counts


def leases_unchanged(dsn: str, seconds: float) -> bool:
    """True when every bucket kept its holder for ``seconds`` (polled: blocks that long)."""
    first = bucket_holders(dsn)
    time.sleep(seconds)
    return bucket_holders(dsn) == first


def bucket_holders(dsn: str) -> dict[str, str]:
    with shared(dsn) as store:
        return {lease.name: lease.holder for lease in store.list_leases()}


async def wait_for(condition: Any, limit: float, what: str, *, store: bool = True) -> float:
    """Poll ``condition()`` (bounded; in a thread when it reads the store); returns the
    seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        done = await trio.to_thread.run_sync(condition) if store else condition()
        if done:
            return time.monotonic() - started
        await trio.sleep(0.1)
    raise AssertionError(f"{what}: not within {limit:g} s")


async def test_two_agent_processes_share_take_over_after_sigkill_and_fence_after_sigstop(
    dsn: str, tmp_path: Path
) -> None:
    password = "procs-" + secrets.token_hex(4)
    async with open_fleet(NODES, password=password, power_on=True) as fleet:
        uuids = enrol(dsn, fleet, password)
        buckets = {uuids[b.name]: b for b in fleet.bmcs}
        agents = [Agent(tmp_path, "agent-a", dsn), Agent(tmp_path, "agent-b", dsn)]
        try:
            even = {"agent-a": BUCKETS // 2, "agent-b": BUCKETS // 2}
            await wait_for(lambda: holders(dsn) == even, 30.0, "an even share")
            await trio.sleep(2 * INTERVAL)  # past the first cycles' logins
            # Each node is read by one agent per cycle: over 5 intervals, about 5 reads each
            # (two agents on one node would be about 10).
            before = [bmc.requests for bmc in fleet.bmcs]
            await trio.sleep(5 * INTERVAL)
            per_bmc = [bmc.requests - b for bmc, b in zip(fleet.bmcs, before, strict=True)]
            assert all(3 <= reads <= 7 for reads in per_bmc), per_bmc

            # `powersync status --json` lists the agents with their shares.
            shown = await trio.run_process(
                [sys.executable, "-m", "agent.cli.main", "--config",
                 str(tmp_path / "agent-a.toml"), "status", "--json"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            listed = json.loads(shown.stdout)["agents"]
            assert [a["host"] for a in listed] == ["agent-a", "agent-b"]
            assert all(a["alive"] and a["last_cycle"] for a in listed), listed
            assert sum(a["nodes_owned"] for a in listed) == NODES
            assert [a["drains_outbox"] for a in listed].count(True) == 1
            assert b"password" not in shown.stdout.lower()

            # A power action from the CLI while both run: done once, and left alone by both.
            target = fleet.bmcs[3]
            controls = target.controls
            action = await trio.run_process(
                [sys.executable, "-m", "agent.cli.main", "--config",
                 str(tmp_path / "agent-a.toml"), "power", target.name, "off", "--wait"],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert action.returncode == 0, action.stderr
            await trio.sleep(3 * INTERVAL)
            assert not target.power_on and target.controls - controls == 1

            # SIGKILL agent-b: agent-a syncs every node within heartbeat_timeout + one
            # heartbeat and one interval (plus this test's polling).
            agents[1].signal(signal.SIGKILL)
            killed = time.monotonic()
            agents[1].process.wait(timeout=5)
            await wait_for(lambda: holders(dsn) == {"agent-a": BUCKETS}, 15.0, "takeover")
            counts = [bmc.requests for bmc in fleet.bmcs]
            await wait_for(
                lambda: all(b.requests > c for b, c in zip(fleet.bmcs, counts, strict=True)),
                5.0,
                "every node read by the survivor",
                store=False,
            )
            took = time.monotonic() - killed
            assert took <= DEAD + BEAT + INTERVAL + 2.5, took

            # A second agent-b joins; then it is SIGSTOPped past its leases. Meanwhile one of
            # its nodes is switched off out of band: agent-a (its new owner) forces it on once;
            # agent-b, woken, must not act on it.
            agents[1] = Agent(tmp_path, "agent-b", dsn)
            await wait_for(lambda: holders(dsn) == even, 30.0, "an even share again")
            with shared(dsn) as store:
                leases = {lease.name: lease.holder for lease in store.list_leases()}
            victim = next(
                bmc
                for uuid, bmc in buckets.items()
                if leases.get(bucket_lease(bucket_of(uuid, BUCKETS))) == "agent-b"
                # a node the earlier CLI action left off would not be forced back on
                and bmc.power_on
            )
            controls = victim.controls
            agents[1].signal(signal.SIGSTOP)
            await wait_for(lambda: holders(dsn) == {"agent-a": BUCKETS}, 15.0, "takeover")
            victim.set_power(False)
            await wait_for(lambda: victim.power_on, 10.0, "agent-a forcing it on", store=False)
            agents[1].signal(signal.SIGCONT)
            await wait_for(lambda: holders(dsn) == even, 30.0, "agent-b back in")
            await trio.sleep(3 * INTERVAL)
            assert victim.controls - controls == 1  # agent-a's force only
            log_b = agents[1].log.read_text()
            assert "Traceback" not in log_b
        finally:
            for running in agents:
                running.stop()
        # A stopped agent hands its share over: nothing left behind.
        assert holders(dsn) == {}


async def test_an_agent_carries_on_after_the_database_server_restarts(
    pg_server: PgServer,  # noqa: F811
    dsn: str,
    tmp_path: Path,
) -> None:
    password = "restart-" + secrets.token_hex(4)
    async with open_fleet(3, password=password, power_on=True) as fleet:
        enrol(dsn, fleet, password)
        running = Agent(tmp_path, "agent-a", dsn)
        try:
            await wait_for(lambda: holders(dsn) == {"agent-a": BUCKETS}, 30.0, "joining")
            await trio.to_thread.run_sync(pg_server.restart)
            fleet.bmcs[1].set_power(False)  # a change to record once the database is back
            await wait_for(
                lambda: fleet.bmcs[1].power_on, 30.0, "the force after the restart", store=False
            )

            def recorded() -> bool:
                with shared(dsn) as store:
                    history = store.history(fleet.bmcs[1].name)
                    return any(entry.cause == "sync" for entry in history[:1]) and len(history) >= 2

            await wait_for(recorded, 30.0, "the forced change written after the restart")
            assert running.process.poll() is None  # still running
        finally:
            running.stop()
        log = running.log.read_text()
        assert "Traceback" not in log
        assert "connection lost" in log and "reconnecting" in log  # one line, naming the store


def nova_section(cloud: FakeOpenStack) -> str:
    lines = [
        f"{key} = {json.dumps(value)}"  # TOML's strings, numbers and booleans, as JSON writes them
        for key, value in nova_table(cloud, retry_delay=0.5, retry_max_delay=1.0).items()
    ]
    return "[nova]\n" + "\n".join(lines) + "\n"


async def test_three_agent_processes_share_and_two_deliver_every_event_through_a_nova_outage(
    dsn: str, tmp_path: Path
) -> None:
    password = "three-" + secrets.token_hex(4)
    hosts = ["agent-a", "agent-b", "agent-c"]
    async with (
        open_fake_openstack() as cloud,
        open_fleet(NODES, password=password, power_on=True) as fleet,
    ):
        instances = {bmc.name: cloud.add_instance() for bmc in fleet.bmcs}
        enrol(dsn, fleet, password, instances)
        # The record follows the hardware (force off), so each flip at the BMC is an event.
        options = {
            "conductor": "force_power_state_during_sync = false\n",
            "extra": nova_section(cloud),
        }
        agents = {host: Agent(tmp_path, host, dsn, **options) for host in hosts}
        try:

            def three_shares() -> bool:
                shares = holders(dsn)
                # Each takes at most its fair share, ceil(64 / 3) = 22: 22 + 22 + 20 is one.
                fair = -(-BUCKETS // len(hosts))
                return (
                    sorted(shares) == hosts
                    and sum(shares.values()) == BUCKETS
                    and max(shares.values()) <= fair
                )

            await wait_for(three_shares, 30.0, "three fair shares")
            # The third agent's share may still move a bucket or two after the counts are
            # fair; a moved node logs in again (several datagrams): wait until none moves.
            await wait_for(lambda: leases_unchanged(dsn, 3 * BEAT), 30.0, "settled shares")
            await trio.sleep(2 * INTERVAL)  # past the new owners' logins
            before = [bmc.requests for bmc in fleet.bmcs]
            await trio.sleep(5 * INTERVAL)
            per_bmc = [bmc.requests - b for bmc, b in zip(fleet.bmcs, before, strict=True)]
            shown = " ".join(map(str, per_bmc))
            assert all(3 <= reads <= 7 for reads in per_bmc), shown  # ~one read per cycle

            # SIGKILL the agent that drains the outbox: the other two share its nodes and one
            # of them drains from now on.
            with shared(dsn) as store:
                drainer = next(x.holder for x in store.list_leases() if x.name == OUTBOX_LEASE)
            agents[drainer].signal(signal.SIGKILL)
            killed = time.monotonic()
            agents[drainer].process.wait(timeout=5)
            survivors = sorted(set(hosts) - {drainer})
            await wait_for(
                lambda: sorted(holders(dsn)) == survivors and sum(holders(dsn).values()) == BUCKETS,
                15.0,
                "the survivors' takeover",
            )
            counts = [bmc.requests for bmc in fleet.bmcs]
            await wait_for(
                lambda: all(b.requests > c for b, c in zip(fleet.bmcs, counts, strict=True)),
                5.0,
                "every node read by the survivors",
                store=False,
            )
            assert time.monotonic() - killed <= DEAD + BEAT + INTERVAL + 2.5

            # Nova goes away. Two power actions from the CLI per node (each action's event is
            # kept) and flips at the BMC (the newest sync change replaces what is pending).
            def drained() -> bool:
                with shared(dsn) as store:
                    return store.notification_counts()["pending"] == 0

            await wait_for(drained, 10.0, "the first states delivered")  # POWER_ON each
            seen = {bmc.name: len(cloud.delivered(instances[bmc.name])) for bmc in fleet.bmcs}
            await cloud.go_away()
            acted, flipped = fleet.bmcs[:2], fleet.bmcs[2:4]
            for bmc in acted:
                for action in ("off", "on"):
                    done = await trio.run_process(
                        [sys.executable, "-m", "agent.cli.main", "--config",
                         str(tmp_path / f"{survivors[0]}.toml"), "power", bmc.name, action,
                         "--wait"],
                        capture_stdout=True, capture_stderr=True, check=False,
                    )  # fmt: skip
                    assert done.returncode == 0, done.stderr
            for bmc in flipped:
                bmc.set_power(False)

            def recorded_off() -> bool:
                with shared(dsn) as store:
                    return all(store.get_node(b.name).power_state == "power off" for b in flipped)

            await wait_for(recorded_off, 10.0, "the flips recorded")
            with shared(dsn) as store:
                assert store.notification_counts()["pending"] >= 2 * len(acted) + len(flipped)
            await trio.sleep(2 * INTERVAL)  # the drainer is backing off meanwhile
            await cloud.come_back()

            await wait_for(drained, 20.0, "every event delivered after the outage")

            def since_outage(bmc: Any) -> list[str]:
                return cloud.delivered(instances[bmc.name])[seen[bmc.name] :]

            for bmc in acted:  # in order, once each: one drainer at a time
                assert since_outage(bmc) == ["POWER_OFF", "POWER_ON"]
            for bmc in flipped:
                assert since_outage(bmc) == ["POWER_OFF"]
            assert all(since_outage(bmc) == [] for bmc in fleet.bmcs[4:])
            with shared(dsn) as store:
                counts_now = store.notification_counts()
                assert counts_now["dropped"] == 0, counts_now
            for host in survivors:
                assert "Traceback" not in agents[host].log.read_text()
        finally:
            for running in agents.values():
                running.stop()
        assert holders(dsn) == {}
