"""A real, throw-away PostgreSQL server for the store tests and the site benchmark.

Here (not under tests/) so that ``python -m bench.site`` can start one too; the tests import
it through tests/store/pgserver.py.

initdb refuses to run as root, so as root every server command runs as the ``postgres`` user
(``runuser -u postgres --``) in a temporary directory owned by it. The server listens on
127.0.0.1 on a free port, with a unix socket directory of its own, and fsync off (the tests
check transactions and reconnection, not the disk).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

USER = "powersync_test"


def find_bindir() -> str | None:
    """The newest PostgreSQL bin directory with initdb, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return os.path.dirname(found[0])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """``durable``: PostgreSQL's own fsync/commit settings (the benchmark's default, like an
    operator's server) instead of the tests' fsync off; ``settings`` adds ``-c name=value``."""

    def __init__(
        self, bindir: str, *, durable: bool = False, settings: Mapping[str, str] | None = None
    ) -> None:
        self.bindir = bindir
        self.durable = durable
        self.settings = dict(settings or {})
        self.port = free_tcp_port()
        self.root = tempfile.mkdtemp(prefix="powersync-pg-")
        self.data = os.path.join(self.root, "data")
        self.sockets = os.path.join(self.root, "sockets")
        self.logfile = os.path.join(self.root, "server.log")
        os.makedirs(self.sockets)
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._databases = 0

    def _run(self, *command: str, timeout: float = 60) -> None:
        argv = [os.path.join(self.bindir, command[0]), *command[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, timeout=timeout, capture_output=True)

    def init(self) -> None:
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.logfile, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        # Not "pg_ctl restart": without -l the new server would hold our output pipes.
        self.stop()
        self.start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            cursor = conn.execute(sql, parameters or None)
            return list(cursor.fetchall()) if cursor.description else []

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database for one test; dropped afterwards."""
        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        self.admin(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        try:
            yield self.dsn(name)
        finally:
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def server_cpu_s(self) -> float:
        """User + sys CPU of the server: the postmaster, its live processes and (through the
        postmaster's reaped-children times) the backends that have exited."""
        from bench.procs import process_cpu_s

        with open(os.path.join(self.data, "postmaster.pid")) as handle:
            postmaster = int(handle.readline())
        total = process_cpu_s(postmaster)
        for entry in os.listdir("/proc"):
            if entry.isdigit() and parent_pid(int(entry)) == postmaster:
                total += process_cpu_s(int(entry))
        return total

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
