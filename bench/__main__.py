"""``python -m bench``: bring up the fleets, run every contender, write the results.

    python -m bench                      # the full run (see docs/benchmarks.md)
    python -m bench --quick              # a tiny fleet, one repetition (a smoke test)
    python -m bench --ipmi-sim 50 --sizes 1000 10000 --repeats 3 --out bench/results

Fleets: ``--ipmi-sim N`` OpenIPMI ipmi_sim processes (the independent servers) and one
powersync simulator process per ``--sizes`` entry. Conditions: clean loopback, added
latency, datagram loss, 10 % dead BMCs; then powering ``--power-off`` BMCs off and
confirming it. Writes ``results.json`` (every run and the summary), ``results.md`` (the
tables) and ``chart.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import report
from bench.contenders import BY_NAME, CONTENDERS, Contender, Options, PassResult
from bench.fleets import Endpoint, Fleet, IpmiSimFleet, PowersyncSimFleet, expected_power
from bench.procs import PacketCounter, tcpdump_usable

CONDITIONS = {
    # name: (one-way delay ms, loss per datagram, fraction of dead BMCs)
    "clean": (0.0, 0.0, 0.0),
    "latency": (10.0, 0.0, 0.0),
    "loss5": (0.0, 0.05, 0.0),
    "dead10": (0.0, 0.0, 0.10),
}
IMPAIRED_MAX_NODES = {"ipmitool-par8": 100, "pyghmi-par8": 100}


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
) -> list[dict[str, Any]]:
    runs = []
    for repeat in range(repeats):
        fleet.reset_power()
        before = fleet.server_cpu_s()
        result = contender.run(fleet, options)
        server_cpu = fleet.server_cpu_s() - before
        if options.op == "off":
            # the fleet's own truth: is every BMC really off now?
            actually_off = sum(1 for on in fleet.powers() if not on)
            result.extra["really_off"] = actually_off
        runs.append(record(fleet, condition, options.op, repeat, result, dead, server_cpu))
        row = runs[-1]
        log(
            f"  {contender.name:20} {fleet.kind}/{fleet.size} {condition:8} {options.op:6} "
            f"wall {row['wall_s']:8.3f}s cpu {row['cpu_s']:7.3f}s "
            f"ok {row['correct']}/{row['expected']} rss {row['maxrss_kb'] // 1024}MB"
        )
    return runs


def count_datagrams(fleet: Fleet, contender: Contender, options: Options) -> int | None:
    """One extra, untimed pass under tcpdump: datagrams to and from the fleet's ports."""
    if not contender.tcpdump_datagrams or not tcpdump_usable():
        return None
    fleet.reset_power()
    first, last = fleet.endpoints[0].port, fleet.endpoints[-1].port
    with PacketCounter(first, last) as counter:
        contender.run(fleet, options)
    if counter.dropped:
        log(f"  tcpdump dropped {counter.dropped} packets counting {contender.name}")
        return None
    return counter.packets


def bench_fleet(
    fleet: Fleet, args: argparse.Namespace, contenders: Sequence[Contender], skipped: list[str]
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    status = Options(workers=args.workers, deadline=args.deadline, timeout=args.timeout)
    for condition in args.conditions:
        impaired = condition != "clean"
        repeats = args.impaired_repeats if impaired else args.repeats
        with condition_applied(fleet, condition) as dead:
            for contender in contenders:
                limit = contender.max_nodes
                if impaired:
                    limit = min(limit, IMPAIRED_MAX_NODES.get(contender.name, limit))
                if impaired and not contender.impaired:
                    limit = 0
                if fleet.size > limit:
                    skipped.append(f"{contender.name} on {fleet.kind}/{fleet.size} {condition}")
                    continue
                cell = run_contender(fleet, contender, status, condition, dead, repeats)
                if not impaired and args.count_datagrams and fleet.size <= 1000:
                    packets = count_datagrams(fleet, contender, status)
                    for run in cell:
                        run["datagrams"] = run["datagrams"] if packets is None else packets
                runs.extend(cell)
    if args.power_off:
        subset = SubFleet(fleet, min(args.power_off, fleet.size))
        off = Options(workers=args.workers, deadline=60.0, timeout=args.timeout, op="off")
        for contender in contenders:
            if not contender.power_off or subset.size > contender.max_nodes:
                continue
            runs.extend(run_contender(subset, contender, off, "clean", [], args.action_repeats))
        fleet.reset_power()
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
        "--conditions", nargs="*", default=list(CONDITIONS), choices=list(CONDITIONS)
    )
    parser.add_argument(
        "--contenders", nargs="*", default=[c.name for c in CONTENDERS], choices=list(BY_NAME)
    )
    parser.add_argument("--power-off", type=int, default=100, help="BMCs to power off (0: skip)")
    parser.add_argument("--workers", type=int, default=8, help="concurrency of powersync/pyghmi")
    parser.add_argument("--deadline", type=float, default=15.0, help="per-node deadline, s")
    parser.add_argument("--timeout", type=float, default=600.0, help="per client process, s")
    parser.add_argument("--no-count-datagrams", dest="count_datagrams", action="store_false")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.ipmi_sim = min(args.ipmi_sim, 4)
        args.sizes = [min(size, 20) for size in args.sizes][:1]
        args.repeats = args.impaired_repeats = args.action_repeats = 1
        args.conditions = ["clean"]
        args.power_off = min(args.power_off, 4)
        args.timeout = min(args.timeout, 120.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    contenders = [BY_NAME[name] for name in args.contenders]
    document: dict[str, Any] = {
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": report.machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": [],
    }
    skipped: list[str] = []
    fleets: list[tuple[str, int]] = []
    if args.ipmi_sim:
        fleets.append(("ipmi_sim", args.ipmi_sim))
    fleets.extend(("powersync_sim", size) for size in args.sizes)
    for kind, size in fleets:
        log(f"fleet {kind} x {size}")
        fleet_class = IpmiSimFleet if kind == "ipmi_sim" else PowersyncSimFleet
        with fleet_class(size) as fleet:
            idle_rss = fleet.server_rss_kb()
            document.setdefault("fleets", []).append(
                {"kind": kind, "size": size, "server_rss_kb_idle": idle_rss}
            )
            document["runs"].extend(bench_fleet(fleet, args, contenders, skipped))
    document["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    document["skipped"] = skipped
    rows = report.summarize(document["runs"])
    document["summary"] = rows
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    (out / "results.md").write_text(report.markdown(rows, skipped))
    report.chart(rows, out / "chart.png")
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
