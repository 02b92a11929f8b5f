"""BMC fleets for the benchmark: OpenIPMI ipmi_sim processes and the powersync simulator.

Both run in processes of their own, so a contender's CPU is never mixed with the servers'.
Every fleet listens on consecutive UDP ports of 127.0.0.1 (ipmipower takes a port range,
tcpdump a port-range filter), and keeps a known power pattern so that every contender's
answers can be checked node by node.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from bench.procs import end_process, free_port_block, process_cpu_s, process_rss_kb

HOST = "127.0.0.1"
USERNAME = "admin"
# A throwaway credential for loopback simulators only; the peers put it in argv or files.
PASSWORD = "bench-" + os.urandom(6).hex()
ROOT = Path(__file__).resolve().parent.parent


def expected_power(index: int) -> bool:
    """The power pattern every fleet starts each pass with: one node in three is on."""
    return index % 3 == 0


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int


class Fleet:
    """What contenders need from a fleet (both kinds implement it)."""

    kind: str
    cipher_suite: int
    endpoints: list[Endpoint]
    port_base: int

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()  # a half-started fleet leaves no process behind
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_power(self) -> None:
        raise NotImplementedError

    def powers(self) -> list[bool]:
        raise NotImplementedError

    def server_cpu_s(self) -> float:
        raise NotImplementedError

    def server_rss_kb(self) -> int:
        raise NotImplementedError

    def set_dead(self, indices: Sequence[int]) -> None:
        raise NotImplementedError

    def set_impairment(self, *, delay_ms: float, loss: float) -> None:
        raise NotImplementedError

    def clear_faults(self) -> None:
        raise NotImplementedError

    @property
    def size(self) -> int:
        return len(self.endpoints)


class HostedFleet(Fleet):
    """A fleet served by one child process of its own: its CPU and memory are read from
    /proc, and stopping the fleet ends the process and removes its working directory."""

    proc: subprocess.Popen[Any] | None = None
    workdir: Path | None = None
    stop_grace = 10.0  # seconds before a host that does not exit is killed
    stop_by_stdin = True  # the simulator hosts exit when their stdin closes

    def spawn_host(self, module: str, *args: str) -> None:
        """``python -m module args``, the BMC password in its environment, never in argv."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=dict(os.environ, BENCH_BMC_PASSWORD=PASSWORD),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read_reply(self, host: str) -> dict[str, Any]:
        """The host's next JSON line."""
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{host} exited (status {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def server_cpu_s(self) -> float:
        assert self.proc is not None
        return process_cpu_s(self.proc.pid)

    def server_rss_kb(self) -> int:
        assert self.proc is not None
        return process_rss_kb(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc, grace=self.stop_grace, close_stdin=self.stop_by_stdin)
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def wait_for_udp_ports(ports: Sequence[int], *, timeout: float) -> None:
    """Wait until every port has a bound UDP socket (read from /proc/net/udp)."""
    wanted = set(ports)
    deadline = time.monotonic() + timeout
    while True:
        bound: set[int] = set()
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with contextlib.suppress(OSError), open(table) as handle:
                next(handle)
                for line in handle:
                    local = line.split()[1]
                    bound.add(int(local.rsplit(":", 1)[1], 16))
        missing = wanted - bound
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(missing)} BMC ports never opened (e.g. {min(missing)})")
        time.sleep(0.1)


# ---------------------------------------------------------------- OpenIPMI ipmi_sim

# ipmi_sim runs this program (through /bin/sh -c) for every Get Chassis Status and
# Chassis Control; the power state lives in a file so the harness can set and read it.
CHASSIS_SCRIPT = """#!/bin/sh
state=$1; op=$2; shift 2
if [ "$op" = get ]; then
  for what in "$@"; do
    case $what in
      power) value=0; [ -r "$state" ] && read value < "$state"; echo "power:$value" ;;
      boot) echo "boot:default" ;;
      *) echo "unsupported: $what"; exit 1 ;;
    esac
  done
  exit 0
fi
if [ "$op" = set ]; then
  while [ $# -ge 2 ]; do
    if [ "$1" = power ]; then echo "$2" > "$state.new" && mv -f "$state.new" "$state"; fi
    shift 2
  done
  exit 0
fi
exit 1
"""

# One BMC at IPMB address 0x20 with the chassis device bit in its capabilities.
EMU_FILE = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""

LAN_CONF = """name "{name}"
set_working_mc 0x20
  startlan 1
    addr {host} {port}
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid {guid}
  endlan
  chassis_control "{script} {state}"
  user 1 false "" "" user 1
  user 2 true "{username}" "{password}" admin 10 md5
"""


class IpmiSimFleet(Fleet):
    """``count`` OpenIPMI ipmi_sim processes on consecutive ports (the independent servers)."""

    kind = "ipmi_sim"
    cipher_suite = 3  # ipmi_sim 2.0.33 has no SHA-256 suites

    def __init__(self, count: int) -> None:
        self.count = count
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-ipmi-sim-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.proxy: subprocess.Popen[str] | None = None
        self.direct_base = 0
        self.port_base = 0
        self.endpoints = []
        self.paused: list[int] = []

    def start(self) -> None:
        binary = shutil.which("ipmi_sim") or "/usr/bin/ipmi_sim"
        script = self.workdir / "chassis.sh"
        script.write_text(CHASSIS_SCRIPT)
        script.chmod(0o700)
        emu = self.workdir / "bmc.emu"
        emu.write_text(EMU_FILE)
        self.direct_base = free_port_block(self.count)
        for index in range(self.count):
            port = self.direct_base + index
            bmc_dir = self.workdir / f"bmc-{index:04d}"
            (bmc_dir / "state").mkdir(parents=True)
            conf = bmc_dir / "lan.conf"
            conf.write_text(
                LAN_CONF.format(
                    name=f"bench-{index}",
                    host=HOST,
                    port=port,
                    guid=os.urandom(16).hex(),
                    script=script,
                    state=bmc_dir / "power",
                    username=USERNAME,
                    password=PASSWORD,
                )
            )
            conf.chmod(0o600)
            # -n: no console; the process runs in the background.
            argv = [binary, "-n", "-c", str(conf), "-f", str(emu), "-s", str(bmc_dir / "state")]
            self.procs.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        self.reset_power()
        self.use_direct()
        wait_for_udp_ports([ep.port for ep in self.endpoints], timeout=30)

    def use_direct(self) -> None:
        self.port_base = self.direct_base
        self.endpoints = [
            Endpoint(f"ipmisim-{i:04d}", HOST, self.direct_base + i) for i in range(self.count)
        ]

    def state_file(self, index: int) -> Path:
        return self.workdir / f"bmc-{index:04d}" / "power"

    def reset_power(self) -> None:
        for index in range(self.count):
            self.state_file(index).write_text("1\n" if expected_power(index) else "0\n")

    def powers(self) -> list[bool]:
        return [self.state_file(i).read_text().strip() == "1" for i in range(self.count)]

    def alive(self) -> int:
        return sum(1 for proc in self.procs if proc.poll() is None)

    def server_cpu_s(self) -> float:
        total = sum(process_cpu_s(proc.pid) for proc in self.procs)
        if self.proxy is not None:
            total += process_cpu_s(self.proxy.pid)
        return total

    def server_rss_kb(self) -> int:
        return sum(process_rss_kb(proc.pid) for proc in self.procs)

    def set_dead(self, indices: Sequence[int]) -> None:
        """Dead BMCs never answer: their processes are stopped (datagrams queue unanswered)."""
        for index in indices:
            os.kill(self.procs[index].pid, signal.SIGSTOP)
            self.paused.append(index)

    def set_impairment(self, *, delay_ms: float, loss: float) -> None:
        """Put the user-space delay/loss proxy (bench.proxy) in front of every BMC."""
        self.clear_proxy()
        listen_base = free_port_block(self.count, start=self.direct_base + self.count)
        self.proxy = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.proxy", "--count", str(self.count)),
                *("--listen-base", str(listen_base), "--target-base", str(self.direct_base)),
                *("--delay-ms", str(delay_ms), "--jitter-ms", str(delay_ms / 5)),
                *("--loss", str(loss), "--seed", "7"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proxy.stdout is not None
        line = self.proxy.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"bench.proxy did not start: {line!r}")
        self.port_base = listen_base
        self.endpoints = [
            Endpoint(f"ipmisim-{i:04d}", HOST, listen_base + i) for i in range(self.count)
        ]

    def clear_proxy(self) -> None:
        if self.proxy is not None:
            self.proxy.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proxy.communicate(timeout=5)
            if self.proxy.poll() is None:
                self.proxy.kill()
                self.proxy.wait()
            self.proxy = None
        self.use_direct()

    def clear_faults(self) -> None:
        self.clear_proxy()
        for index in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.procs[index].pid, signal.SIGCONT)
        self.paused = []

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # a proxy or BMC process already gone
            self.clear_faults()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------- powersync simulator


