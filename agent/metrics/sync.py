"""The metrics the sync service exports (Prometheus text format via agent.metrics.registry).

Updated once per cycle from the cycle report, the store and the BMC pool's counters; the
per-node "seconds since last successful read" gauge is computed at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import trio

from agent.bmc.pool import BmcPool
from agent.metrics.registry import DURATION_BUCKETS, RTT_BUCKETS, Registry, serve_metrics
from agent.sync.report import CycleReport
from store import Node

log = logging.getLogger("powersync.metrics")

STATE_LABELS = ("power on", "power off", "unknown", "other")


class ServiceMetrics:
    def __init__(
        self,
        registry: Registry | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        agent_host: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``host``/``port``: where to listen; ``agent_host`` ([conductor] host) labels
        every series ``host=...``, so several agents of one site stay apart."""
        labels = {} if agent_host is None else {"host": agent_host}
        self.registry = registry or Registry(labels)
        self.host = host
        self.port = port
        self.wall = wall_clock
        r = self.registry
        self.cycle_duration = r.histogram(
            "powersync_sync_cycle_duration_seconds",
            "Duration of sync cycles",
            buckets=DURATION_BUCKETS,
        )
        self.cycle_nodes = r.gauge("powersync_sync_cycle_nodes", "Nodes in the last sync cycle")
        self.cycle_results = r.counter(
            "powersync_sync_node_results_total", "Per-node outcomes of sync cycles", ["action"]
        )
        self.nodes = r.gauge("powersync_nodes", "Nodes by recorded power state", ["power_state"])
        self.maintenance = r.gauge("powersync_nodes_maintenance", "Nodes in maintenance")
        self.faults = r.gauge("powersync_nodes_fault", "Nodes with a fault", ["fault"])
        self.health = r.gauge(
            "powersync_nodes_health", "Nodes by hardware health read during sync", ["health"]
        )
        self.rtt = r.histogram(
            "powersync_bmc_rtt_seconds", "BMC command round-trip time", buckets=RTT_BUCKETS
        )
        self.retransmits = r.counter("powersync_bmc_retransmits_total", "IPMI retransmissions")
        self.logins = r.counter("powersync_bmc_logins_total", "IPMI session logins and re-logins")
        self.sessions = r.gauge("powersync_bmc_sessions_open", "Long-lived BMC sessions open")
        self.failures = r.counter(
            "powersync_bmc_failures_total", "Failed BMC commands by error type", ["type"]
        )
        self.notifications = r.gauge(
            "powersync_notifications", "Nova notifications in the outbox by status", ["status"]
        )
        self.read_age = r.gauge(
            "powersync_node_last_read_age_seconds",
            "Seconds since the last successful BMC read, per node",
            ["node"],
        )
        self.bound_port: int | None = None  # the port actually listened on (port 0 = any)
        self._last_seen: dict[str, float] = {}
        self._pool_seen: dict[str, float] = {}
        r.on_collect(self._refresh_ages)

    def _refresh_ages(self) -> None:
        now = self.wall()
        self.read_age.clear()
        for name, seen in self._last_seen.items():
            self.read_age.labels(node=name).set(max(0.0, now - seen))

    def _delta(self, key: str, total: float) -> float:
        delta = total - self._pool_seen.get(key, 0.0)
        self._pool_seen[key] = total
        return max(0.0, delta)

    def observe_cycle(
        self,
        report: CycleReport,
        nodes: Sequence[Node],
        pool: BmcPool,
        notification_counts: Mapping[str, int],
    ) -> None:
        self.cycle_duration.observe(report.duration)
        self.cycle_nodes.set(len(report.results))
        for result in report.results:
            self.cycle_results.labels(action=result.action).inc()
        by_state = dict.fromkeys(STATE_LABELS, 0)
        by_fault: dict[str, int] = {}
        by_health: dict[str, int] = {}
        in_maintenance = 0
        self._last_seen = {}
        for node in nodes:
            state = node.power_state or "unknown"
            by_state[state if state in by_state else "other"] += 1
            in_maintenance += node.maintenance
            if node.fault:
                by_fault[node.fault] = by_fault.get(node.fault, 0) + 1
            health = node.health or "unknown"
            by_health[health] = by_health.get(health, 0) + 1
            if node.last_seen_at is not None:
                self._last_seen[node.name] = node.last_seen_at
        for state, count in by_state.items():
            self.nodes.labels(power_state=state).set(count)
        self.maintenance.set(in_maintenance)
        self.faults.clear()
        for fault, count in by_fault.items():
            self.faults.labels(fault=fault).set(count)
        self.health.clear()
        for health, count in by_health.items():
            self.health.labels(health=health).set(count)
        for result in report.results:
            rtt = pool.last_rtt.get(result.uuid)
            if rtt is not None and result.observed is not None:
                self.rtt.observe(rtt)
        counters = pool.statistics()
        self.retransmits.inc(self._delta("retransmits", counters.retransmits))
        self.logins.inc(self._delta("logins", counters.logins))
        for kind, count in counters.failures_by_type.items():
            self.failures.labels(type=kind).inc(self._delta(f"failure:{kind}", count))
        self.sessions.set(pool.open_sessions())
        for status in ("pending", "delivered", "dropped", "superseded"):
            self.notifications.labels(status=status).set(notification_counts.get(status, 0))

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        if self.host is None or self.port is None:
            task_status.started(0)
            return
        async with trio.open_nursery() as nursery:
            self.bound_port = await nursery.start(
                serve_metrics, self.registry, self.host, self.port
            )
            log.info("metrics on http://%s:%d/metrics", self.host, self.bound_port)
            task_status.started(self.bound_port)
