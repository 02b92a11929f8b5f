"""The contenders: each does one pass over a whole fleet (read every power state, or power
every BMC off and confirm it), in child processes measured by bench.procs.

A pass returns a :class:`PassResult`: the wall time of the pass, the client CPU (user+sys),
the peak resident set of the client process, the power read per node (checked against the
fleet's known pattern), and where known the datagrams exchanged.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.child import count_error
from bench.fleets import PASSWORD, ROOT, USERNAME, Fleet
from bench.procs import ProcessResult, run_measured, secret_file

POLL_INTERVAL = 0.5  # seconds between status reads while confirming a power action
CONFIRM_TIMEOUT = 30.0


@dataclass
class PassResult:
    contender: str
    nodes: int
    wall_s: float
    cpu_s: float
    maxrss_kb: int
    powers: list[bool | None] | None  # per node; None when the tool does not say which node
    on_count: int = 0  # for tools whose output cannot be matched to nodes (ipmipower)
    off_count: int = 0
    datagrams: int | None = None
    errors: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def correct(self, truth: Sequence[bool], dead: Sequence[int] = ()) -> int:
        """Nodes whose state was read correctly (dead BMCs excluded from the truth)."""
        alive = [i for i in range(len(truth)) if i not in set(dead)]
        if self.powers is not None:
            return sum(1 for i in alive if self.powers[i] is truth[i])
        want_on = sum(1 for i in alive if truth[i])
        want_off = len(alive) - want_on
        return min(self.on_count, want_on) + min(self.off_count, want_off)


@dataclass(frozen=True)
class Options:
    workers: int = 8
    deadline: float = 15.0  # per node, seconds (the agent's sync_node_timeout)
    timeout: float = 600.0  # per client process
    op: str = "status"  # or "off"
    adaptive: bool = True  # RTT-adaptive retransmission of reads (the client's default)


def merge(results: Sequence[ProcessResult]) -> tuple[float, int]:
    return sum(r.cpu_s for r in results), max((r.maxrss_kb for r in results), default=0)


# ---------------------------------------------------------------- ipmitool (Ironic's way)


def ipmitool_argv(fleet: Fleet, index: int, pwfile: str, *command: str) -> list[str]:
    endpoint = fleet.endpoints[index]
    return [
        *("ipmitool", "-I", "lanplus", "-H", endpoint.host, "-L", "ADMINISTRATOR"),
        *("-p", str(endpoint.port), "-U", USERNAME, "-f", pwfile),
        *("-C", str(fleet.cipher_suite), *command),
    ]


def parse_chassis_power(stdout: str) -> bool | None:
    for line in stdout.splitlines():
        if line.startswith("Chassis Power is "):
            return line.endswith(" on")
    return None


def ipmitool_node(
    fleet: Fleet, index: int, pwfile: str, options: Options
) -> tuple[bool | None, list[ProcessResult]]:
    runs: list[ProcessResult] = []
    if options.op == "off":
        runs.append(run_measured(ipmitool_argv(fleet, index, pwfile, "power", "off"), timeout=120))
        give_up = time.monotonic() + CONFIRM_TIMEOUT
        while True:
            runs.append(
                run_measured(ipmitool_argv(fleet, index, pwfile, "power", "status"), timeout=120)
            )
            power = parse_chassis_power(runs[-1].stdout)
            if power is False or time.monotonic() > give_up:
                return power, runs
            time.sleep(POLL_INTERVAL)
    runs.append(run_measured(ipmitool_argv(fleet, index, pwfile, "power", "status"), timeout=120))
    return parse_chassis_power(runs[-1].stdout), runs


def ipmitool_pass(fleet: Fleet, options: Options, parallel: int) -> PassResult:
    with secret_file(PASSWORD) as pwfile:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            outcomes = list(
                pool.map(lambda i: ipmitool_node(fleet, i, pwfile, options), range(fleet.size))
            )
        wall = time.monotonic() - started
    runs = [run for _, node_runs in outcomes for run in node_runs]
    cpu, rss = merge(runs)
    errors: dict[str, int] = {}
    for power, node_runs in outcomes:
        if power is None:
            last = node_runs[-1]
            reason = (
                "timeout" if last.timed_out else (last.stderr.strip().splitlines() or ["?"])[-1]
            )
            count_error(errors, reason[:80])
    name = "ipmitool-seq" if parallel == 1 else f"ipmitool-par{parallel}"
    return PassResult(
        contender=name,
        nodes=fleet.size,
        wall_s=wall,
        cpu_s=cpu,
        maxrss_kb=rss,
        powers=[power for power, _ in outcomes],
        errors=errors,
        extra={"processes": len(runs)},
    )


# ---------------------------------------------------------------- FreeIPMI ipmipower


# ipmipower opens two sockets per host at once; above ~5,000 hosts one invocation runs out of
# descriptors ("ipmi_get_random: Bad file descriptor"), so big fleets are split in ranges
# run one after another, as an operator would.
IPMIPOWER_MAX_HOSTS = 5000


def ipmipower_argv(fleet: Fleet, first: int, last: int, *command: str) -> list[str]:
    argv = ["ipmipower", "-D", "LAN_2_0", "-I", str(fleet.cipher_suite)]
    if fleet.kind == "ipmi_sim":
        # ipmi_sim echoes privilege 0 in the Open Session Response; this workaround accepts it
        argv += ["-W", "opensesspriv"]
    host = fleet.endpoints[0].host
    first_port, last_port = fleet.endpoints[first].port, fleet.endpoints[last].port
    hosts = f"{host}:[{first_port}-{last_port}]"
    return [*argv, "-h", hosts, "-u", USERNAME, "-p", PASSWORD, *command]


def ipmipower_all(fleet: Fleet, options: Options, *command: str) -> list[ProcessResult]:
    runs = []
    for first in range(0, fleet.size, IPMIPOWER_MAX_HOSTS):
        last = min(fleet.size, first + IPMIPOWER_MAX_HOSTS) - 1
        argv = ipmipower_argv(fleet, first, last, *command)
        runs.append(run_measured(argv, timeout=options.timeout))
    return runs


def ipmipower_pass(fleet: Fleet, options: Options) -> PassResult:
    runs: list[ProcessResult] = []
    started = time.monotonic()
    if options.op == "off":
        runs += ipmipower_all(fleet, options, "--off")
        give_up = time.monotonic() + CONFIRM_TIMEOUT
        while True:
            last = ipmipower_all(fleet, options, "--stat")
            runs += last
            on, off = count_ipmipower("".join(r.stdout for r in last))
            if off >= fleet.size or time.monotonic() > give_up:
                break
            time.sleep(POLL_INTERVAL)
    else:
        last = ipmipower_all(fleet, options, "--stat")
        runs += last
    wall = time.monotonic() - started
    output = "".join(r.stdout for r in last)
    on, off = count_ipmipower(output)
    errors: dict[str, int] = {}
    for line in output.splitlines():
        state = line.rsplit(": ", 1)[-1]
        if state not in ("on", "off"):
            count_error(errors, state[:80])
    for run in last:
        if run.timed_out:
            count_error(errors, "timeout")
        elif run.returncode != 0 and run.stderr.strip():  # else: the failed hosts' lines say why
            count_error(errors, run.stderr.strip().splitlines()[0][:80])
    cpu, rss = merge(runs)
    return PassResult(
        contender="ipmipower",
        nodes=fleet.size,
        wall_s=wall,
        cpu_s=cpu,
        maxrss_kb=rss,
        powers=None,
        on_count=on,
        off_count=off,
        errors=errors,
        extra={"processes": len(runs)},
    )


def count_ipmipower(stdout: str) -> tuple[int, int]:
    """ipmipower prints "host: on|off" per BMC, without the port: only counts are usable."""
    on = sum(1 for line in stdout.splitlines() if line.endswith(": on"))
    off = sum(1 for line in stdout.splitlines() if line.endswith(": off"))
    return on, off


# ---------------------------------------------------------------- pyghmi and powersync


def child_env() -> dict[str, str]:
    env = dict(os.environ, BENCH_BMC_PASSWORD=PASSWORD)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def python_child(module: str, args: Sequence[str], options: Options) -> tuple[ProcessResult, Any]:
    result = run_measured(
        [sys.executable, "-m", module, *args], timeout=options.timeout, env=child_env()
    )
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        report = None
    return result, report


def fleet_args(fleet: Fleet) -> list[str]:
    first = fleet.endpoints[0]
    return [
        *("--host", first.host, "--port-base", str(first.port)),
        *("--count", str(fleet.size), "--username", USERNAME),
    ]


def failed_child(name: str, fleet: Fleet, result: ProcessResult) -> PassResult:
    reason = "timeout" if result.timed_out else f"exit {result.returncode}"
    detail = (result.stderr.strip().splitlines() or [""])[-1][:200]
    return PassResult(
        contender=name,
        nodes=fleet.size,
        wall_s=result.wall_s,
        cpu_s=result.cpu_s,
        maxrss_kb=result.maxrss_kb,
        powers=[None] * fleet.size,
        errors={reason: fleet.size},
        extra={"stderr": detail},
    )


def pyghmi_pass(fleet: Fleet, options: Options) -> PassResult:
    name = f"pyghmi-par{options.workers}"
    args = [*fleet_args(fleet), "--workers", str(options.workers), "--op", options.op]
    result, report = python_child("bench.pyghmi_pass", args, options)
    if report is None:
        return failed_child(name, fleet, result)
    return PassResult(
        contender=name,
        nodes=fleet.size,
        wall_s=result.wall_s,
        cpu_s=result.cpu_s,
        maxrss_kb=result.maxrss_kb,
        powers=report["powers"],
        errors=report["errors"],
        extra={"inproc_wall_s": report["inproc_wall_s"], "inproc_cpu_s": report["inproc_cpu_s"]},
    )


def measured_cycle(
    name: str, fleet: Fleet, result: ProcessResult, report: dict[str, Any], **extra: Any
) -> PassResult:
    """A child's last cycle as the pass (the first one logs in); the whole process and the
    first cycle beside it in ``extra``, with the contender's own ``extra``."""
    first, measured = report["cycles"][0], report["cycles"][-1]
    return PassResult(
        contender=name,
        nodes=fleet.size,
        wall_s=measured["wall_s"],
        cpu_s=measured["cpu_s"],
        maxrss_kb=result.maxrss_kb,
        powers=measured["powers"],
        errors=measured.get("errors", {}),
        extra={
            "process_wall_s": result.wall_s,
            "process_cpu_s": result.cpu_s,
            "startup_cpu_s": report.get("startup_cpu_s"),
            "first_cycle_wall_s": first["wall_s"],
            "first_cycle_cpu_s": first["cpu_s"],
            **extra,
        },
    )


