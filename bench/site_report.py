"""bench.site's numbers from the agents' cycle records and the window's counters, and the
markdown tables (results.md, and what docs/benchmarks.md quotes)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.site import Daemon, Snapshot


# What the agent's store calls during a cycle are for.
STORE_KINDS: dict[str, tuple[str, ...]] = {
    "read": ("list_nodes",),
    "write": ("apply",),
    "membership": (
        "register_conductor",
        "heartbeat",
        "list_conductors",
        "list_leases",
        "server_time",
        "acquire_lease",
        "renew_lease",
        "release_lease",
    ),
    "other": (),
}


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def steady_cycles(daemon: Daemon, start: float, end: float) -> list[dict[str, Any]]:
    return [c for c in daemon.cycles if c["started"] >= start and c["ended"] <= end]


def logins_in(daemon: Daemon, cycles: Sequence[dict[str, Any]]) -> int:
    """BMC logins during ``cycles`` (the record carries the pool's running total)."""
    if not cycles:
        return 0
    index = daemon.cycles.index(cycles[0])
    before = daemon.cycles[index - 1]["logins"] if index else 0
    return int(cycles[-1]["logins"]) - int(before)


def configuration_result(
    *,
    name: str,
    backend: str,
    size: int,
    daemons: Sequence[Daemon],
    window: tuple[Snapshot, Snapshot],
    settled: float,
    started: float,
    takeover: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything one configuration measured; per cycle means per site cycle (one cycle of
    every agent: the window's cycles divided by the number of agents)."""
    start, end = window
    per_agent = {d.host: steady_cycles(d, start.at, end.at) for d in daemons}
    steady = [c for cycles in per_agent.values() for c in cycles]
    site_cycles = len(steady) / len(daemons)
    statuses = sum(c["ok"] for c in steady)
    # The agents' own CPU clock (getrusage, as recorded at each cycle's start and end), from
    # the end of the cycle before the first steady one to the end of the last steady one.
    agent_cpu = span_s = 0.0
    for daemon in daemons:
        cycles = per_agent[daemon.host]
        if cycles:
            before = daemon.cycles[daemon.cycles.index(cycles[0]) - 1]
            agent_cpu += cycles[-1]["cpu_end_s"] - before["cpu_end_s"]
            span_s += cycles[-1]["ended"] - before["ended"]
    in_cycles = sum(c["cpu_end_s"] - c["cpu_start_s"] for c in steady)
    idle_s = span_s - sum(c["wall_s"] for c in steady)
    rounds = min(len(cycles) for cycles in per_agent.values())
    covered = [sum(per_agent[h][k]["nodes"] for h in per_agent) for k in range(rounds)]
    methods = sorted({m for c in steady for m in c["store_by_method"]})

    def server_per_cycle(before: float | None, after: float | None, scale: float) -> float | None:
        if before is None or after is None or not site_cycles:
            return None
        return (after - before) * scale / site_cycles

    return {
        "configuration": name,
        "backend": backend,
        "size": size,
        "agents": len(daemons),
        "settled_after_start_s": settled - started,
        "first_cycle": [
            {
                "agent": d.host,
                "wall_s": d.cycles[0]["wall_s"],
                "nodes": d.cycles[0]["nodes"],
                "ok": d.cycles[0]["ok"],
                "logins": d.cycles[0]["logins"],
                "store_s": d.cycles[0]["store_s"],
            }
            for d in daemons
        ],
        "steady": {
            "window_s": end.at - start.at,
            "cycles": len(steady),
            "site_cycles": site_cycles,
            "wall_s_median": median([c["wall_s"] for c in steady]),
            "wall_s_max": max((c["wall_s"] for c in steady), default=None),
            "nodes_per_agent_cycle": {h: [c["nodes"] for c in cs] for h, cs in per_agent.items()},
            "nodes_per_site_cycle": covered,
            "every_node_read": bool(steady)
            and all(c["ok"] == c["nodes"] and not c["failed"] for c in steady)
            and all(n == size for n in covered),
            "logins": sum(logins_in(d, per_agent[d.host]) for d in daemons),
            "statuses": statuses,
            "agent_cpu_s": agent_cpu,
            "agent_cpu_per_status_ms": 1000 * agent_cpu / statuses if statuses else None,
            "agent_cpu_in_cycles_per_status_ms": 1000 * in_cycles / statuses if statuses else None,
            # heartbeats, lease renewals, keepalives: per second of an agent between cycles
            "agent_cpu_between_cycles_ms_per_s": 1000 * (agent_cpu - in_cycles) / idle_s
            if idle_s > 0
            else None,
            "store_s_per_cycle_median": median([c["store_s"] for c in steady]),
            "store_s_per_cycle_max": max((c["store_s"] for c in steady), default=None),
            "store_calls_per_cycle_median": median([c["store_calls"] for c in steady]),
            "store_s_by_method_median": {
                m: median([c["store_by_method"].get(m, {"s": 0.0})["s"] for c in steady])
                for m in methods
            },
            "store_s_by_kind_median": {
                kind: median([kind_seconds(c, kind) for c in steady]) for kind in STORE_KINDS
            },
            "server_cpu_s_per_cycle": server_per_cycle(start.server_cpu_s, end.server_cpu_s, 1),
            "server_exec_s_per_cycle": server_per_cycle(
                start.server_exec_ms, end.server_exec_ms, 1 / 1000
            ),
            "server_statements_per_cycle": server_per_cycle(
                None if start.server_calls is None else float(start.server_calls),
                None if end.server_calls is None else float(end.server_calls),
                1,
            ),
            "datagrams_per_status": (end.datagrams - start.datagrams) / statuses
            if statuses
            else None,
        },
        "takeover": takeover,
        "cycles": {d.host: d.cycles for d in daemons},
    }


def kind_seconds(cycle: dict[str, Any], kind: str) -> float:
    """Store seconds of one cycle spent in one kind of call (STORE_KINDS)."""
    by_method = cycle["store_by_method"]
    if kind != "other":
        return float(sum(by_method[m]["s"] for m in STORE_KINDS[kind] if m in by_method))
    named = {m for methods in STORE_KINDS.values() for m in methods}
    return float(sum(v["s"] for m, v in by_method.items() if m not in named))


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(document: dict[str, Any]) -> str:
    settings = document["settings"]
    machine = document["machine"]
    lines = [
        f"Run: `{document['command']}`, commit {machine['commit']}, {machine['nproc']} cores "
        f"({machine['cpu_model']}), load average {machine['loadavg_at_start']} at the start "
        f"and {document['loadavg_at_end']} at the end. Every agent: {settings['workers']} "
        f"workers, sync interval {settings['interval']:g} s, heartbeat "
        f"{settings['heartbeat_interval']:g} s, heartbeat timeout "
        f"{settings['heartbeat_timeout']:g} s, long-lived sessions; PostgreSQL 15 durable "
        "(fsync on) on loopback, SQLite with WAL and synchronous = FULL.",
        "",
        "| configuration | BMCs | first cycle s (logins) | steady cycle s median / max "
        "| nodes per agent cycle | every node read | agent CPU per status ms: all / in cycles "
        "| agent CPU between cycles ms/s | datagrams per status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    results = document["results"]
    for result in results:
        steady = result["steady"]
        first = " + ".join(f"{f['wall_s']:.2f} ({f['logins']})" for f in result["first_cycle"])
        nodes = " + ".join(
            str(round(median(cs) or 0)) for cs in steady["nodes_per_agent_cycle"].values()
        )
        lines.append(
            f"| {result['configuration']} | {result['size']} | {first} "
            f"| {fmt(steady['wall_s_median'], 2)} / {fmt(steady['wall_s_max'], 2)} "
            f"| {nodes} | {'yes' if steady['every_node_read'] else 'NO'} "
            f"| {fmt(steady['agent_cpu_per_status_ms'])} / "
            f"{fmt(steady['agent_cpu_in_cycles_per_status_ms'])} "
            f"| {fmt(steady['agent_cpu_between_cycles_ms_per_s'], 1)} "
            f"| {fmt(steady['datagrams_per_status'], 2)} |"
        )
    lines += [
        "",
        "| configuration | store time per agent cycle s, median / max (agent side) "
        "| of which read / write / membership s | store calls per agent cycle "
        "| DB server CPU per site cycle s | DB statement time per site cycle s "
        "| statements per site cycle |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        steady = result["steady"]
        kinds = steady["store_s_by_kind_median"]
        lines.append(
            f"| {result['configuration']} "
            f"| {fmt(steady['store_s_per_cycle_median'])} / "
            f"{fmt(steady['store_s_per_cycle_max'])} "
            f"| {fmt(kinds['read'])} / {fmt(kinds['write'])} / {fmt(kinds['membership'])} "
            f"| {fmt(steady['store_calls_per_cycle_median'], 0)} "
            f"| {fmt(steady['server_cpu_s_per_cycle'])} "
            f"| {fmt(steady['server_exec_s_per_cycle'])} "
            f"| {fmt(steady['server_statements_per_cycle'], 0)} |"
        )
    takeovers = [r for r in results if r["takeover"]]
    if takeovers:
        lines += [
            "",
            "| SIGKILL of one of two agents, BMCs | heartbeat / timeout / sync interval s "
            "| bound: timeout + heartbeat + interval s | survivor holds every bucket s "
            "| every BMC asked again s | every node read (a full cycle ended) s |",
            "|---|---|---|---|---|---|",
        ]
        for result in takeovers:
            t = result["takeover"]
            lines.append(
                f"| {result['size']} | {t['heartbeat_interval_s']:g} / "
                f"{t['heartbeat_timeout_s']:g} / {t['sync_interval_s']:g} | {t['bound_s']:g} "
                f"| {fmt(t['leases_after_s'], 1)} | {fmt(t['every_bmc_asked_after_s'], 1)} "
                f"| {fmt(t['full_cycle_ended_after_s'], 1)} |"
            )
    lines += ["", "Load average (1, 5, 15 min) before and after each configuration:", ""]
    for result in results:
        lines.append(
            f"- {result['configuration']} ({result['size']} BMCs): "
            f"{result['loadavg_before']} -> {result['loadavg_after']}"
        )
    return "\n".join(lines) + "\n"
