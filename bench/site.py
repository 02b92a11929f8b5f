"""``python -m bench.site``: one agent on SQLite, one on PostgreSQL, two on PostgreSQL.

    python -m bench.site                                   # 10,000 BMCs, 5 cycles per agent
    python -m bench.site --sizes 1000 --cycles 3 --out /tmp/site

Issue 13's benchmark (reported, never asserted). One powersync simulator fleet
(bench.fleets.PowersyncSimFleet) and one throw-away PostgreSQL server (bench.pg, durable:
fsync on, like SQLite's ``synchronous = FULL``) serve three configurations in turn, each on
a fresh store holding the fleet:

- ``sqlite-1``: one agent on SQLite;
- ``postgresql-1``: one agent on PostgreSQL;
- ``postgresql-2``: two agents on PostgreSQL, as separate processes, then a SIGKILL of one
  of them mid-cycle and the time until the other has read every node again.

Every agent is ``powersync --config F run`` in a process of its own, started through
bench.site_agent (the same daemon, with timers around its store calls and sync cycles).
Writes ``results.json`` and ``results.md`` into ``--out``; docs/benchmarks.md says what each
number measures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report, site_report
from bench.fleets import HOST, PASSWORD, USERNAME, PowersyncSimFleet
from bench.pg import PgServer, find_bindir
from bench.procs import end_process
from store import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
BUCKETS = 64  # agent.site.membership's bucket count
CONFIGURATIONS = {
    # name: (backend, agents)
    "sqlite-1": ("sqlite", 1),
    "postgresql-1": ("postgresql", 1),
    "postgresql-2": ("postgresql", 2),
}

AGENT_CONFIG = """[conductor]
host = "{host}"
sync_power_state_interval = {interval}
sync_power_state_workers = {workers}
sync_node_timeout = {deadline}
sync_jitter_window = 0
heartbeat_interval = {heartbeat_interval}
heartbeat_timeout = {heartbeat_timeout}

[ipmi]
cipher_suites = [17, 3]

[store]
{store}

[nova]
send_power_notifications = false
"""


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    with open("/proc/loadavg") as handle:
        return [float(value) for value in handle.read().split()[:3]]


class Daemon:
    """One agent process and the cycle lines it records (bench.site_agent)."""

    def __init__(self, workdir: Path, host: str, config_text: str) -> None:
        self.host = host
        self.record = workdir / f"{host}.cycles.jsonl"
        self.log = workdir / f"{host}.log"
        config = workdir / f"{host}.toml"
        config.write_text(config_text)
        config.chmod(0o600)
        argv = [sys.executable, "-m", "bench.site_agent", "--record", str(self.record)]
        argv += ["--", "--config", str(config), "run"]
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, env=env
            )
        self.cycles: list[dict[str, Any]] = []
        self.open_since: float | None = None  # a cycle has started and not ended
        self.last_start = 0.0
        self._offset = 0
        self.killed_at: float | None = None

    def poll(self) -> None:
        """Read the lines recorded since the last poll; a daemon that died is an error."""
        if self.killed_at is None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"agent {self.host} exited ({self.process.returncode}):\n{tail}")
        if not self.record.exists():
            return
        with self.record.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            event = json.loads(line)
            if event["event"] == "start":
                self.open_since = self.last_start = event["at"]
            else:
                self.open_since = None
                self.cycles.append(event)

    def cycles_started_after(self, moment: float) -> list[dict[str, Any]]:
        return [cycle for cycle in self.cycles if cycle["started"] >= moment]

    def kill(self) -> float:
        self.killed_at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        return self.killed_at

    def stop(self) -> None:
        end_process(self.process, grace=30)


@dataclass
class Snapshot:
    """Counters read at one moment: the database server's and the simulator's."""

    at: float
    server_cpu_s: float | None
    server_exec_ms: float | None
    server_calls: int | None
    datagrams: int


@dataclass(frozen=True)
class SiteStore:
    config_lines: str  # the agents' [store] section
    handle: Store  # the harness's own handle (leases)
    database: str | None  # PostgreSQL's database name


class Site:
    """The fleet, the database server, and what a configuration needs of them."""

    def __init__(self, fleet: PowersyncSimFleet, pg: PgServer | None, statements: bool) -> None:
        self.fleet = fleet
        self.pg = pg
        self.statements = statements  # pg_stat_statements loaded
        self._databases = 0

    @contextmanager
    def store(self, backend: str, workdir: Path) -> Iterator[SiteStore]:
        """A fresh store holding the fleet."""
        nodes = [
            {
                "name": f"bench-{index:05d}",
                "bmc_address": HOST,
                "bmc_port": endpoint.port,
                "bmc_username": USERNAME,
                "bmc_password": PASSWORD,
            }
            for index, endpoint in enumerate(self.fleet.endpoints)
        ]
        if backend == "sqlite":
            path = workdir / "site.sqlite"
            with open_store(str(path), "sqlite") as handle:
                handle.add_nodes(nodes)
                yield SiteStore(f'backend = "sqlite"\npath = "{path}"', handle, None)
            return
        assert self.pg is not None
        self._databases += 1
        name = f"site{self._databases}"
        self.pg.admin(f"CREATE DATABASE {name}")
        try:
            dsn = self.pg.dsn(name)
            with open_store(backend="postgresql", dsn=dsn, password=None) as handle:
                handle.add_nodes(nodes)
                # the server's trust authentication needs no password_file
                yield SiteStore(f'backend = "postgresql"\ndsn = "{dsn}"', handle, name)
        finally:
            self.pg.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def snapshot(self, database: str | None) -> Snapshot:
        exec_ms: float | None = None
        calls: int | None = None
        if database is not None and self.pg is not None and self.statements:
            rows = self.pg.admin(
                "SELECT coalesce(sum(total_exec_time), 0), coalesce(sum(calls), 0) "
                "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = %s",
                (database,),
            )
            exec_ms, calls = float(str(rows[0][0])), int(str(rows[0][1]))  # numeric, bigint
        stats = self.fleet.command({"cmd": "stats"})["stats"]
        return Snapshot(
            at=time.time(),
            server_cpu_s=None if database is None or self.pg is None else self.pg.server_cpu_s(),
            server_exec_ms=exec_ms,
            server_calls=calls,
            datagrams=stats["received"] + stats["answered"],
        )

    def requests(self) -> list[int]:
        return [int(n) for n in self.fleet.command({"cmd": "requests"})["requests"]]


def wait_until(
    condition: Callable[[], bool],
    daemons: Sequence[Daemon],
    limit: float,
    what: str,
    *,
    period: float = 0.1,
) -> float:
    """Poll the daemons' records until ``condition()``; the wall-clock time it held."""
    deadline = time.monotonic() + limit
    while True:
        for daemon in daemons:
            daemon.poll()
        if condition():
            return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {limit:g} s")
        time.sleep(period)


