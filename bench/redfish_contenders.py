"""The Redfish contenders: each does status passes over a Redfish fleet in child processes
measured by bench.procs, and returns a :class:`bench.contenders.PassResult`.

- ``sushy-par8``: the sushy library the way Ironic uses it (bench.redfish_pass --client sushy)
- ``curl-par8``: one curl process per node, 8 at a time, basic auth from a 0600 netrc file
- ``powersync-redfish-live`` / ``-percycle``: powersync's client (bench.redfish_pass)
- ``agent-redfish-live`` / ``-percycle``: the real agent's sync cycle (bench.agent_redfish_pass)

The measured cycle is the second one of a child process (sessions open, for the live
contenders); the first (TLS handshakes and logins) is reported beside it. Requests per
status come from the simulator's counters (its control socket), read around each cycle.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.child import count_error, difference
from bench.contenders import (
    Contender,
    Options,
    PassResult,
    Runner,
    failed_child,
    measured_cycle,
    merge,
    prepared_store,
    python_child,
)
from bench.fleets import HOST, PASSWORD, USERNAME, Fleet
from bench.procs import ProcessResult, run_measured, secret_file
from bench.redfish_fleets import RedfishFleet

_SCRATCH = Path(tempfile.mkdtemp(prefix="bench-redfish-"))
atexit.register(shutil.rmtree, _SCRATCH, True)
_FLEET_FILES: dict[tuple[str, int, int], str] = {}


def redfish(fleet: Fleet) -> RedfishFleet:
    if not isinstance(fleet, RedfishFleet):
        raise TypeError(f"a Redfish contender needs a Redfish fleet, not {fleet.kind}")
    return fleet


def fleet_key(fleet: RedfishFleet) -> tuple[str, int, int]:
    return (fleet.kind, fleet.port_base, fleet.size)


def fleet_file(fleet: RedfishFleet) -> str:
    """The fleet's description for the child processes (no password: that goes by env)."""
    key = fleet_key(fleet)
    if key not in _FLEET_FILES:
        path = _SCRATCH / f"{fleet.kind}-{fleet.size}-{fleet.port_base}.json"
        description = {
            "urls": fleet.urls,
            "systems": fleet.systems,
            "ca_file": fleet.ca_file,
            "username": USERNAME,
            "control": fleet.control,
        }
        path.write_text(json.dumps(description))
        _FLEET_FILES[key] = str(path)
    return _FLEET_FILES[key]


def per_status(server: dict[str, int] | None, field: str, statuses: int) -> float | None:
    return None if server is None else server[field] / statuses


def child_result(name: str, fleet: RedfishFleet, result: ProcessResult, report: Any) -> PassResult:
    """The measured (last) cycle of a child's report, the first beside it."""
    if report is None:
        return failed_child(name, fleet, result)
    first, measured = report["cycles"][0], report["cycles"][-1]
    # The server's counters where it keeps them (the simulator), else the client's own
    server = measured.get("server") or measured.get("client")
    return measured_cycle(
        name,
        fleet,
        result,
        report,
        requests_per_status=per_status(server, "requests", fleet.size),
        server=server,
        client=measured.get("client"),
        first_cycle_server=first.get("server") or first.get("client"),
        first_cycle_ok=sum(1 for power in first["powers"] if power is not None),
        summary=measured.get("summary"),
    )


def library_pass(fleet: Fleet, options: Options, client: str, mode: str) -> PassResult:
    target = redfish(fleet)
    name = f"sushy-par{options.workers}" if client == "sushy" else f"powersync-redfish-{mode}"
    args = [
        *("--fleet", fleet_file(target), "--client", client, "--mode", mode),
        *("--workers", str(options.workers), "--cycles", "2"),
        *("--deadline", str(options.deadline)),
    ]
    result, report = python_child("bench.redfish_pass", args, options)
    return child_result(name, target, result, report)