def powersync_pass(fleet: Fleet, options: Options, mode: str) -> PassResult:
    """powersync's client; the measured cycle is the second one of the child process.

    fresh: the second cycle logs in again (a warm daemon in per-cycle session mode);
    long-lived: the second cycle reuses the sessions the first cycle opened.
    """
    name = "powersync-fresh" if mode == "fresh" else "powersync-longlived"
    cycles = 1 if options.op == "off" else 2
    if options.op == "off":
        name = "powersync"  # one cycle: log in, power off, poll until off
    args = [
        *fleet_args(fleet),
        *("--workers", str(options.workers), "--mode", mode, "--cycles", str(cycles)),
        *("--op", options.op, "--deadline", str(options.deadline)),
        *("--cipher-suites", str(fleet.cipher_suite)),
        "--adaptive" if options.adaptive else "--no-adaptive",
    ]
    result, report = python_child("bench.powersync_pass", args, options)
    if report is None:
        return failed_child(name, fleet, result)
    stats = report["cycles"][-1]["stats"]
    measured = measured_cycle(name, fleet, result, report, stats=stats)
    measured.datagrams = stats["sent"] + stats["received"]
    return measured


_PREPARED_STORES: set[str] = set()
_STORE_DIR = Path(tempfile.mkdtemp(prefix="bench-agent-stores-"))
atexit.register(shutil.rmtree, _STORE_DIR, True)


