"""The Redfish rows of a benchmark run: their own columns (requests per status, the first
cycle's TLS handshakes and logins, ratios against sushy) and the issue's Redfish targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.redfish_contenders import REDFISH_REFERENCE
from bench.report import (
    error_lines,
    find,
    fmt,
    group_key,
    grouped,
    median_of,
    table_head,
    wall_cell,
)

REDFISH_FLEETS = ("redfish_sim", "sushy_emulator")
LIVE = ("agent-redfish-live", "powersync-redfish-live")


def is_redfish(row: dict[str, Any]) -> bool:
    return row["fleet"] in REDFISH_FLEETS


def first_cycle_per_node(run: dict[str, Any], field: str) -> float | None:
    server = run["extra"].get("first_cycle_server")
    return None if server is None else server[field] / run["size"]


def annotate(rows: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> None:
    """Add the Redfish columns to the summary rows of Redfish fleets (in place)."""
    for row in rows:
        if not is_redfish(row):
            continue
        cell = [
            run
            for run in runs
            if group_key(run) == group_key(row) and run["contender"] == row["contender"]
        ]
        row["requests_per_status"] = median_of(
            [run["extra"].get("requests_per_status") for run in cell]
        )
        row["first_cycle_cpu_ms_per_node"] = median_of(
            [
                None if run["extra"].get("first_cycle_cpu_s") is None
                else 1000 * run["extra"]["first_cycle_cpu_s"] / run["size"]
                for run in cell
            ]
        )  # fmt: skip
        if row["first_cycle_wall_s"] is None:  # one-cycle contenders (curl): the pass itself
            row["first_cycle_wall_s"] = row["wall_s"]
        for field in ("tls_handshakes", "logins"):
            row[f"first_cycle_{field}_per_node"] = median_of(
                [first_cycle_per_node(run, field) for run in cell]
            )
    groups: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for row in rows:
        if is_redfish(row):
            groups.setdefault(group_key(row), {})[row["contender"]] = row
    for group in groups.values():
        reference = group.get(REDFISH_REFERENCE)
        for row in group.values():
            row["cpu_vs_sushy"] = row["wall_vs_sushy"] = None
            if reference is not None and reference["cpu_s"] > 0 and reference["wall_s"] > 0:
                row["cpu_vs_sushy"] = row["cpu_s"] / reference["cpu_s"]
                row["wall_vs_sushy"] = row["wall_s"] / reference["wall_s"]


COLUMNS = (
    "contender",
    "wall s (median, min-max)",
    "client CPU ms/status",
    "x sushy",
    "requests/status",
    "peak RSS MB",
    "read OK",
    "runs",
    "1st cycle s",
    "1st cycle CPU ms/node",
    "1st cycle TLS handshakes, logins /node",
    "server CPU s",
)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines: list[str] = []
    for (fleet, size, condition, _op), group in grouped(rows, is_redfish).items():
        title = f"{fleet}, {size} BMCs, {condition}: power status of every node"
        lines += table_head(title, COLUMNS)
        for row in group:
            handshakes = fmt(row.get("first_cycle_tls_handshakes_per_node"), 2)
            logins = fmt(row.get("first_cycle_logins_per_node"), 2)
            lines.append(
                f"| {row['contender']} | {wall_cell(row)} "
                f"| {fmt(row['cpu_per_node_ms'])} | {fmt(row.get('cpu_vs_sushy'), 2)} "
                f"| {fmt(row.get('requests_per_status'), 2)} | {fmt(row['maxrss_mb'], 1)} "
                f"| {row['correct_min']}/{row['expected']} | {row['repeats']} "
                f"| {fmt(row['first_cycle_wall_s'])} "
                f"| {fmt(row.get('first_cycle_cpu_ms_per_node'), 2)} "
                f"| {handshakes}, {logins} | {fmt(row['server_cpu_s'], 2)} |"
            )
        lines += error_lines(group)
        lines.append("")
    return "\n".join(lines)


def targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 12's Redfish targets, judged from this run's medians (reported, not asserted)."""
    verdicts: list[dict[str, Any]] = []

    def judge(target: str, subject: str, value: str, met: bool) -> None:
        verdicts.append({"target": target, "subject": subject, "value": value, "met": met})

    fleets = sorted({(r["fleet"], r["size"]) for r in rows if is_redfish(r)})
    for fleet, size in fleets:
        where = f"{fleet}/{size}"
        sushy = find(rows, REDFISH_REFERENCE, fleet, size, None)
        agent = find(rows, "agent-redfish-live", fleet, size, None)
        if sushy and agent and sushy["cpu_s"] > 0:
            ratio = agent["cpu_s"] / sushy["cpu_s"]
            judge(
                "agent CPU per status, live sessions <= 1/10 of sushy's",
                f"agent-redfish-live, {where}",
                f"{agent['cpu_per_node_ms']:.3f} vs {sushy['cpu_per_node_ms']:.3f} ms "
                f"({ratio:.2f}x)",
                ratio <= 0.1,
            )
        for name in LIVE:
            row = find(rows, name, fleet, size, None)
            if row is None:
                continue
            requests = row.get("requests_per_status")
            if requests is not None:
                judge(
                    "1 request per status on a live session",
                    f"{name}, {where}",
                    f"{requests:.3f} requests/status",
                    requests <= 1.0005,
                )
            if size < 1000:
                continue
            judge(
                "1,000-BMC Redfish cycle on live sessions <= 1 s at 8 workers",
                f"{name}, {where}",
                f"{row['wall_s']:.3f} s",
                row["wall_s"] <= 1.0,
            )
            first = row["first_cycle_wall_s"]
            if first is not None:
                judge(
                    "first cycle (1,000 TLS handshakes and logins) <= 10 s",
                    f"{name}, {where}",
                    f"{first:.2f} s",
                    first <= 10.0,
                )
            if name.startswith("agent"):
                judge(
                    "agent memory at 1,000 Redfish sessions <= 150 MB",
                    f"{name}, {where}",
                    f"{row['maxrss_mb']:.0f} MB peak RSS",
                    row["maxrss_mb"] <= 150,
                )
    return verdicts
