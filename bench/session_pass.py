"""Cycles over a fleet with one of powersync's clients, IPMI or Redfish, as the agent runs
them: ``workers`` trio tasks pull the nodes in turn, each node under a per-node deadline,
logging in where it has no session. Used by the child processes bench.powersync_pass and
bench.redfish_pass, which say how to open a session and what to do with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from bench.child import Stopwatch, count_error, difference


class Cycle:
    """What one cycle read: the power per node (None on failure), error counts, and the
    sessions' counters named ``fields``."""

    def __init__(self, count: int, fields: Sequence[str]) -> None:
        self.powers: list[bool | None] = [None] * count
        self.errors: dict[str, int] = {}
        self.counts = dict.fromkeys(fields, 0)

    def fail(self, error: str) -> None:
        count_error(self.errors, error)

    def add_stats(self, session: Any) -> None:
        snapshot = session.statistics()
        for name in self.counts:
            self.counts[name] += int(getattr(snapshot, name, 0))

    def entry(self, watch: Stopwatch, counts_key: str) -> dict[str, Any]:
        """The cycle in the child's JSON report."""
        return {
            "wall_s": watch.wall_s,
            "cpu_s": watch.cpu_s,
            "powers": self.powers,
            "errors": self.errors,
            counts_key: self.counts,
        }


class SessionPass:
    """The fleet's sessions and a fixed set of workers. A session's context is entered by
    one task and left by another, which ``open_bmc`` and ``open_redfish`` allow (they hold
    no cancel scope across their yield)."""

    fields: tuple[str, ...] = ()  # the session statistics a cycle sums
    failures: tuple[type[Exception], ...] = ()  # what the client raises for a failed node

    def __init__(self, count: int, *, workers: int, deadline: float, keep: bool) -> None:
        self.count = count
        self.workers = workers
        self.deadline = deadline
        self.keep = keep  # sessions stay open across cycles (else one login per cycle)
        self.sessions: dict[int, tuple[AbstractAsyncContextManager[Any], Any]] = {}

    def connect(self, index: int) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def operate(self, session: Any) -> bool | None:
        raise NotImplementedError

    async def close(self, index: int, cycle: Cycle | None) -> None:
        context, session = self.sessions.pop(index)
        with trio.CancelScope(shield=True):
            await context.__aexit__(None, None, None)
        if cycle is not None:  # a per-cycle session's logout belongs to its cycle
            cycle.add_stats(session)

    async def one(self, index: int, cycle: Cycle) -> None:
        error = "deadline"
        with trio.move_on_after(self.deadline):
            try:
                if index not in self.sessions:
                    context = self.connect(index)
                    self.sessions[index] = (context, await context.__aenter__())
                cycle.powers[index] = await self.operate(self.sessions[index][1])
            except self.failures as exc:
                error = type(exc).__name__
            else:
                if not self.keep:
                    await self.close(index, cycle)
                return
        cycle.fail(error)
        if index in self.sessions:
            await self.close(index, cycle)

    async def worker(self, queue: deque[int], cycle: Cycle) -> None:
        while queue:
            await self.one(queue.popleft(), cycle)

    async def cycle(self, cycle: Cycle) -> None:
        queue = deque(range(self.count))
        async with trio.open_nursery() as nursery:
            for _ in range(min(self.workers, self.count)):
                nursery.start_soon(self.worker, queue, cycle)

    def totals(self) -> dict[str, int]:
        """Statistics summed over the open (long-lived) sessions."""
        sums = Cycle(0, self.fields)
        for _, session in self.sessions.values():
            sums.add_stats(session)
        return sums.counts

    async def measure(
        self,
        cycles: int,
        pause: float,
        counts_key: str,
        server: Callable[[], dict[str, int] | None] | None = None,
    ) -> list[dict[str, Any]]:
        """``cycles`` timed cycles, ``pause`` seconds apart, then every session closed.
        ``server`` reads the servers' own counters, around each cycle's timed part."""
        report: list[dict[str, Any]] = []
        counted = self.totals()
        for number in range(cycles):
            if number:
                await trio.sleep(pause)
            cycle = Cycle(self.count, self.fields)
            before = None if server is None else server()
            with Stopwatch() as watch:
                await self.cycle(cycle)
            now = self.totals()  # long-lived sessions: their counts this cycle
            for name in self.fields:
                cycle.counts[name] += now[name] - counted[name]
            counted = now
            report.append(cycle.entry(watch, counts_key))
            if server is not None:
                report[-1]["server"] = difference(server(), before)
        for index in list(self.sessions):  # close the long-lived sessions
            await self.close(index, None)
        return report