def prepared_store(fleet: Fleet, module: str, args: Sequence[str]) -> str:
    """A SQLite store holding the fleet's nodes, made once per fleet by ``module --prepare``
    (not measured)."""
    path = str(_STORE_DIR / f"{fleet.kind}-{fleet.size}-{fleet.endpoints[0].port}.sqlite")
    if path not in _PREPARED_STORES:
        argv = [sys.executable, "-m", module, "--prepare", "--store", path, *args]
        done = subprocess.run(
            argv, env=child_env(), capture_output=True, text=True, timeout=900, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"preparing the agent store failed: {done.stderr[-500:]}")
        _PREPARED_STORES.add(path)
    return path


def agent_pass(fleet: Fleet, options: Options, session_mode: str) -> PassResult:
    """The real agent's sync cycle (SyncService with a SQLite store); second cycle measured."""
    name = "agent-longlived" if session_mode == "persistent" else "agent-fresh"
    store = prepared_store(
        fleet, "bench.agent_pass", [*fleet_args(fleet), "--cipher-suites", str(fleet.cipher_suite)]
    )
    args = [
        *fleet_args(fleet),
        *("--store", store, "--session-mode", session_mode),
        *("--workers", str(options.workers), "--cycles", "2"),
        *("--deadline", str(options.deadline), "--cipher-suites", str(fleet.cipher_suite)),
        "--adaptive" if options.adaptive else "--no-adaptive",
    ]
    result, report = python_child("bench.agent_pass", args, options)
    if report is None:
        return failed_child(name, fleet, result)
    measured = report["cycles"][-1]
    return measured_cycle(
        name, fleet, result, report, summary=measured["summary"], pool=measured["pool"]
    )


