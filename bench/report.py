"""Summaries of the raw runs: medians and spread, ratios against powersync, a markdown table
and a PNG chart (matplotlib, Agg backend)."""

from __future__ import annotations

import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.contenders import REFERENCE

GROUP_KEYS = ("fleet", "size", "condition", "op")


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            mem_kb = int(handle.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "nproc": len(__import__("os").sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "loadavg_at_start": load_average(),
        "tools": tool_versions(),
        "commit": git_commit(),
    }


def load_average() -> list[str]:
    """The 1, 5 and 15 minute load averages (the machine is shared: say how busy it was)."""
    try:
        with open("/proc/loadavg") as handle:
            return handle.read().split()[:3]
    except OSError:
        return []


def git_commit() -> str:
    """The commit measured (BENCH_GIT_COMMIT when run from an exported tree)."""
    import os

    if os.environ.get("BENCH_GIT_COMMIT"):
        return os.environ["BENCH_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + (" (+ uncommitted changes)" if dirty else "")


def tool_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name, argv in {
        "ipmitool": ["ipmitool", "-V"],
        "ipmipower": ["ipmipower", "--version"],
        "ipmi_sim": ["dpkg-query", "-W", "-f", "${Version}", "openipmi"],
    }.items():
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            versions[name] = (out.stdout or out.stderr).strip().splitlines()[0][:80]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            versions[name] = "?"
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions["pyghmi"] = version("pyghmi")
    except PackageNotFoundError:
        versions["pyghmi"] = "?"
    return versions


def group_key(run: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(run[key] for key in GROUP_KEYS)


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (fleet, size, condition, op, contender): median, min and max of the runs."""
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((*group_key(run), run["contender"]), []).append(run)
    rows: list[dict[str, Any]] = []
    for key, cell in cells.items():
        walls = [r["wall_s"] for r in cell]
        cpus = [r["cpu_s"] for r in cell]
        size = cell[0]["size"]
        datagrams = [r["datagrams"] for r in cell if r.get("datagrams") is not None]
        rows.append(
            {
                **dict(zip(GROUP_KEYS, key[:-1], strict=True)),
                "contender": key[-1],
                "repeats": len(cell),
                "wall_s": statistics.median(walls),
                "wall_min_s": min(walls),
                "wall_max_s": max(walls),
                "cpu_s": statistics.median(cpus),
                "cpu_min_s": min(cpus),
                "cpu_max_s": max(cpus),
                "cpu_per_node_ms": 1000 * statistics.median(cpus) / size,
                "maxrss_mb": max(r["maxrss_kb"] for r in cell) / 1024,
                "correct_min": min(r["correct"] for r in cell),
                "expected": cell[0]["expected"],
                "datagrams_per_node": (statistics.median(datagrams) / size if datagrams else None),
                "server_cpu_s": statistics.median(r["server_cpu_s"] for r in cell),
                "first_cycle_wall_s": median_of(
                    [r["extra"].get("first_cycle_wall_s") for r in cell]
                ),
                "errors": merge_errors(cell),
            }
        )
    by_group: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_group.setdefault(group_key(row), {})[row["contender"]] = row
    for group in by_group.values():
        reference = group.get(REFERENCE) or group.get("agent-longlived") or group.get("powersync")
        for row in group.values():
            if reference and reference["wall_s"] > 0 and reference["cpu_s"] > 0:
                row["wall_vs_powersync"] = row["wall_s"] / reference["wall_s"]
                row["cpu_vs_powersync"] = row["cpu_s"] / reference["cpu_s"]
            else:
                row["wall_vs_powersync"] = row["cpu_vs_powersync"] = None
    return rows


def median_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def merge_errors(cell: Sequence[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for run in cell:
        for name, count in run.get("errors", {}).items():
            total[name] = total.get(name, 0) + count
    return total


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def grouped(
    rows: Sequence[dict[str, Any]], keep: Callable[[dict[str, Any]], bool] = lambda row: True
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """The rows kept, by (fleet, size, condition, op), in the order they came."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if keep(row):
            groups.setdefault(group_key(row), []).append(row)
    return groups


def wall_cell(row: dict[str, Any]) -> str:
    """The median wall time and its spread: ``0.123 (0.120-0.130)``."""
    return f"{fmt(row['wall_s'])} ({fmt(row['wall_min_s'])}-{fmt(row['wall_max_s'])})"


def table_head(title: str, columns: Sequence[str]) -> list[str]:
    return [f"### {title}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def error_lines(group: Sequence[dict[str, Any]]) -> list[str]:
    """Under a table: the errors of every contender that had some, over all its runs."""
    errors = {r["contender"]: r["errors"] for r in group if r["errors"]}
    lines = [""] if errors else []
    for name, counts in errors.items():
        text = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
        lines.append(f"- {name} errors (all runs): {text}")
    return lines


COLUMNS = (
    "contender",
    "wall s (median, min-max)",
    "x powersync",
    "client CPU ms/node",
    "x powersync",
    "datagrams/node",
    "peak RSS MB",
    "read OK",
    "runs",
    "1st cycle s",
)


def markdown(rows: Sequence[dict[str, Any]], skipped: Sequence[str]) -> str:
    lines: list[str] = []
    for (fleet, size, condition, op), group in grouped(rows).items():
        what = "power status of every node" if op == "status" else "power off + confirm"
        lines += table_head(f"{fleet}, {size} BMCs, {condition}: {what}", COLUMNS)
        for row in group:
            lines.append(
                f"| {row['contender']} | {wall_cell(row)} "
                f"| {fmt(row['wall_vs_powersync'], 1)} | {fmt(row['cpu_per_node_ms'])} "
                f"| {fmt(row['cpu_vs_powersync'], 1)} | {fmt(row['datagrams_per_node'], 1)} "
                f"| {fmt(row['maxrss_mb'], 1)} | {row['correct_min']}/{row['expected']} "
                f"| {row['repeats']} | {fmt(row['first_cycle_wall_s'])} |"
            )
        lines += error_lines(group)
        lines.append("")
    if skipped:
        lines.append("Not run (minutes per pass at that size; see docs/benchmarks.md):")
        lines.extend(f"- {item}" for item in skipped)
        lines.append("")
    return "\n".join(lines)


def chart(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = [r for r in rows if r["condition"] == "clean" and r["op"] == "status"]
    contenders = sorted({r["contender"] for r in clean})
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {name: f"C{i}" for i, name in enumerate(contenders)}
    for name in contenders:
        for kind, style in (
            ("powersync_sim", "o-"),
            ("ipmi_sim", "s--"),
            ("redfish_sim", "^-"),
            ("sushy_emulator", "v--"),
        ):
            points = sorted(
                (r["size"], r["wall_s"])
                for r in clean
                if r["contender"] == name and r["fleet"] == kind
            )
            if points:
                left.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    color=colours[name],
                    label=f"{name} ({kind})",
                    fillstyle="none" if kind in ("ipmi_sim", "sushy_emulator") else "full",
                )
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("fleet size (BMCs)")
    left.set_ylabel("wall time of one status pass (s)")
    left.set_title("Cycle time vs fleet size (clean loopback)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=6, ncol=2, loc="lower right")
    sizes = sorted({(r["fleet"], r["size"]) for r in clean})
    width = 0.8 / max(1, len(contenders))
    for offset, name in enumerate(contenders):
        values = []
        for fleet, size in sizes:
            match = [
                r for r in clean if (r["fleet"], r["size"], r["contender"]) == (fleet, size, name)
            ]
            values.append(match[0]["cpu_per_node_ms"] if match else 0.0)
        positions = [i + offset * width for i in range(len(sizes))]
        right.bar(positions, values, width=width, label=name, color=colours[name])
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))])
    right.set_xticklabels([f"{fleet}\n{size}" for fleet, size in sizes], fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("client CPU per status (ms, user+sys)")
    right.set_title("Client CPU per status")
    right.grid(True, axis="y", which="both", alpha=0.3)
    right.legend(fontsize=7, ncol=2, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


POWERSYNC = ("powersync-longlived", "powersync-fresh", "agent-longlived", "agent-fresh")


def find(
    rows: Sequence[dict[str, Any]],
    contender: str,
    fleet: str,
    size: int,
    condition: str | None,
) -> dict[str, Any] | None:
    """The status row of a contender on a fleet (in any condition where ``condition`` is None)."""
    for row in rows:
        if (row["contender"], row["fleet"], row["size"], row["op"]) == (
            contender,
            fleet,
            size,
            "status",
        ) and condition in (None, row["condition"]):
            return row
    return None


def targets(rows: Sequence[dict[str, Any]], deadline: float) -> list[dict[str, Any]]:
    """The issue's targets, judged from this run's medians (reported, never asserted)."""
    verdicts: list[dict[str, Any]] = []

    def judge(target: str, subject: str, value: str, met: bool) -> None:
        verdicts.append({"target": target, "subject": subject, "value": value, "met": met})

    fleets = sorted({(r["fleet"], r["size"]) for r in rows if r["op"] == "status"})
    for fleet, size in fleets:
        where = f"{fleet}/{size}"
        ipmipower = find(rows, "ipmipower", fleet, size, "clean")
        if ipmipower and ipmipower["correct_min"] == ipmipower["expected"]:
            for name, limit in (
                ("powersync-longlived", 0.5),
                ("agent-longlived", 0.5),
                ("powersync-fresh", 2.0),
                ("agent-fresh", 2.0),
            ):
                row = find(rows, name, fleet, size, "clean")
                if row:
                    ratio = row["cpu_s"] / ipmipower["cpu_s"]
                    judge(
                        f"CPU per status <= {limit:g}x ipmipower's",
                        f"{name}, {where}",
                        f"{row['cpu_per_node_ms']:.3f} vs {ipmipower['cpu_per_node_ms']:.3f} "
                        f"ms ({ratio:.2f}x)",
                        ratio <= limit,
                    )
        ipmitool = find(rows, "ipmitool-par8", fleet, size, "clean")
        if ipmitool and size >= 1000:
            for name in POWERSYNC:
                row = find(rows, name, fleet, size, "clean")
                if row:
                    speedup = ipmitool["wall_s"] / row["wall_s"]
                    judge(
                        ">= 20x faster than ipmitool 8-parallel at 1,000 BMCs",
                        f"{name}, {where}",
                        f"{row['wall_s']:.3f} s vs {ipmitool['wall_s']:.3f} s ({speedup:.0f}x)",
                        speedup >= 20,
                    )
        for name in POWERSYNC:
            clean = find(rows, name, fleet, size, "clean")
            lossy = find(rows, name, fleet, size, "loss5")
            if clean and lossy:
                factor = lossy["wall_s"] / clean["wall_s"]
                complete = lossy["correct_min"] == lossy["expected"]
                judge(
                    "5 % loss: every node read, cycle <= 2x loss-free",
                    f"{name}, {where}",
                    f"{lossy['correct_min']}/{lossy['expected']} read, {lossy['wall_s']:.2f} s "
                    f"vs {clean['wall_s']:.2f} s ({factor:.1f}x)",
                    complete and factor <= 2,
                )
            dead = find(rows, name, fleet, size, "dead10")
            if clean and dead:
                growth = dead["wall_s"] - clean["wall_s"]
                judge(
                    f"10 % dead: cycle grows <= one per-node deadline ({deadline:g} s)",
                    f"{name}, {where}",
                    f"+{growth:.1f} s ({dead['wall_s']:.1f} s vs {clean['wall_s']:.2f} s)",
                    growth <= deadline,
                )
                first_dead, first_clean = dead["first_cycle_wall_s"], clean["first_cycle_wall_s"]
                if first_dead is not None and first_clean is not None:
                    growth = first_dead - first_clean
                    judge(
                        f"10 % dead, the cycle that first finds them: grows <= {deadline:g} s",
                        f"{name}, {where}",
                        f"+{growth:.1f} s ({first_dead:.1f} s vs {first_clean:.2f} s)",
                        growth <= deadline,
                    )
        if size >= 10000:
            for name in POWERSYNC:
                row = find(rows, name, fleet, size, "clean")
                if row:
                    judge(
                        "10,000 BMCs per cycle in <= 10 s",
                        f"{name}, {where}",
                        f"{row['wall_s']:.2f} s",
                        row["wall_s"] <= 10,
                    )
                    if name.startswith("agent"):
                        judge(
                            "agent resident memory <= 150 MB at 10,000 BMCs",
                            f"{name}, {where}",
                            f"{row['maxrss_mb']:.0f} MB",
                            row["maxrss_mb"] <= 150,
                        )
    return verdicts


def targets_markdown(verdicts: Sequence[dict[str, Any]]) -> str:
    if not verdicts:
        return ""
    lines = ["### Targets (from this run's medians)", ""]
    lines.append("| target | who, fleet | measured | met? |")
    lines.append("|---|---|---|---|")
    for v in verdicts:
        mark = "yes" if v["met"] else "**no**"
        lines.append(f"| {v['target']} | {v['subject']} | {v['value']} | {mark} |")
    lines.append("")
    return "\n".join(lines)
