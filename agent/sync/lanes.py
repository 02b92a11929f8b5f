"""How one pass spreads its nodes over workers: two lanes, and a watchdog for stalled workers.

* The **healthy lane**: nodes whose last pass went well, read by ``workers`` workers.
* The **failing lane**: nodes whose last pass failed (and recovery probes). A dead BMC holds a
  worker for a whole deadline, mostly spent waiting on retransmission timers, so these nodes
  wait side by side, at most ``failing_workers`` at a time, and never hold the healthy
  lane's workers.

A healthy node can go silent too (a BMC that died since the last pass, or a lost datagram
waiting for its retransmission). A watchdog notices a healthy worker whose node has taken
much longer than a typical node (:class:`NodePace`), and starts a replacement worker, so
the healthy lane keeps ``workers`` nodes moving. The stalled worker finishes its node and
then stops. Stalled workers take their slots from the failing lane's: at most
``failing_workers`` nodes wait on silence at once, whichever lane they came from. So the
BMCs in flight are at most ``workers`` (the sync) plus ``failing_workers`` (failing nodes,
stalled ones and recovery probes, when the passes share one limiter), logins included.

Workers pull nodes from a queue in start-offset order (the jitter window) instead of one
task per node waiting on a limiter: the same schedule, without 10,000 parked tasks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

T = TypeVar("T")

# A healthy node is stalled once it has taken STALL_FACTOR times a typical node's time, but
# never sooner than STALL_FLOOR seconds (scheduling noise on a busy loop must not look like
# a stall) and never later than the pace's ceiling (one retransmission timeout). Stepping
# aside sends no datagram, so the floor is below the client's shortest retransmission wait:
# a node waiting on a lost datagram steps aside before its retransmission is due.
STALL_FACTOR = 4.0
STALL_FLOOR = 0.01
PACE_WEIGHT = 0.1  # weight of each new sample in the running mean


class NodePace:
    """A running mean of how long a healthy node takes, kept across passes."""

    __slots__ = ("ceiling", "typical")

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.typical: float | None = None

    def stall_after(self) -> float:
        """Seconds after which a healthy node's worker is replaced."""
        if self.typical is None:
            return self.ceiling
        return min(self.ceiling, max(STALL_FLOOR, STALL_FACTOR * self.typical))

    def observe(self, seconds: float) -> None:
        if self.typical is None:
            self.typical = seconds
        else:
            self.typical += PACE_WEIGHT * (seconds - self.typical)


class _Worker:
    __slots__ = ("node_started", "stalled")

    def __init__(self) -> None:
        self.node_started: float | None = None
        self.stalled = False


# run(item) -> True when the node's time is a typical one (a plain read), for NodePace.
RunNode = Callable[[T], Awaitable[bool]]


class _Pass(Generic[T]):
    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        started: float,
        stopping: trio.Event,
        run: RunNode[T],
        pace: NodePace,
        silent_slots: trio.CapacityLimiter,
    ) -> None:
        self.nursery = nursery
        self.started = started
        self.stopping = stopping
        self.run = run
        self.pace = pace
        self.silent_slots = silent_slots
        self.active: set[_Worker] = set()
        self.stalls = 0
        self.watch_scope = trio.CancelScope()

    async def wait_turn(self, offset: float) -> None:
        wait = self.started + offset - trio.current_time()
        if wait > 0 and not self.stopping.is_set():
            with trio.move_on_after(wait):
                await self.stopping.wait()

    async def healthy_worker(self, queue: deque[tuple[float, T]]) -> None:
        worker = _Worker()
        self.active.add(worker)
        try:
            while queue and not worker.stalled:
                offset, item = queue.popleft()
                if not queue:
                    self.watch_scope.cancel()  # nothing left to hand to a replacement
                await self.wait_turn(offset)
                worker.node_started = begun = trio.current_time()
                typical = await self.run(item)
                worker.node_started = None
                if typical and not worker.stalled:
                    self.pace.observe(trio.current_time() - begun)
        finally:
            self.active.discard(worker)
            if worker.stalled:
                self.silent_slots.release_on_behalf_of(worker)

    async def failing_worker(self, queue: deque[tuple[float, T]]) -> None:
        while queue:
            offset, item = queue.popleft()
            await self.wait_turn(offset)
            async with self.silent_slots:
                await self.run(item)

    async def watch(self, queue: deque[tuple[float, T]]) -> None:
        """Replace healthy workers whose node went silent, while nodes are left to read."""
        with self.watch_scope:
            while queue:
                limit = self.pace.stall_after()
                await trio.sleep(limit / 2)
                now = trio.current_time()
                for worker in list(self.active):
                    started = worker.node_started
                    if started is None or now - started < limit:
                        continue
                    try:
                        self.silent_slots.acquire_on_behalf_of_nowait(worker)
                    except trio.WouldBlock:
                        break  # every silent slot is taken: wait for one to free up
                    worker.stalled = True
                    self.active.discard(worker)
                    self.stalls += 1
                    self.nursery.start_soon(self.healthy_worker, queue)


async def run_lanes(
    healthy: Sequence[tuple[float, T]],
    failing: Sequence[tuple[float, T]],
    *,
    workers: int,
    failing_workers: int,
    started: float,
    stopping: trio.Event,
    run: RunNode[T],
    pace: NodePace,
    silent_slots: trio.CapacityLimiter | None = None,
) -> int:
    """Run every item of both lanes; items are (start offset, item). Returns the stalls seen.

    ``silent_slots`` bounds the failing lane and the stalled workers together; a service
    shares one across its passes (sync and recovery), so ``failing_workers`` bounds them all.
    """
    healthy_queue = deque(sorted(healthy, key=lambda entry: entry[0]))
    failing_queue = deque(sorted(failing, key=lambda entry: entry[0]))
    async with trio.open_nursery() as nursery:
        one_pass = _Pass(
            nursery,
            started=started,
            stopping=stopping,
            run=run,
            pace=pace,
            silent_slots=silent_slots or trio.CapacityLimiter(failing_workers),
        )
        for _ in range(min(workers, len(healthy_queue))):
            nursery.start_soon(one_pass.healthy_worker, healthy_queue)
        for _ in range(min(failing_workers, len(failing_queue))):
            nursery.start_soon(one_pass.failing_worker, failing_queue)
        if len(healthy_queue) > workers:
            nursery.start_soon(one_pass.watch, healthy_queue)
    return one_pass.stalls
