"""``powersync status [--json]``: the fleet at a glance, read from the store.

Nodes by power state, nodes in maintenance with their reasons, faults, the last sync cycle
and recovery pass (the service writes their summaries as JSON to the store's meta keys
``last_cycle`` and ``last_recovery``) and the Nova notification outbox. Works while the daemon
runs (it only reads).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

from agent.cli.common import format_time, open_configured_store, print_json, store_errors
from agent.config.options import AgentConfig, load_config
from agent.site.membership import BUCKETS
from store import OUTBOX_LEASE, Conductor, Lease, Node, bucket_lease, bucket_of

LAST_CYCLE_KEY = "last_cycle"
LAST_RECOVERY_KEY = "last_recovery"
# A last cycle older than this many intervals means the daemon is not syncing.
STALE_INTERVALS = 3
_CYCLE_KEYS = ("started_at", "duration", "nodes", "ok", "failed", "changed", "forced")
# Shown when the service recorded them (it may record more than the pinned keys).
_OPTIONAL_KEYS = ("cycle", "skipped", "maintenance", "recovered")
_COUNT_KEYS = ("ok", "failed", "changed", "forced", "skipped", "maintenance", "recovered")


def _last_pass(raw: str | None, interval: float, now: float) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        cycle = json.loads(raw)
    except json.JSONDecodeError:
        return {"unreadable": True}
    if not isinstance(cycle, dict):
        return {"unreadable": True}
    summary: dict[str, Any] = {key: cycle.get(key) for key in _CYCLE_KEYS}
    summary |= {key: cycle[key] for key in _OPTIONAL_KEYS if cycle.get(key) is not None}
    started = cycle.get("started_at")
    if isinstance(started, int | float):
        summary["age"] = max(0.0, now - started)
        summary["stale"] = interval > 0 and summary["age"] > STALE_INTERVALS * interval
    return summary


def agents(
    nodes: list[Node],
    conductors: list[Conductor],
    leases: list[Lease],
    server_now: float,
    timeout: float,
) -> list[dict[str, Any]]:
    """The agents of a shared site: host, heartbeat, nodes owned (by bucket lease), last cycle."""
    holders = {lease.name: lease.holder for lease in leases if lease.expires_at > server_now}
    owned: dict[str, int] = {}
    for node in nodes:
        holder = holders.get(bucket_lease(bucket_of(node.uuid, BUCKETS)))
        if holder is not None:
            owned[holder] = owned.get(holder, 0) + 1
    listed = []
    for conductor in conductors:
        try:
            last_cycle = json.loads(conductor.info) if conductor.info else None
        except ValueError:
            last_cycle = None
        listed.append(
            {
                "host": conductor.host,
                "alive": conductor.alive(server_now, timeout),
                "last_heartbeat": conductor.last_heartbeat,
                "heartbeat_age": round(max(0.0, server_now - conductor.last_heartbeat), 3),
                "started_at": conductor.started_at,
                "nodes_owned": owned.get(conductor.host, 0),
                "drains_outbox": holders.get(OUTBOX_LEASE) == conductor.host,
                "last_cycle": last_cycle,
            }
        )
    return listed


def collect(
    nodes: list[Node],
    counts: dict[str, int],
    cycle: dict[str, Any] | None,
    now: float,
    recovery: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status document (what ``--json`` prints)."""
    by_state = Counter(node.power_state or "unknown" for node in nodes)
    faults = Counter(node.fault for node in nodes if node.fault)
    health = Counter(node.health or "unknown" for node in nodes)
    provision = Counter(node.provision_state or "unknown" for node in nodes)
    return {
        "nodes": len(nodes),
        "power_states": dict(sorted(by_state.items())),
        "maintenance": [
            {"name": node.name, "reason": node.maintenance_reason, "fault": node.fault}
            for node in nodes
            if node.maintenance
        ],
        "faults": dict(sorted(faults.items())),
        "health": dict(sorted(health.items())),
        "unhealthy": [
            {"name": node.name, "health": node.health}
            for node in nodes
            if node.health not in (None, "ok")
        ],
        "provision_states": dict(sorted(provision.items())),
        "locked": sum(1 for node in nodes if node.is_locked(now)),
        "last_cycle": cycle,
        "last_recovery": recovery,
        "notifications": {
            key: counts.get(key, 0) for key in ("pending", "delivered", "dropped", "superseded")
        },
    }


