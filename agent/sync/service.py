"""The power-sync service: the sync and recovery passes (the daemon is :mod:`agent.sync.daemon`).

::

    SyncService
    ├─ sync loop       every sync_power_state_interval: one cycle, never overlapping
    │   └─ agent.sync.lanes: sync_power_state_workers workers (and the failing lane's) pull
    │      nodes in jitter-offset order, each under its per-node deadline
    └─ recovery loop   every power_failure_recovery_interval: "power failure" nodes

Decisions come from :mod:`agent.sync.policy`; BMC sessions from :mod:`agent.bmc.pool`. Each cycle's
changes are written in one ``store.apply`` batch at its end; a change is dropped if the node
changed under the cycle (an operator or a power action got there first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

import trio

from agent.bmc.pool import BmcPool, NodeBmc
from agent.bmc.seam import BmcBusy, BmcError, Drivers, describe_error
from agent.config.nodes import node_inventory
from agent.config.options import AgentConfig
from agent.drivers import configured_drivers
from agent.site.membership import SiteMembership
from agent.storeio import AsyncStore
from agent.sync.lanes import NodePace, run_lanes
from agent.sync.policy import (
    Action,
    Decision,
    Observation,
    SyncSettings,
    decide_force_result,
    decide_recovery,
    decide_sync,
)
from agent.sync.power import FOR_STATE, drive, holding_lock
from agent.sync.report import (
    CycleReport,
    NodeProgress,
    NodeResult,
    fingerprint,
    node_change,
    node_result,
    prepare_pass,
)
from agent.sync.sizing import failing_lane_size, interval_warnings, overrun_warning
from store import Lease, Node, NodeChange, StoreError

log = logging.getLogger("powersync.sync")

SHUTDOWN_GRACE = 3.0  # seconds in-flight BMC work may take after SIGTERM/SIGINT
META_LAST_CYCLE = "last_cycle"
META_LAST_RECOVERY = "last_recovery"


def holder_name(role: str) -> str:
    """The lock holder string: who, where and what (``host:pid:role``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


def jitter_delay(node_uuid: str, window: float) -> float:
    """A node's start offset in the cycle: fixed per node, spread evenly over the window."""
    if window <= 0:
        return 0.0
    digest = hashlib.sha256(node_uuid.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * window


class Notifier(Protocol):
    def wake(self) -> None: ...
    async def run(self, *, task_status: Any = ...) -> None: ...


class MetricsSink(Protocol):
    def observe_cycle(
        self,
        report: CycleReport,
        nodes: Sequence[Node],
        pool: BmcPool,
        notification_counts: Mapping[str, int],
    ) -> None: ...


class SyncService:
    """One agent's sync and recovery passes over the store's nodes."""

    def __init__(
        self,
        config: AgentConfig,
        store: AsyncStore,
        pool: BmcPool,
        *,
        notifier: Notifier | None = None,
        metrics: MetricsSink | None = None,
        wall_clock: Callable[[], float] = time.time,
        holder: str | None = None,
        drivers: Drivers | None = None,
        site: SiteMembership | None = None,
    ) -> None:
        self.site = site  # several agents on one site: this one's share of the nodes
        self.drivers = drivers or configured_drivers(config)
        self.store = store
        self.pool = pool
        self.notifier = notifier
        self.metrics = metrics
        self.wall = wall_clock
        self.holder = holder or holder_name("sync")
        # One budget for every silent node of every pass (sync and recovery run side by
        # side): BMCs in flight stay within workers + failing_workers.
        self._silent_slots = trio.CapacityLimiter(1)  # sized by _use()
        self._use(config)
        self._pending: AgentConfig | None = None  # a reload waiting for the passes to end
        self._passes_running = 0
        # Set (and replaced) by stop() and reconfigure(): the loops' waits look again.
        self._nudge = trio.Event()
        # trio time of the sync loop's latest progress (a node or a cycle done), for the
        # systemd watchdog; None before the loop starts.
        self.last_progress: float | None = None
        self.cycle_hooks: list[Callable[[CycleReport], None]] = []  # after each sync cycle
        # A healthy node silent for much longer than usual (at most one retransmission
        # timeout) gets its worker replaced, so the healthy lane keeps moving.
        self._pace = NodePace(ceiling=self.drivers.request_timeout())
        self.stopping = trio.Event()
        self.cycles_started = 0
        self.cycles_running = 0  # > 1 would be an overlap; the tests watch it
        self.last_report: CycleReport | None = None
        self.nodes_total = 0  # nodes of the running pass (for progress display)
        self.nodes_done = 0
        self._passes = {"sync": 0, "recovery": 0}  # pass ids, counted per kind
        self._active_scopes: set[trio.CancelScope] = set()

    # --- lifecycle ----------------------------------------------------------------------

    def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Start no new work; in-flight BMC work gets ``grace`` seconds, then is cancelled."""
        if not self.stopping.is_set():
            log.info("stopping: no new work, %g s for work in flight", grace)
        self.stopping.set()
        self._wake_loops()
        deadline = trio.current_time() + grace
        for scope in self._active_scopes:
            scope.deadline = min(scope.deadline, deadline)

    async def upsert_static_nodes(self, config: AgentConfig | None = None) -> None:
        """The ``[[nodes]]`` of the config file (or of a reloaded one), inserted or updated."""
        config = config or self.config
        for static in config.nodes:
            fields = node_inventory(static, config.ipmi)
            await self.store.upsert_node(**fields)
        if config.nodes:
            log.info("upserted %d static node(s) from %s", len(config.nodes), config.source)

    def reconfigure(self, config: AgentConfig) -> None:
        """Take a reloaded configuration between passes: now if none runs, else when the
        running ones end (a pass never mixes two configurations)."""
        self._pending = config
        if self._passes_running == 0:
            self._apply_pending()
        self._wake_loops()  # a changed interval counts from the last cycle's start

    def _use(self, config: AgentConfig) -> None:
        self.config = config
        self.conductor = config.conductor
        self.settings = SyncSettings(
            force=config.conductor.force_power_state_during_sync,
            max_retries=config.conductor.power_state_sync_max_retries,
        )
        self.workers = config.conductor.sync_power_state_workers
        # The failing lane (agent.sync.lanes): nodes whose last pass failed, and recovery
        # probes; sized again at each sync pass when the option is unset.
        self._size_failing_lane(failing=0)
        self._warned: frozenset[str] = frozenset()  # warned again after a reload
        self.pool.limit_background(self.workers)

    def _size_failing_lane(self, *, failing: int) -> None:
        configured = self.conductor.sync_failing_node_workers
        self.failing_workers = failing_lane_size(configured, failing)
        self._silent_slots.total_tokens = self.failing_workers

    def _check_capacity(self, failing: int) -> None:
        """Warn when a problem keeping the interval appears (see agent.sync.sizing)."""
        self._size_failing_lane(failing=failing)
        warnings = interval_warnings(
            self.conductor, failing=failing, failing_workers=self.failing_workers
        )
        for problem in warnings.keys() - self._warned:
            log.warning("%s", warnings[problem])
        self._warned = frozenset(warnings)

    def _apply_pending(self) -> None:
        config, self._pending = self._pending, None
        if config is None:
            return
        old = self.config
        if config.ipmi != old.ipmi or (
            config.conductor.min_command_interval != old.conductor.min_command_interval
        ):
            # The clients' retry settings live in their sessions: log in again with the new.
            self.drivers.replace(configured_drivers(config))
            self.pool.keepalive_interval = self.drivers.keepalive_interval
            self.pool.min_command_interval = config.conductor.min_command_interval
            self.pool.retain(set())
        # Passwords may have been fixed: refused logins are tried again at once.
        self.pool.logins_refused.reset()
        self._use(config)

    def _wake_loops(self) -> None:
        nudge, self._nudge = self._nudge, trio.Event()
        nudge.set()

    # --- loops --------------------------------------------------------------------------

    async def sync_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        self.last_progress = trio.current_time()
        while not self.stopping.is_set():
            interval = self.conductor.sync_power_state_interval
            if interval <= 0:
                log.info("power sync disabled (sync_power_state_interval = %g)", interval)
                await self._nudge.wait()  # a stop, or a reload that may enable it
                self.last_progress = trio.current_time()
                continue
            started = trio.current_time()
            report = await self.run_cycle()
            self.last_progress = trio.current_time()
            for hook in self.cycle_hooks:
                hook(report)
            duration = trio.current_time() - started
            if duration > interval:
                overrun = overrun_warning(
                    report.cycle, duration, self.conductor, self.failing_workers
                )
                log.warning("%s", overrun, extra={"cycle": report.cycle})
            await self._wait_from(started, "sync_power_state_interval")

    async def recovery_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while not self.stopping.is_set():
            if self.conductor.power_failure_recovery_interval <= 0:
                log.info("power failure recovery disabled (power_failure_recovery_interval = 0)")
                await self._nudge.wait()
                continue
            if await self._wait_from(trio.current_time(), "power_failure_recovery_interval"):
                await self.run_recovery()

    async def _wait_from(self, started: float, option: str) -> bool:
        """Sleep until ``started`` + the interval named ``option``, read again after each
        reload; False when stopping (or the interval became 0) instead."""
        while not self.stopping.is_set():
            interval = getattr(self.conductor, option)
            if interval <= 0:
                return False
            nudge = self._nudge
            with trio.move_on_at(started + interval):
                await nudge.wait()
            if not nudge.is_set():
                return True
        return False

    # --- one pass -----------------------------------------------------------------------

    async def run_cycle(self) -> CycleReport:
        """One sync pass over every node (``powersync sync --once`` runs exactly this)."""
        self.cycles_started += 1
        self.cycles_running += 1
        try:
            return await self._counted("sync")
        finally:
            self.cycles_running -= 1

    async def run_recovery(self) -> CycleReport:
        """Probe every node in "power failure" maintenance once."""
        return await self._counted("recovery")

    async def _counted(self, kind: str) -> CycleReport:
        self._passes_running += 1
        try:
            return await self._pass(kind)
        finally:
            self._passes_running -= 1
            if self._passes_running == 0:
                self._apply_pending()

    async def _pass(self, kind: str) -> CycleReport:
        self._passes[kind] += 1
        cycle = self._passes[kind]
        started_wall = self.wall()
        started = trio.current_time()
        if kind == "sync":
            nodes = self._owned(await self.store.list_nodes())
            # Sessions of deleted nodes, and of nodes now another agent's, are closed.
            owned = {node.uuid for node in nodes}
            self.pool.retain(owned)
            self.drivers.retain(owned)
            self._pace.ceiling = self._request_timeout(nodes)
        else:
            nodes = self._owned(
                await self.store.list_nodes(maintenance=True, fault="power failure")
            )
        work = prepare_pass(nodes, kind, now=self.wall())
        for progress in work:
            if "target_power_state" in progress.extra:  # an abandoned power action's
                message = progress.extra["last_error"]
                log.warning(
                    "node %s: %s", progress.node.name, message, extra=self._extra(progress, cycle)
                )
        results: list[NodeResult] = []

        self.nodes_total = len(work)
        self.nodes_done = sum(1 for progress in work if progress.skipped is not None)
        healthy, failing = self._lanes(work, kind)
        if kind == "sync":
            self._check_capacity(len(failing))
        stalls = 0
        with trio.CancelScope() as scope:
            self._active_scopes.add(scope)
            try:
                stalls = await run_lanes(
                    healthy,
                    failing,
                    workers=self.workers,
                    failing_workers=self.failing_workers,
                    started=started,
                    stopping=self.stopping,
                    run=partial(self._run_node, cycle=cycle, kind=kind),
                    pace=self._pace,
                    silent_slots=self._silent_slots,
                )
            finally:
                self._active_scopes.discard(scope)
        if stalls:
            log.info(
                "%s pass %d: %d node(s) went quiet and waited aside, so the others went on",
                kind,
                cycle,
                stalls,
                extra={"cycle": cycle},
            )
        if scope.cancelled_caught:
            log.warning("%s pass %d cut short by shutdown", kind, cycle, extra={"cycle": cycle})
            for progress in work:
                if progress.skipped is None and progress.decision is None:
                    progress.skipped = "cut short by shutdown"

        changes: list[NodeChange] = []
        names: dict[str, str] = {}  # node uuid -> name, for the log of dropped changes
        for progress in work:
            results.append(node_result(progress))
            change = node_change(
                progress,
                self.holder,
                notify=self.config.nova.send_power_notifications,
                fence=self._fence(progress.node),
            )
            if change is not None:
                changes.append(change)
                names[change.node_uuid] = progress.node.name
        with trio.CancelScope(shield=True):  # the batch is written even while stopping
            applied, dropped = await self._apply(changes, names, cycle)
        duration = trio.current_time() - started
        report = CycleReport(
            cycle=cycle,
            kind=kind,
            started_at=started_wall,
            duration=duration,
            results=tuple(results),
            applied=applied,
            dropped=tuple(dropped),
        )
        summary = report.summary()
        with trio.CancelScope(shield=True):
            await self._write_meta(
                META_LAST_CYCLE if kind == "sync" else META_LAST_RECOVERY, summary
            )
        level = logging.INFO if kind == "sync" or summary["recovered"] else logging.DEBUG
        log.log(level, "%s", report.headline(), extra={"cycle": cycle})
        if self.notifier is not None and any(c.notification for c in changes):
            self.notifier.wake()
        if kind == "sync":
            self.last_report = report
            if self.metrics is not None:
                with trio.CancelScope(shield=True):
                    await self._observe(report)
        return report

    async def _observe(self, report: CycleReport) -> None:
        assert self.metrics is not None
        try:
            nodes = await self.store.list_nodes()
            counts = await self.store.notification_counts()
        except StoreError as exc:
            log.warning("metrics not updated: %s", exc)
            return
        self.metrics.observe_cycle(report, nodes, self.pool, counts)

    def _lanes(
        self, work: Sequence[NodeProgress], kind: str
    ) -> tuple[list[tuple[float, NodeProgress]], list[tuple[float, NodeProgress]]]:
        """The pass's nodes with their start offsets, as (healthy lane, failing lane)."""
        healthy: list[tuple[float, NodeProgress]] = []
        failing: list[tuple[float, NodeProgress]] = []
        window = self.conductor.sync_jitter_window if kind == "sync" else 0.0
        for progress in work:
            if progress.skipped is None:
                offset = jitter_delay(progress.node.uuid, window)
                lane = failing if kind == "recovery" or progress.node.sync_failures > 0 else healthy
                lane.append((offset, progress))
        return healthy, failing

    async def _run_node(self, progress: NodeProgress, *, cycle: int, kind: str) -> bool:
        """One node's work; True when it was a plain read (a sample of a node's usual pace)."""
        try:
            await self._one_node(progress, cycle, kind)
        finally:
            self.nodes_done += 1
            if kind == "sync":
                self.last_progress = trio.current_time()
        decision = progress.decision
        return (
            progress.observation is not None
            and progress.observation.ok
            and (decision is None or decision.action is not Action.FORCE)
        )

    async def _one_node(self, progress: NodeProgress, cycle: int, kind: str) -> None:
        if self.stopping.is_set():
            progress.skipped = "shutting down"
            return
        if self.site is not None and self._fence(progress.node) is None:
            progress.skipped = "its bucket moved to another agent"
            return
        timeout = self.conductor.sync_node_timeout
        with trio.move_on_after(timeout) as deadline:
            await self._with_bmc(progress, cycle, kind)
        if deadline.cancelled_caught:
            self._timed_out(progress, timeout, kind)
        self._log_decisions(progress, cycle)

    async def _with_bmc(self, progress: NodeProgress, cycle: int, kind: str) -> None:
        node = progress.node
        try:
            endpoint = self.drivers.endpoint(node)
            async with self.pool.lease(node.uuid, endpoint) as bmc:
                try:
                    state = await bmc.get_power()
                except BmcError as exc:
                    self._failed(progress, exc, kind)
                    return
                progress.observation = Observation.read(state)
                progress.seen_at = self.wall()
                progress.health = bmc.health
                # Outside any BMC error handling: a bug in the rules is not a BMC failure.
                progress.decision = self._decide(node, progress.observation, kind)
                if kind == "sync" and progress.decision.action is Action.FORCE:
                    await self._force(progress, bmc, cycle)
        except BmcError as exc:  # no endpoint, the pool closed, or closing a per-cycle session
            if progress.observation is None:
                self._failed(progress, exc, kind)
            else:
                log.debug("node %s: closing the BMC session: %s", node.name, describe_error(exc))

    def _owned(self, nodes: Sequence[Node]) -> list[Node]:
        """The nodes this agent syncs: all of them, or on a shared site its buckets' only."""
        site = self.site
        if site is None:
            return list(nodes)
        return [node for node in nodes if site.lease_for(node.uuid) is not None]

    def _fence(self, node: Node) -> Lease | None:
        """The lease every write and lock for ``node`` is fenced with (None: one agent)."""
        return None if self.site is None else self.site.lease_for(node.uuid)

    def _request_timeout(self, nodes: Sequence[Node]) -> float:
        """The stall ceiling for this fleet: its drivers' longest one-request timeout."""
        try:
            return self.drivers.request_timeout({node.driver for node in nodes})
        except BmcError:  # a node of a driver this agent lacks: it fails on its own
            return self.drivers.request_timeout()

    def _failed(self, progress: NodeProgress, exc: BmcError, kind: str) -> None:
        node = progress.node
        busy_for = None
        if isinstance(exc, BmcBusy) and node.last_seen_at is not None:
            busy_for = max(0.0, self.wall() - node.last_seen_at)
        progress.observation = Observation.failed(describe_error(exc), busy_for=busy_for)
        progress.decision = self._decide(node, progress.observation, kind)

    def _decide(self, node: Node, observation: Observation, kind: str) -> Decision:
        if kind == "recovery":
            return decide_recovery(node, observation)
        return decide_sync(node, observation, self.settings)

    def _timed_out(self, progress: NodeProgress, timeout: float, kind: str) -> None:
        node = progress.node
        text = f"no answer within sync_node_timeout ({timeout:g} s)"
        stage = self.pool.stage(node.uuid)
        if stage is not None:
            text += f" during {stage}"
        if progress.decision is None:
            progress.observation = Observation.failed(text)
            progress.decision = self._decide(node, progress.observation, kind)
        elif progress.decision.action is Action.FORCE and progress.force_result is None:
            target = progress.decision.force_to or ""
            if progress.skipped is None:
                progress.force_result = decide_force_result(node, target, f"not confirmed: {text}")

    async def _force(self, progress: NodeProgress, bmc: NodeBmc, cycle: int) -> None:
        """Drive the hardware back to the record, holding the node's lock in the store."""
        node = progress.node
        assert progress.decision is not None and progress.observation is not None
        target = progress.decision.force_to or ""
        ttl = self.conductor.lock_ttl
        fence = self._fence(node)
        async with holding_lock(
            self.store, node, self.holder, ttl=ttl, wall=self.wall, fence=fence
        ) as held:
            if not held:
                progress.skipped = "locked by another holder"
                log.info(
                    "node %s is locked, skipping", node.name, extra=self._extra(progress, cycle)
                )
                return
            if node.reservation is not None and node.reservation != self.holder:
                log.warning(
                    "node %s: took over the expired lock of %s",
                    node.name,
                    node.reservation,
                    extra=self._extra(progress, cycle),
                )
            fresh = await self.store.get_node(node.uuid)
            if fingerprint(fresh) != fingerprint(node):
                progress.skipped = "changed while the sync was reading it"
                return
            try:
                # The node's deadline (sync_node_timeout) bounds the confirmation.
                await drive(bmc, FOR_STATE[target], before=progress.observation.power_state)
            except BmcError as exc:
                progress.force_result = decide_force_result(node, target, describe_error(exc))
            else:
                progress.force_result = decide_force_result(node, target, None)

    # --- results and the batch ----------------------------------------------------------

    def _extra(self, progress: NodeProgress, cycle: int) -> dict[str, object]:
        return {"node": progress.node.name, "bmc": progress.bmc, "cycle": cycle}

    def _log_decisions(self, progress: NodeProgress, cycle: int) -> None:
        for decision in (progress.decision, progress.force_result):
            if decision is not None and decision.message and progress.skipped is None:
                log.log(decision.log_level, decision.message, extra=self._extra(progress, cycle))

    async def _apply(
        self, changes: Sequence[NodeChange], names: Mapping[str, str], cycle: int
    ) -> tuple[bool, list[str]]:
        if not changes:
            return True, []
        try:
            # The store drops a change whose node moved since the pass read it (an operator
            # or a power action got there first), in the same transaction as the write.
            conflicts = await self.store.apply(changes, now=self.wall())
            dropped = [names[uuid] for uuid in conflicts]
        except StoreError as exc:
            log.error(  # noqa: TRY400 (one line: the store error says it all)
                "pass %d: could not write the batch: %s", cycle, exc, extra={"cycle": cycle}
            )
            return False, []
        for name in dropped:
            log.info(
                "node %s changed during pass %d; its result was not written",
                name,
                cycle,
                extra={"node": name, "cycle": cycle},
            )
        return True, dropped

    async def _write_meta(self, key: str, summary: dict[str, Any]) -> None:
        text = json.dumps(summary, sort_keys=True)
        try:
            await self.store.set_meta(key, text)
        except StoreError as exc:
            log.error("could not record %s: %s", key, exc)  # noqa: TRY400
