"""Running client processes and measuring them: wall time, user+sys CPU, peak RSS.

Every contender runs as a child process so that its CPU and memory are measured the same
way: ``os.wait4`` returns the child's own rusage (its CPU, and the largest resident set of
the child or any descendant it reaped), with nothing else in the harness mixed in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


@dataclass(frozen=True)
class ProcessResult:
    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    cpu_s: float  # user + sys of the child and the descendants it reaped
    maxrss_kb: int
    stdout: str
    stderr: str
    timed_out: bool


def run_measured(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin_text: str | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion (killed after ``timeout`` seconds) and measure it.

    The child is started through GNU time when it is installed: a child forked from this
    (large) Python process would inherit its resident-set high-water mark across exec, so
    its ``ru_maxrss`` would be ours. GNU time is small, and reports its child's own peak.
    """
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.TemporaryFile("w+") as inp,
        tempfile.NamedTemporaryFile("r", prefix="bench-rss-") as rss,
    ):
        launcher = [GNU_TIME, "-f", "%M", "-o", rss.name] if GNU_TIME else []
        if stdin_text is not None:
            inp.write(stdin_text)
            inp.flush()
            inp.seek(0)
        started = time.monotonic()
        proc = subprocess.Popen(
            launcher + list(argv),
            stdin=inp,
            stdout=out,
            stderr=err,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # so a timeout kills the whole process group
        )
        timed_out = threading.Event()

        def kill_group() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill_group)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: never leave a client running on its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
        finally:
            timer.cancel()
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        out.seek(0)
        err.seek(0)
        maxrss = usage.ru_maxrss
        if GNU_TIME:
            words = rss.read().split()
            maxrss = int(words[-1]) if words and words[-1].isdigit() else 0
        return ProcessResult(
            argv=tuple(argv),
            returncode=proc.returncode,
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            maxrss_kb=maxrss,
            stdout=out.read(),
            stderr=err.read(),
            timed_out=timed_out.is_set(),
        )


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a running process plus the children it has reaped (from /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14-17.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def process_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port_block(count: int, *, host: str = "127.0.0.1", start: int = 10000) -> int:
    """The first port of ``count`` consecutive UDP ports that are free on ``host`` right now.

    Blocks are searched below the kernel's ephemeral range, so tests of other people that
    bind port 0 do not collide with a fleet started here.
    """
    low, _ = ephemeral_range()
    base = start
    while base + count <= low:
        taken = probe_ports(host, base, count)
        if taken is None:
            return base
        base = taken + 1
    raise RuntimeError(f"no block of {count} free UDP ports between {start} and {low}")


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            low, high = handle.read().split()
        return int(low), int(high)
    except OSError:
        return 32768, 60999


def probe_ports(host: str, base: int, count: int) -> int | None:
    """None if ``base .. base+count-1`` are all free, else the first port found taken."""
    sockets: list[socket.socket] = []
    try:
        for port in range(base, base + count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                return port
            sockets.append(sock)
        return None
    finally:
        for sock in sockets:
            sock.close()


TCPDUMP_ARGV = (
    "tcpdump",
    "-i",
    "lo",
    "-n",
    "-q",
    "-B",
    "65536",
    "--immediate-mode",
    "-w",
    "/dev/null",
)


class PacketCounter:
    """tcpdump on the loopback interface counting UDP datagrams to and from a port range.

    The count is taken in a separate pass (never during the timed repetitions), so the
    capture's own CPU does not disturb the timings.
    """

    def __init__(self, first_port: int, last_port: int) -> None:
        self.filter = f"udp and portrange {first_port}-{last_port}"
        self.proc: subprocess.Popen[str] | None = None
        self.packets: int | None = None
        self.dropped: int | None = None

    def __enter__(self) -> PacketCounter:
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [*TCPDUMP_ARGV, self.filter],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
            text=True,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until the capture is really running
            self.err.seek(0)
            if "listening on" in self.err.read():
                break
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        time.sleep(0.2)  # let the last datagrams reach the capture
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.seek(0)
        for line in self.err.read().splitlines():
            words = line.split()
            if line.endswith("packets captured"):
                self.packets = int(words[0])
            elif line.endswith("dropped by kernel"):
                self.dropped = int(words[0])
        self.err.close()


def tcpdump_usable() -> bool:
    from shutil import which

    return which("tcpdump") is not None and os.geteuid() == 0


@contextlib.contextmanager
def secret_file(text: str) -> Iterator[str]:
    """A 0600 temporary file holding ``text`` (removed afterwards)."""
    fd, path = tempfile.mkstemp(prefix="bench-secret-")
    try:
        os.write(fd, text.encode())
        os.close(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def end_process(proc: subprocess.Popen[Any], *, grace: float, close_stdin: bool = False) -> None:
    """Ask a child to exit (by closing its stdin, else SIGTERM), killed after ``grace`` s."""
    if proc.poll() is not None:
        return
    if close_stdin and proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