class PowersyncSimFleet(HostedFleet):
    """The powersync simulator (``ipmi.sim.open_fleet``) in a child process (bench.sim_host)."""

    kind = "powersync_sim"
    cipher_suite = 17

    def __init__(self, count: int) -> None:
        self.count = count
        self.port_base = 0
        self.endpoints = []

    def start(self) -> None:
        self.port_base = free_port_block(self.count)
        self.spawn_host(
            "bench.sim_host",
            *("--count", str(self.count), "--host", HOST),
            *("--port-base", str(self.port_base), "--username", USERNAME),
        )
        reply = self.command({"cmd": "ready"}, timeout=120)
        if not reply.get("ok"):
            raise RuntimeError(f"simulator did not start: {reply}")
        self.endpoints = [
            Endpoint(f"sim-{i:05d}", HOST, self.port_base + i) for i in range(self.count)
        ]

    def command(self, request: dict[str, Any], *, timeout: float = 60) -> dict[str, Any]:
        """One JSON line to the simulator host, one JSON line back."""
        assert self.proc is not None
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        if request["cmd"] != "ready":
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
        return self.read_reply("simulator")

    def reset_power(self) -> None:
        self.command({"cmd": "reset_power"})

    def powers(self) -> list[bool]:
        return [bool(v) for v in self.command({"cmd": "powers"})["powers"]]

    def set_dead(self, indices: Sequence[int]) -> None:
        self.command({"cmd": "faults", "dead": list(indices)})

    def set_impairment(self, *, delay_ms: float, loss: float) -> None:
        # the simulator delays answers only: twice the one-way delay gives the same RTT
        self.command({"cmd": "faults", "latency_ms": 2 * delay_ms, "loss": loss})

    def clear_faults(self) -> None:
        self.command({"cmd": "faults"})