def _print_text(status: dict[str, Any], config: AgentConfig) -> None:
    print(f"store: {status.get('store', config.store.path)} ({config.store.backend})")
    states = ", ".join(f"{count} {state}" for state, count in status["power_states"].items())
    print(f"nodes: {status['nodes']}" + (f" ({states})" if states else ""))
    maintenance = status["maintenance"]
    print(f"maintenance: {len(maintenance)}")
    for entry in maintenance:
        detail = entry["reason"] or "no reason given"
        fault = f" [fault: {entry['fault']}]" if entry["fault"] else ""
        print(f"  {entry['name']}: {detail}{fault}")
    faults = ", ".join(f"{count} {fault}" for fault, count in status["faults"].items())
    print(f"faults: {faults or 'none'}")
    health = ", ".join(f"{count} {word}" for word, count in status["health"].items())
    print(f"health: {health or 'none read'}")
    for entry in status["unhealthy"]:
        print(f"  {entry['name']}: {entry['health']}")
    provision = ", ".join(f"{count} {state}" for state, count in status["provision_states"].items())
    print(f"provision states: {provision or 'none'}")
    interval = config.conductor.sync_power_state_interval
    print(f"last cycle: {_pass_text(status['last_cycle'], interval)}")
    if status["last_recovery"] is not None:
        recovery_interval = config.conductor.power_failure_recovery_interval
        print(f"last recovery: {_pass_text(status['last_recovery'], recovery_interval)}")
    notes = status["notifications"]
    line = f"{notes['pending']} pending, {notes['delivered']} delivered, {notes['dropped']} dropped"
    if not config.nova.send_power_notifications:
        line += " (sending is off: [nova] send_power_notifications = false)"
    print(f"notifications: {line}")
    for agent in status.get("agents", []):
        state = "alive" if agent["alive"] else "DEAD"
        cycle = agent["last_cycle"] or {}
        summary = f", last cycle {cycle.get('nodes', '?')} nodes" if cycle else ""
        outbox = ", drains the Nova outbox" if agent["drains_outbox"] else ""
        print(
            f"agent {agent['host']}: {state}, heartbeat {_ago(agent['heartbeat_age'])} ago, "
            f"{agent['nodes_owned']} nodes{summary}{outbox}"
        )


def _pass_text(cycle: dict[str, Any] | None, interval: float) -> str:
    if cycle is None:
        return "none recorded (is `powersync run` running?)"
    if cycle.get("unreadable"):
        return "unreadable record in the store"
    parts = []
    if isinstance(cycle.get("started_at"), int | float):
        number = f"#{cycle['cycle']} " if cycle.get("cycle") is not None else ""
        parts.append(f"{number}{format_time(cycle['started_at'])} ({_ago(cycle['age'])} ago)")
    if isinstance(cycle.get("duration"), int | float):
        parts.append(f"took {cycle['duration']:.2f} s")
    counts = [f"{cycle[key]} {key}" for key in _COUNT_KEYS if cycle.get(key) is not None]
    if cycle.get("nodes") is not None:
        parts.append(f"{cycle['nodes']} nodes: " + ", ".join(counts))
    text = ", ".join(parts) or "recorded without details"
    if cycle.get("stale"):
        text += f"; STALE: older than {STALE_INTERVALS} x {interval:g} s, is the agent running?"
    return text


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with open_configured_store(config, create=False) as store, store_errors("status"):
        nodes = store.list_nodes()
        counts = store.notification_counts()
        raw_cycle = store.get_meta(LAST_CYCLE_KEY)
        raw_recovery = store.get_meta(LAST_RECOVERY_KEY)
        conductors = store.list_conductors()
        leases = store.list_leases() if conductors else []
        server_now = store.server_time()
        where = store.path  # for PostgreSQL the DSN without its password
    now = time.time()
    conductor = config.conductor
    cycle = _last_pass(raw_cycle, conductor.sync_power_state_interval, now)
    recovery = _last_pass(raw_recovery, conductor.power_failure_recovery_interval, now)
    status = collect(nodes, counts, cycle, now, recovery)
    status["store"] = where
    if conductors:
        timeout = conductor.heartbeat_timeout
        status["agents"] = agents(nodes, conductors, leases, server_now, timeout)
    if args.json:
        print_json(status)
    else:
        _print_text(status, config)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status", help="fleet summary from the store", description=__doc__
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_cmd_status)
