"""Real processes against real stores: lock races and SIGKILL in the middle of writes.

On all three backends: the files, and a fresh database on the session's PostgreSQL server."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import open_store
from tests.store.helpers import INSTANCE, T0, add, store_path
from tests.store.pgserver import PgServer
from tests.store.workers import race_for_lock

ROOT = Path(__file__).resolve().parents[2]
RACE_ROUNDS = 300
KILLS = 30


@pytest.fixture
def location(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the children open the store: a file path, or a DSN (no password: trust auth)."""
    if backend != "postgresql":
        yield store_path(tmp_path, backend)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with server.database() as dsn:
        yield dsn


@pytest.mark.slow
def test_two_processes_racing_for_one_lock(location: str, backend: str) -> None:
    path = location
    with open_store(path, backend) as store:
        node = add(store)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    holders = ("daemon@host:1", "cli@host:2")
    pipes = [context.Pipe(duplex=False) for _ in holders]
    processes = [
        context.Process(
            target=race_for_lock,
            args=(backend, path, node.uuid, holder, RACE_ROUNDS, T0, barrier, sender),
        )
        for holder, (_, sender) in zip(holders, pipes, strict=True)
    ]
    for process in processes:
        process.start()
    try:
        results = []
        for receiver, _ in pipes:
            assert receiver.poll(120), "a racing process did not finish"
            results.append(receiver.recv())
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    assert [p.exitcode for p in processes] == [0, 0]
    first, second = results
    assert len(first) == len(second) == RACE_ROUNDS
    winners = [int(a) + int(b) for a, b in zip(first, second, strict=True)]
    assert winners == [1] * RACE_ROUNDS, "a round with no winner or two winners"
    # Both processes won some rounds: a real race, not one process always first.
    assert 0 < sum(first) < RACE_ROUNDS
    last_round = RACE_ROUNDS - 1
    with open_store(path, backend) as store:
        held = store.get_node(node.uuid)
    if last_round % 2 == 1:  # the last round's winner kept the lock
        expected = holders[0] if first[last_round] else holders[1]
        assert held.reservation == expected
        assert held.reservation_expires_at == T0 + last_round * 100.0 + 50.0


def check_store_after_kill(path: str, backend: str, reported: int, added: list[str]) -> int:
    """Reopen, verify integrity, and that every reported write is there. Returns the count."""
    if backend == "sqlite":
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
    elif backend == "json":
        with open(path, "rb") as file:
            json.loads(file.read())
    with open_store(path, backend) as store:
        node = store.get_node("crash")
        count = node.sync_failures
        assert count >= reported, f"write {reported} returned before the kill but is lost"
        # One transaction per write: field, history row and outbox row all or nothing.
        history = store.history("crash", limit=1_000_000)
        assert len(history) == count
        assert count == 0 or history[0].message == str(count)  # 0: killed before its 1st write
        counts = store.notification_counts()
        assert counts["pending"] == min(count, 1)
        assert counts["pending"] + counts["superseded"] == count
        for pending in store.due_notifications(now=time.time() + 1):
            assert pending.power_state == node.power_state
            assert pending.power_state == ("power on" if count % 2 else "power off")
        names = {n.name for n in store.list_nodes()}
        assert set(added) <= names
    return count


@pytest.mark.slow
def test_sigkill_during_writes_loses_nothing_that_returned(location: str, backend: str) -> None:
    path = location
    with open_store(path, backend) as store:
        add(store, "crash", instance_uuid=INSTANCE)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    added: list[str] = []
    count = 0
    kills_mid_run = 0
    for attempt in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.store.workers", backend, path],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            ready = child.stdout.readline().split()
            assert ready[:1] == ["ready"], (ready, child.stderr.read() if child.stderr else "")
            assert int(ready[1]) == count
            time.sleep(rng.uniform(0.0, 0.25))
            child.send_signal(signal.SIGKILL)
            output, errors = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL, (attempt, seed, errors)
        lines = output.splitlines()
        numbers = [int(line) for line in lines if line.isdigit()]
        added += [line.split()[1] for line in lines if line.startswith("added ")]
        reported = numbers[-1] if numbers else count
        kills_mid_run += bool(numbers)
        count = check_store_after_kill(path, backend, reported, added)
    # The children did real work between kills (seed in the message for a rerun).
    assert count >= KILLS // 2, f"seed={seed}"
    assert kills_mid_run >= KILLS // 2, f"seed={seed}"