def bucket_holders(store: Store) -> dict[str, int]:
    now = store.server_time()
    counts: dict[str, int] = {}
    for lease in store.list_leases():
        if lease.name.startswith("bucket:") and lease.expires_at > now:
            counts[lease.holder] = counts.get(lease.holder, 0) + 1
    return counts


def even_split(store: Store, hosts: Sequence[str]) -> bool:
    counts = bucket_holders(store)
    share = BUCKETS // len(hosts)
    return sorted(counts) == sorted(hosts) and all(counts[h] == share for h in hosts)


def run_configuration(
    site: Site, name: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    backend, agents = CONFIGURATIONS[name]
    hosts = [f"agent-{chr(ord('a') + i)}" for i in range(agents)]
    steady_wanted = args.cycles - 1
    limit = 120 + args.cycles * args.interval + site.fleet.size / 100
    site.fleet.reset_power()
    load_before = loadavg()
    with ExitStack() as stack:
        shared = stack.enter_context(site.store(backend, workdir))
        store, database = shared.handle, shared.database
        daemons: list[Daemon] = []
        for host in hosts:
            text = AGENT_CONFIG.format(
                host=host,
                interval=args.interval,
                workers=args.workers,
                deadline=min(15.0, 0.8 * args.interval),  # 15 s is the default
                heartbeat_interval=args.heartbeat_interval,
                heartbeat_timeout=args.heartbeat_timeout,
                store=shared.config_lines,
            )
            daemons.append(Daemon(workdir, host, text))
        for daemon in daemons:
            stack.callback(daemon.stop)
        started = time.time()
        log(f"{name}: {agents} agent(s) on {backend}, {site.fleet.size} BMCs")

        # The share is settled when the leases are split evenly (one agent: all its own);
        # each agent's first cycle after that may still log in to nodes it just took.
        if backend == "sqlite":
            settled = started
        else:
            settled = wait_until(lambda: even_split(store, hosts), daemons, limit, "even split")

        def all_idle_and(enough: Callable[[Daemon], bool]) -> Callable[[], bool]:
            return lambda: all(d.open_since is None and enough(d) for d in daemons)

        wait_until(
            all_idle_and(lambda d: len(d.cycles_started_after(settled)) >= 1),
            daemons,
            limit,
            "a first cycle after the share settled",
        )
        window_start = site.snapshot(database)
        wait_until(
            all_idle_and(lambda d: len(d.cycles_started_after(window_start.at)) >= steady_wanted),
            daemons,
            limit + steady_wanted * args.interval,
            f"{steady_wanted} steady cycle(s)",
        )
        window_end = site.snapshot(database)
        log(f"{name}: steady window {window_end.at - window_start.at:.1f} s")
        takeover = None
        if agents > 1:
            takeover = measure_takeover(site, daemons, store, args)
        result = site_report.configuration_result(
            name=name,
            backend=backend,
            size=site.fleet.size,
            daemons=daemons,
            window=(window_start, window_end),
            settled=settled,
            started=started,
            takeover=takeover,
        )
        result["loadavg_before"] = load_before
    result["loadavg_after"] = loadavg()
    return result


def measure_takeover(
    site: Site, daemons: list[Daemon], store: Store, args: argparse.Namespace
) -> dict[str, Any]:
    """SIGKILL the last agent mid-cycle; when has the survivor read every node again?

    Three moments, from the kill: the survivor holds every bucket (the lease table); every
    BMC has answered a datagram it received after the kill (counted at the simulator); the
    survivor's first cycle that started after the kill and covered every node has ended.
    """
    victim, survivor = daemons[-1], daemons[0]
    typical = statistics.median(c["wall_s"] for c in victim.cycles[-3:])
    asked = time.time()
    wait_until(lambda: victim.last_start > asked, daemons, 2 * args.interval + 60, "a start")
    time.sleep(max(0.0, victim.last_start + typical / 2 - time.time()))  # mid-cycle
    killed = victim.kill()
    time.sleep(0.1)  # datagrams the victim sent before it died are answered (and counted)
    before = site.requests()
    bound = args.heartbeat_timeout + args.heartbeat_interval + args.interval
    moments: dict[str, float] = {}

    def everything_seen() -> bool:
        if "leases" not in moments and bucket_holders(store) == {survivor.host: BUCKETS}:
            moments["leases"] = time.time()
        if "every_bmc_asked" not in moments:
            now = site.requests()
            if all(after > was for after, was in zip(now, before, strict=True)):
                moments["every_bmc_asked"] = time.time()
        full = [
            c
            for c in survivor.cycles_started_after(killed)
            if c["nodes"] == site.fleet.size and c["ok"] == site.fleet.size
        ]
        if full and "full_cycle_ended" not in moments:
            moments["full_cycle_ended"] = full[0]["ended"]
            moments["full_cycle_started"] = full[0]["started"]
        return len(moments) == 4

    # every 0.25 s: the simulator's per-BMC counters are a 10,000-entry JSON line
    wait_until(everything_seen, [survivor], 3 * bound + 120, "takeover", period=0.25)
    log(f"takeover: every node read again {moments['full_cycle_ended'] - killed:.1f} s after")
    return {
        "killed": victim.host,
        "survivor": survivor.host,
        "heartbeat_interval_s": args.heartbeat_interval,
        "heartbeat_timeout_s": args.heartbeat_timeout,
        "sync_interval_s": args.interval,
        "bound_s": bound,
        **{f"{key}_after_s": moment - killed for key, moment in moments.items()},
    }


@contextmanager
def database_server(wanted: bool) -> Iterator[tuple[PgServer | None, bool]]:
    """The throw-away PostgreSQL server, durable, with pg_stat_statements when installed."""
    if not wanted:
        yield None, False
        return
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL not installed (apt-get install -y postgresql)")
    library = Path(bindir).parent / "lib" / "pg_stat_statements.so"
    statements = library.exists()
    settings = {"shared_preload_libraries": "pg_stat_statements"} if statements else {}
    server = PgServer(bindir, durable=True, settings=settings)
    try:
        server.init()
        server.start()
        if statements:
            server.admin("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield server, statements
    finally:
        server.cleanup()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.site", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000], help="BMCs per fleet")
    parser.add_argument(
        "--cycles", type=int, default=5, help="cycles per agent, the first (logins) included"
    )
    parser.add_argument("--workers", type=int, default=8, help="sync_power_state_workers")
    parser.add_argument("--interval", type=float, default=10.0, help="sync_power_state_interval")
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--heartbeat-timeout", type=float, default=6.0)
    parser.add_argument(
        "--configurations",
        nargs="+",
        default=list(CONFIGURATIONS),
        choices=list(CONFIGURATIONS),
    )
    parser.add_argument(
        "--render-only", action="store_true", help="run nothing: OUT/results.md from results.json"
    )
    parser.add_argument("--out", default="bench/results/site")
    args = parser.parse_args(argv)
    if args.cycles < 2:
        parser.error("--cycles must be at least 2 (the first one logs in)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        saved = json.loads((out / "results.json").read_text())
        (out / "results.md").write_text(site_report.markdown(saved))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "command": " ".join(
            ["python -m bench.site", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": report.machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "results": [],
    }
    postgres = any(CONFIGURATIONS[name][0] == "postgresql" for name in args.configurations)
    with database_server(postgres) as (pg, statements):
        document["pg_stat_statements"] = statements
        for size in args.sizes:
            log(f"fleet powersync_sim x {size}")
            with (
                PowersyncSimFleet(size) as fleet,
                tempfile.TemporaryDirectory(prefix="bench-site-") as workdir,
            ):
                site = Site(fleet, pg, statements)
                for name in args.configurations:
                    folder = Path(workdir) / name
                    folder.mkdir()
                    document["results"].append(run_configuration(site, name, args, folder))
    document["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    document["loadavg_at_end"] = loadavg()
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    (out / "results.md").write_text(site_report.markdown(document))
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
