"""Code that runs in child processes for the multi-process store tests.

Kept out of test modules so ``multiprocessing`` (spawn) and ``python -m`` can import it
without importing pytest fixtures.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier

from store import HistoryRecord, NodeChange, open_store

BARRIER_TIMEOUT = 30.0


def race_for_lock(
    backend: str,
    path: str,
    node_uuid: str,
    holder: str,
    rounds: int,
    start_time: float,
    barrier: Barrier,
    results: Connection,
) -> None:
    """Each round: everyone tries to take the lock at once; report who won.

    Even rounds: the winner releases it. Odd rounds: the lock is left to expire, so the next
    round races to take over an expired lock.
    """
    wins: list[bool] = []
    with open_store(path, backend) as store:
        for round_number in range(rounds):
            now = start_time + round_number * 100.0  # each round starts after the last expired
            barrier.wait(BARRIER_TIMEOUT)
            won = store.acquire_lock(node_uuid, holder, ttl=50.0, now=now)
            wins.append(won)
            barrier.wait(BARRIER_TIMEOUT)
            if won and round_number % 2 == 0:
                assert store.release_lock(node_uuid, holder)
            barrier.wait(BARRIER_TIMEOUT)
    results.send(wins)
    results.close()


def write_until_killed(backend: str, path: str, limit: int = 100_000) -> None:
    """Write one-transaction changes in a loop, printing each write once it has returned."""
    with open_store(path, backend) as store:
        node = store.get_node("crash")
        count = node.sync_failures
        print("ready", count, flush=True)
        while count < limit:
            count += 1
            state = "power on" if count % 2 else "power off"
            store.apply(
                [
                    NodeChange(
                        node.uuid,
                        {"sync_failures": count, "power_state": state},
                        HistoryRecord(None, state, "sync", str(count)),
                        state,
                    )
                ]
            )
            print(count, flush=True)
            if count % 10 == 0:
                name = f"extra-{count}"
                store.add_node(
                    name=name, bmc_address="127.0.0.1", bmc_username="admin", bmc_password="pw"
                )
                print("added", name, flush=True)


if __name__ == "__main__":
    write_until_killed(sys.argv[1], sys.argv[2])