Runner = Callable[[Fleet, Options], PassResult]


@dataclass(frozen=True)
class Contender:
    name: str
    run: Runner
    max_nodes: int  # larger fleets would take minutes per pass: skipped, and said so
    impaired: bool = True  # also run under latency / loss / dead-BMC conditions
    tcpdump_datagrams: bool = True  # count datagrams in an extra pass under tcpdump
    power_off: bool = True


CONTENDERS: tuple[Contender, ...] = (
    Contender("ipmitool-seq", lambda f, o: ipmitool_pass(f, o, 1), 100, impaired=False),
    Contender("ipmitool-par8", lambda f, o: ipmitool_pass(f, o, 8), 1000),
    Contender("ipmipower", ipmipower_pass, 10000),
    Contender("pyghmi-par8", pyghmi_pass, 1000),
    Contender(
        "powersync-fresh",
        lambda f, o: powersync_pass(f, o, "fresh"),
        10000,
        tcpdump_datagrams=False,  # the client counts its own datagrams
        power_off=False,  # an action logs in either way: one powersync line is enough
    ),
    Contender(
        "powersync-longlived",
        lambda f, o: powersync_pass(f, o, "persistent"),
        10000,
        tcpdump_datagrams=False,
    ),
    Contender(
        "agent-fresh",
        lambda f, o: agent_pass(f, o, "per-cycle"),
        10000,
        tcpdump_datagrams=False,  # a capture would mix in the first (login) cycle
        power_off=False,
    ),
    Contender(
        "agent-longlived",
        lambda f, o: agent_pass(f, o, "persistent"),
        10000,
        tcpdump_datagrams=False,
        power_off=False,
    ),
)

BY_NAME = {contender.name: contender for contender in CONTENDERS}
REFERENCE = "powersync-longlived"