def agent_pass(fleet: Fleet, options: Options, session_mode: str) -> PassResult:
    target = redfish(fleet)
    name = "agent-redfish-live" if session_mode == "persistent" else "agent-redfish-percycle"
    store = prepared_store(target, "bench.agent_redfish_pass", ["--fleet", fleet_file(target)])
    args = [
        *("--fleet", fleet_file(target), "--store", store),
        *("--session-mode", session_mode, "--workers", str(options.workers)),
        *("--cycles", "2", "--deadline", str(options.deadline)),
    ]
    result, report = python_child("bench.agent_redfish_pass", args, options)
    return child_result(name, target, result, report)


# ---------------------------------------------------------------- curl


def curl_argv(fleet: RedfishFleet, index: int, netrc: str) -> list[str]:
    # --netrc-file: the password never appears in argv (ps shows argv to every user)
    return [
        *("curl", "-sS", "--max-time", "30", "--netrc-file", netrc),
        *("--cacert", fleet.ca_file, "-H", "Accept: application/json"),
        fleet.urls[index] + fleet.systems[index],
    ]


def parse_power_state(stdout: str) -> bool | None:
    try:
        state = json.loads(stdout).get("PowerState")
    except (ValueError, AttributeError):
        return None
    if state not in ("On", "Off", "PoweringOn", "PoweringOff", "Paused"):
        return None
    return bool(state in ("On", "PoweringOn"))


def curl_pass(fleet: Fleet, options: Options) -> PassResult:
    """A curl per node: every status is a new process, TCP connection, TLS handshake and
    a basic-auth GET (what a shell script over the fleet does)."""
    target = redfish(fleet)
    parallel = options.workers
    before = target.counters()
    with secret_file(f"machine {HOST} login {USERNAME} password {PASSWORD}\n") as netrc:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            runs = list(
                pool.map(
                    lambda i: run_measured(curl_argv(target, i, netrc), timeout=60),
                    range(target.size),
                )
            )
        wall = time.monotonic() - started
    after = target.counters()
    server = difference(after, before)
    powers = [parse_power_state(run.stdout) for run in runs]
    errors: dict[str, int] = {}
    for power, run in zip(powers, runs, strict=True):
        if power is None:
            reason = "timeout" if run.timed_out else (run.stderr.strip() or run.stdout.strip())
            count_error(errors, (reason.splitlines() or ["?"])[0][:80])
    cpu, rss = merge(runs)
    return PassResult(
        contender=f"curl-par{parallel}",
        nodes=target.size,
        wall_s=wall,
        cpu_s=cpu,
        maxrss_kb=rss,
        powers=powers,
        errors=errors,
        extra={
            "processes": len(runs),
            "requests_per_status": per_status(server, "requests", target.size),
            "server": server,
            "first_cycle_server": server,
        },
    )


def _no_datagrams(name: str, runner: Runner, max_nodes: int = 10000) -> Contender:
    # Redfish is TCP: nothing for the harness's datagram counting; status passes only
    return Contender(name, runner, max_nodes, impaired=False, tcpdump_datagrams=False,
                     power_off=False)  # fmt: skip


REDFISH_CONTENDERS: tuple[Contender, ...] = (
    _no_datagrams("sushy-par8", lambda f, o: library_pass(f, o, "sushy", "live")),
    _no_datagrams("curl-par8", curl_pass),
    _no_datagrams("powersync-redfish-live", lambda f, o: library_pass(f, o, "powersync", "live")),
    _no_datagrams(
        "powersync-redfish-percycle", lambda f, o: library_pass(f, o, "powersync", "percycle")
    ),
    _no_datagrams("agent-redfish-live", lambda f, o: agent_pass(f, o, "persistent")),
    _no_datagrams("agent-redfish-percycle", lambda f, o: agent_pass(f, o, "per-cycle")),
)
REDFISH_BY_NAME = {contender.name: contender for contender in REDFISH_CONTENDERS}
REDFISH_REFERENCE = "sushy-par8"
