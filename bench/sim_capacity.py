"""Benchmark of the simulator: memory per BMC and established-session status queries/s.

    python -m bench.sim_capacity --nodes 10000 --sessions 200 --depth 4 --seconds 10

Runs ``powersync sim`` as a subprocess pinned to one CPU (``--server-cpu``), measures its
resident memory idle, after one login + close on every BMC, and with sessions held open,
then drives Get Chassis Status over established sessions from this process (pinned to
another CPU) with the core's sans-I/O ClientSession. Server CPU comes from
/proc/PID/stat, so "queries per CPU-second" does not depend on how fast the client is.
Loopback only. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from typing import Any

from bench.procs import process_cpu_s, process_rss_kb
from ipmi.proto.constants import Command, NetFn
from ipmi.proto.events import LoginComplete, LoginStep, Response
from ipmi.proto.session import ClientSession

PASSWORD = secrets.token_urlsafe(12)  # fresh for every run


class Server:
    def __init__(self, nodes: int, cpu: int | None, workdir: str, max_sessions: int) -> None:
        self.inventory = os.path.join(workdir, f"inventory-{nodes}.toml")
        environment = {**os.environ, "BENCH_SIM_PASSWORD": PASSWORD}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.cli.main",
                "sim",
                "--nodes",
                str(nodes),
                "--port-base",
                "0",
                "--password-env",
                "BENCH_SIM_PASSWORD",
                "--write-inventory",
                self.inventory,
                "--max-sessions",
                str(max_sessions),
                "--power-on",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        if cpu is not None:
            os.sched_setaffinity(self.process.pid, {cpu})
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        if "serving" not in ready:
            raise RuntimeError(f"simulator did not start: {ready!r}")
        with open(self.inventory, "rb") as handle:
            self.ports = [node["bmc_port"] for node in tomllib.load(handle)["nodes"]]

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


def login_all(
    ports: Sequence[int], *, keep: bool
) -> tuple[list[tuple[socket.socket, ClientSession]], float]:
    """Log in to every port concurrently (one socket each); close again unless ``keep``."""
    started = time.perf_counter()
    poller = select.epoll()
    pending: dict[int, tuple[socket.socket, ClientSession, bytes, float]] = {}
    done: list[tuple[socket.socket, ClientSession]] = []
    queue = list(ports)
    while queue or pending:
        while queue and len(pending) < 256:
            port = queue.pop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
            session = ClientSession(
                username=b"admin",
                password=PASSWORD.encode(),
                entropy=os.urandom,
                probe_auth_capabilities=False,
            )
            datagram = session.begin_login()
            sock.send(datagram)
            pending[sock.fileno()] = (sock, session, datagram, time.monotonic())
            poller.register(sock.fileno(), select.EPOLLIN)
        for fd, _ in poller.poll(0.2):
            sock, session, _, _ = pending[fd]
            event = session.receive(sock.recv(4096))
            if isinstance(event, LoginStep):
                sock.send(event.datagram)
                pending[fd] = (sock, session, event.datagram, time.monotonic())
            elif isinstance(event, LoginComplete):
                poller.unregister(fd)
                del pending[fd]
                if keep:
                    done.append((sock, session))
                else:
                    sock.send(session.close())
                    sock.close()
        now = time.monotonic()
        for fd, (sock, session, datagram, sent) in list(pending.items()):
            if now - sent > 1.0:  # lost: start again
                datagram = session.begin_login()
                sock.send(datagram)
                pending[fd] = (sock, session, datagram, now)
    poller.close()
    return done, time.perf_counter() - started


def drive(sessions: list[tuple[socket.socket, ClientSession]], depth: int, seconds: float) -> int:
    """Keep ``depth`` Get Chassis Status requests in flight per session; count answers."""
    poller = select.epoll()
    by_fd = {}
    for sock, session in sessions:
        by_fd[sock.fileno()] = (sock, session)
        poller.register(sock.fileno(), select.EPOLLIN)
        for _ in range(depth):
            sock.send(session.request(NetFn.CHASSIS, Command.GET_CHASSIS_STATUS)[1])
    answered = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _ in poller.poll(0.5):
            sock, session = by_fd[fd]
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                event = session.receive(data)
                if isinstance(event, Response):
                    if event.completion_code != 0:
                        raise RuntimeError(f"completion code {event.completion_code:#x}")
                    answered += 1
                    sock.send(session.request(NetFn.CHASSIS, Command.GET_CHASSIS_STATUS)[1])
    poller.close()
    return answered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=200, help="sessions driven for q/s")
    parser.add_argument("--depth", type=int, default=4, help="requests in flight per session")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    if args.client_cpu >= 0:
        os.sched_setaffinity(0, {args.client_cpu})
    result: dict[str, Any] = {"nodes": args.nodes, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="sim-bench-") as workdir:
        baseline = Server(1, args.server_cpu, workdir, 4)
        time.sleep(0.5)
        result["rss_kib_1_bmc"] = process_rss_kb(baseline.process.pid)
        baseline.stop()

        started = time.perf_counter()
        server = Server(args.nodes, args.server_cpu, workdir, 4)
        result["startup_seconds"] = round(time.perf_counter() - started, 2)
        try:
            time.sleep(1.0)
            idle = process_rss_kb(server.process.pid)
            result["rss_kib_idle"] = idle
            per_bmc = (idle - result["rss_kib_1_bmc"]) * 1024 / (args.nodes - 1)
            result["bytes_per_idle_bmc"] = round(per_bmc)
            _, login_seconds = login_all(server.ports, keep=False)
            result["login_close_all_seconds"] = round(login_seconds, 2)
            result["logins_per_second"] = round(args.nodes / login_seconds)
            touched = process_rss_kb(server.process.pid)
            result["bytes_per_bmc_after_login_close"] = round(
                (touched - result["rss_kib_1_bmc"]) * 1024 / (args.nodes - 1)
            )
            held, _ = login_all(server.ports[: args.sessions], keep=True)
            with_sessions = process_rss_kb(server.process.pid)
            result["bytes_per_open_session"] = round(
                (with_sessions - touched) * 1024 / max(1, len(held))
            )
            cpu_before = process_cpu_s(server.process.pid)
            wall = time.perf_counter()
            answered = drive(held, args.depth, args.seconds)
            wall = time.perf_counter() - wall
            cpu = process_cpu_s(server.process.pid) - cpu_before
            result.update(
                sessions=len(held),
                depth=args.depth,
                queries=answered,
                wall_seconds=round(wall, 2),
                queries_per_second=round(answered / wall),
                server_cpu_seconds=round(cpu, 2),
                server_cpu_us_per_query=round(cpu * 1e6 / answered, 1) if answered else None,
                queries_per_server_cpu_second=round(answered / cpu) if cpu else None,
            )
            for sock, _session in held:
                sock.close()
        finally:
            result["server_exit"] = server.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
