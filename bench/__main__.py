"""``python -m bench``: bring up the fleets, run every contender, write the results.

    python -m bench                      # the full run (see docs/benchmarks.md)
    python -m bench --quick              # a tiny fleet, one repetition (a smoke test)
    python -m bench --ipmi-sim 50 --sizes 1000 10000 --repeats 3 --out bench/results
    python -m bench --ipmi-sim 0 --sizes --redfish-sizes 1000 --sushy-emulator 20 \
        --out bench/results/redfish            # the Redfish contenders only

Fleets: ``--ipmi-sim N`` OpenIPMI ipmi_sim processes (the independent servers) and one
powersync simulator process per ``--sizes`` entry. Conditions: clean loopback, added
latency, datagram loss, 10 % dead BMCs; then powering ``--power-off`` BMCs off and
confirming it. Writes ``results.json`` (every run and the summary), ``results.md`` (the
tables) and ``chart.png`` into ``--out``. Redfish fleets (``--redfish-sizes``: the powersync
Redfish simulator; ``--sushy-emulator N``: sushy-tools with N fake systems) run the Redfish
contenders (bench.redfish_contenders) on clean loopback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import redfish_report, report
from bench.contenders import BY_NAME, CONTENDERS, Contender, Options, PassResult
from bench.fleets import Endpoint, Fleet, IpmiSimFleet, PowersyncSimFleet, expected_power
from bench.procs import PacketCounter, tcpdump_usable
from bench.redfish_contenders import REDFISH_BY_NAME, REDFISH_CONTENDERS
from bench.redfish_fleets import RedfishSimFleet, SushyEmulatorFleet

ALL_BY_NAME: dict[str, Contender] = {**BY_NAME, **REDFISH_BY_NAME}

CONDITIONS = {
    # name: (one-way delay ms, loss per datagram, fraction of dead BMCs)
    "clean": (0.0, 0.0, 0.0),
    "latency": (10.0, 0.0, 0.0),
    "loss5": (0.0, 0.05, 0.0),
    "dead10": (0.0, 0.0, 0.10),
}
IMPAIRED_MAX_NODES = {
    # minutes per pass under loss or dead BMCs at 1,000 nodes: measured on the small fleets
    "ipmitool-par8": 100,
    "pyghmi-par8": 100,
    "powersync-fresh": 100,  # the agent rows cover the client at scale
    "powersync-longlived": 100,
}


# pyghmi's client deadlocks now and then (threads waiting on each other; more often under
# datagram loss): its process is killed after this long, and the pass counts as not read.
HANG_PRONE = {"pyghmi-par8"}
HANG_TIMEOUT = 120.0
HANG_TIMEOUT_IMPAIRED = 60.0
DEAD_MAX_NODES = 100
# ipmipower waits for every host at once; the agent has a lane for failing nodes (its second
# cycle is measured; the first, when the BMCs are found dead, is in the JSON)
DEAD_AT_SCALE = {"ipmipower", "agent-longlived"}


class SubFleet(Fleet):
    """The first ``count`` BMCs of a fleet (for the power-off measurement)."""

    def __init__(self, fleet: Fleet, count: int) -> None:
        self.inner = fleet
        self.kind = fleet.kind
        self.cipher_suite = fleet.cipher_suite
        self.endpoints: list[Endpoint] = fleet.endpoints[:count]
        self.port_base = fleet.port_base

    def reset_power(self) -> None:
        self.inner.reset_power()

    def powers(self) -> list[bool]:
        return self.inner.powers()[: self.size]

    def server_cpu_s(self) -> float:
        return self.inner.server_cpu_s()

    def server_rss_kb(self) -> int:
        return self.inner.server_rss_kb()


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)


def dead_indices(size: int, fraction: float) -> list[int]:
    if fraction <= 0:
        return []
    step = round(1 / fraction)
    return [i for i in range(size) if i % step == step // 2]


@contextmanager
def condition_applied(fleet: Fleet, name: str) -> Iterator[list[int]]:
    delay_ms, loss, dead_fraction = CONDITIONS[name]
    dead = dead_indices(fleet.size, dead_fraction)
    if delay_ms or loss:
        fleet.set_impairment(delay_ms=delay_ms, loss=loss)
    if dead:
        fleet.set_dead(dead)
    try:
        yield dead
    finally:
        fleet.clear_faults()


def record(
    fleet: Fleet,
    condition: str,
    op: str,
    repeat: int,
    result: PassResult,
    dead: Sequence[int],
    server_cpu: float,
) -> dict[str, Any]:
    truth = [expected_power(i) for i in range(fleet.size)]
    if op == "off":
        truth = [False] * fleet.size
    return {
        "fleet": fleet.kind,
        "size": fleet.size,
        "condition": condition,
        "op": op,
        "contender": result.contender,
        "repeat": repeat,
        "wall_s": result.wall_s,
        "cpu_s": result.cpu_s,
        "maxrss_kb": result.maxrss_kb,
        "correct": result.correct(truth, dead),
        "expected": fleet.size - len(dead),
        "datagrams": result.datagrams,
        "errors": result.errors,
        "server_cpu_s": server_cpu,
        "extra": result.extra,
    }


def run_contender(
    fleet: Fleet,
    contender: Contender,
    options: Options,
    condition: str,
    dead: Sequence[int],
    repeats: int,
    label: str | None = None,
) -> list[dict[str, Any]]:
    runs = []
    for repeat in range(repeats):
        fleet.reset_power()
        before = fleet.server_cpu_s()
        result = contender.run(fleet, options)
        result.contender = label or result.contender
        server_cpu = fleet.server_cpu_s() - before
        if options.op == "off":
            # the fleet's own truth: is every BMC really off now?
            actually_off = sum(1 for on in fleet.powers() if not on)
            result.extra["really_off"] = actually_off
        runs.append(record(fleet, condition, options.op, repeat, result, dead, server_cpu))
        runs[-1]["workers"] = options.workers
        row = runs[-1]
        log(
            f"  {result.contender:20} {fleet.kind}/{fleet.size} {condition:8} {options.op:6} "
            f"wall {row['wall_s']:8.3f}s cpu {row['cpu_s']:7.3f}s "
            f"ok {row['correct']}/{row['expected']} rss {row['maxrss_kb'] // 1024}MB"
        )
    return runs


def count_datagrams(fleet: Fleet, contender: Contender, options: Options) -> int | None:
    """One extra, untimed pass: datagrams to and from the fleet's BMCs.

    The powersync simulator counts what it receives and answers itself (exact at any
    rate); for ipmi_sim a tcpdump capture on lo counts them (a capture that dropped
    packets is not used).
    """
    if not contender.tcpdump_datagrams:
        return None
    fleet.reset_power()
    if isinstance(fleet, PowersyncSimFleet):
        before = fleet.command({"cmd": "stats"})["stats"]
        contender.run(fleet, options)
        after = fleet.command({"cmd": "stats"})["stats"]
        return int(sum(after[key] - before[key] for key in ("received", "answered")))
    if not tcpdump_usable():
        return None
    first, last = fleet.endpoints[0].port, fleet.endpoints[-1].port
    with PacketCounter(first, last) as counter:
        contender.run(fleet, options)
    if counter.dropped:
        log(f"  tcpdump dropped {counter.dropped} packets counting {contender.name}")
        return None
    return counter.packets


def bench_fleet(
    fleet: Fleet,
    args: argparse.Namespace,
    contenders: Sequence[Contender],
    skipped: list[str],
    powered_off: set[str],
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    status = Options(workers=args.workers, deadline=args.deadline, timeout=args.timeout)
    for condition in args.conditions:
        impaired = condition != "clean"
        if impaired and fleet.size > args.impaired_max_size:
            skipped.append(f"every contender on {fleet.kind}/{fleet.size} {condition}")
            continue
        repeats = args.impaired_repeats if impaired else args.repeats
        with condition_applied(fleet, condition) as dead:
            for contender in contenders:
                limit = contender.max_nodes
                if impaired:
                    limit = min(limit, IMPAIRED_MAX_NODES.get(contender.name, limit))
                if impaired and not contender.impaired:
                    limit = 0
                if condition == "dead10" and contender.name not in DEAD_AT_SCALE:
                    # 10 % dead at 8 workers: 11 s per dead BMC per worker, minutes per pass
                    # at 1,000 nodes (two cycles per pass); the sweep covers more workers
                    limit = min(limit, DEAD_MAX_NODES)
                if fleet.size > limit:
                    skipped.append(f"{contender.name} on {fleet.kind}/{fleet.size} {condition}")
                    continue
                options = status
                if contender.name in HANG_PRONE:
                    hang = HANG_TIMEOUT_IMPAIRED if impaired else HANG_TIMEOUT
                    options = Options(workers=args.workers, deadline=args.deadline, timeout=hang)
                cell = run_contender(fleet, contender, options, condition, dead, repeats)
                small = fleet.size <= 1000 or isinstance(fleet, PowersyncSimFleet)
                if not impaired and args.count_datagrams and small:
                    packets = count_datagrams(fleet, contender, status)
                    for run in cell:
                        run["datagrams"] = run["datagrams"] if packets is None else packets
                runs.extend(cell)
    if fleet.kind == "powersync_sim" and fleet.size == args.sweep_size:
        runs.extend(sweep_workers(fleet, args, skipped))
    if args.power_off and fleet.kind not in powered_off:
        powered_off.add(fleet.kind)  # once per kind of fleet: on its first (smallest) size
        subset = SubFleet(fleet, min(args.power_off, fleet.size))
        off = Options(workers=args.workers, deadline=60.0, timeout=args.timeout, op="off")
        for contender in contenders:
            if not contender.power_off or subset.size > contender.max_nodes:
                continue
            options = off
            if contender.name in HANG_PRONE:
                options = Options(
                    workers=args.workers, deadline=60.0, timeout=HANG_TIMEOUT, op="off"
                )
            runs.extend(run_contender(subset, contender, options, "clean", [], args.action_repeats))
        fleet.reset_power()
    return runs


def sweep_workers(
    fleet: Fleet, args: argparse.Namespace, skipped: list[str]
) -> list[dict[str, Any]]:
    """The agent at several worker counts, clean and impaired: what an operator tunes."""
    runs: list[dict[str, Any]] = []
    for condition in args.sweep_conditions:
        with condition_applied(fleet, condition) as dead:
            for name in args.sweep_contenders:
                for workers in args.sweep_workers:
                    if workers == args.workers and condition in args.conditions:
                        continue  # measured already, in the main matrix
                    if condition == "dead10" and fleet.size * 0.1 * 11 / workers > 60:
                        skipped.append(f"{name}@{workers} on {fleet.kind}/{fleet.size} dead10")
                        continue
                    options = Options(workers=workers, deadline=args.deadline, timeout=args.timeout)
                    label = f"{name}@{workers}"
                    runs.extend(
                        run_contender(fleet, BY_NAME[name], options, condition, dead, 1, label)
                    )
                if condition == "loss5" and args.fixed_retry_row:
                    # The same run without RTT-adaptive retransmission: every lost datagram
                    # waits the whole first timeout (what the client did before).
                    options = Options(
                        workers=args.workers,
                        deadline=args.deadline,
                        timeout=args.timeout,
                        adaptive=False,
                    )
                    label = f"{name}@{args.workers},fixed-retry"
                    runs.extend(
                        run_contender(fleet, BY_NAME[name], options, condition, dead, 1, label)
                    )
    return runs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny fleets, one repetition")
    parser.add_argument("--ipmi-sim", type=int, default=50, help="ipmi_sim fleet size (0: none)")
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[1000, 10000], help="powersync simulator fleets"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--impaired-repeats", type=int, default=1)
    parser.add_argument("--action-repeats", type=int, default=1)
    parser.add_argument(
        "--impaired-max-size", type=int, default=1000, help="largest fleet run impaired"
    )
    parser.add_argument(
        "--conditions", nargs="*", default=list(CONDITIONS), choices=list(CONDITIONS)
    )
    parser.add_argument(
        "--contenders",
        nargs="*",
        default=None,
        choices=list(ALL_BY_NAME),
        help="default: every IPMI contender on IPMI fleets, every Redfish one on Redfish fleets",
    )
    parser.add_argument(
        "--redfish-sizes",
        type=int,
        nargs="*",
        default=[],
        help="powersync Redfish simulator fleets (Redfish contenders, clean loopback only)",
    )
    parser.add_argument(
        "--sushy-emulator",
        type=int,
        default=0,
        help="systems of a sushy-tools emulator fleet (0: none)",
    )
    parser.add_argument("--power-off", type=int, default=100, help="BMCs to power off (0: skip)")
    parser.add_argument("--workers", type=int, default=8, help="concurrency of powersync/pyghmi")
    parser.add_argument("--deadline", type=float, default=15.0, help="per-node deadline, s")
    parser.add_argument("--timeout", type=float, default=600.0, help="per client process, s")
    parser.add_argument(
        "--sweep-size", type=int, default=1000, help="simulator fleet for the workers sweep"
    )
    parser.add_argument("--sweep-workers", type=int, nargs="*", default=[8, 32, 128])
    parser.add_argument(
        "--sweep-contenders",
        nargs="*",
        default=["agent-fresh", "agent-longlived"],
        choices=list(BY_NAME),
    )
    parser.add_argument(
        "--sweep-conditions",
        nargs="*",
        default=["latency", "loss5"],
        choices=list(CONDITIONS),
    )
    parser.add_argument(
        "--no-fixed-retry-row",
        dest="fixed_retry_row",
        action="store_false",
        help="sweep: skip the loss run with the fixed (non-adaptive) retransmission schedule",
    )
    parser.add_argument("--no-count-datagrams", dest="count_datagrams", action="store_false")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: write the tables and chart again from OUT/results.json",
    )
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.ipmi_sim = min(args.ipmi_sim, 4)
        args.sizes = [min(size, 20) for size in args.sizes][:1]
        args.redfish_sizes = [min(size, 20) for size in args.redfish_sizes][:1]
        args.sushy_emulator = min(args.sushy_emulator, 4)
        args.repeats = args.impaired_repeats = args.action_repeats = 1
        args.conditions = ["clean"]
        args.power_off = min(args.power_off, 4)
        args.sweep_workers = []
        args.timeout = min(args.timeout, 120.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        saved: dict[str, Any] = json.loads((out / "results.json").read_text())
        write_results(saved, out, saved["settings"]["deadline"])
        return 0
    out.mkdir(parents=True, exist_ok=True)
    chosen = args.contenders
    contenders = [c for c in CONTENDERS if chosen is None or c.name in chosen]
    redfish_contenders = [c for c in REDFISH_CONTENDERS if chosen is None or c.name in chosen]
    document: dict[str, Any] = {
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": report.machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": [],
    }
    skipped: list[str] = []
    powered_off: set[str] = set()

    def bench_ipmi(fleet: Fleet) -> list[dict[str, Any]]:
        return bench_fleet(fleet, args, contenders, skipped, powered_off)

    def bench_redfish(fleet: Fleet) -> list[dict[str, Any]]:
        return bench_redfish_fleet(fleet, args, redfish_contenders)

    # (the fleet's class, its size, what runs on it), each fleet started in turn
    plan: list[tuple[Callable[[int], Fleet], int, Callable[[Fleet], list[dict[str, Any]]]]] = []
    if contenders:
        if args.ipmi_sim:
            plan.append((IpmiSimFleet, args.ipmi_sim, bench_ipmi))
        plan += [(PowersyncSimFleet, size, bench_ipmi) for size in args.sizes]
    if redfish_contenders:
        plan += [(RedfishSimFleet, size, bench_redfish) for size in args.redfish_sizes]
        if args.sushy_emulator:
            plan.append((SushyEmulatorFleet, args.sushy_emulator, bench_redfish))
    for fleet_class, size, bench in plan:
        fleet = fleet_class(size)
        log(f"fleet {fleet.kind} x {size}")
        with fleet:
            idle_rss = fleet.server_rss_kb()
            document.setdefault("fleets", []).append(
                {"kind": fleet.kind, "size": size, "server_rss_kb_idle": idle_rss}
            )
            document["runs"].extend(bench(fleet))
    document["loadavg_at_end"] = report.load_average()
    document["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    document["skipped"] = skipped
    write_results(document, out, args.deadline)
    return 0


def bench_redfish_fleet(
    fleet: Fleet, args: argparse.Namespace, contenders: Sequence[Contender]
) -> list[dict[str, Any]]:
    """Every Redfish contender on one Redfish fleet, clean loopback (status passes)."""
    runs: list[dict[str, Any]] = []
    status = Options(workers=args.workers, deadline=args.deadline, timeout=args.timeout)
    for contender in contenders:
        runs.extend(run_contender(fleet, contender, status, "clean", [], args.repeats))
    return runs


def summarized(document: dict[str, Any], deadline: float) -> str:
    """The summary rows and the targets put into the document, and its results.md."""
    rows = report.summarize(document["runs"])
    redfish_report.annotate(rows, document["runs"])
    document["summary"] = rows
    ipmi_rows = [row for row in rows if not redfish_report.is_redfish(row)]
    verdicts = report.targets(ipmi_rows, deadline) + redfish_report.targets(rows)
    document["targets"] = verdicts
    return (
        report.targets_markdown(verdicts)
        + "\n"
        + redfish_report.markdown(rows)
        + report.markdown(ipmi_rows, document["skipped"])
    )


def write_results(document: dict[str, Any], out: Path, deadline: float) -> None:
    """Summary, targets, results.json, results.md and the chart, from the runs."""
    tables = summarized(document, deadline)
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    (out / "results.md").write_text(tables)
    report.chart(document["summary"], out / "chart.png")
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'chart.png'}")


if __name__ == "__main__":
    sys.exit(main())
