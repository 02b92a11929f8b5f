"""OpenIPMI's ``ipmi_sim`` as a real BMC for tests: one process per BMC on loopback.

Each BMC gets its own directory holding a generated ``lan.conf``, ipmi_sim's persistence
directory, and the chassis power state file ``power`` ("0"/"1") that ipmi_sim reads and
writes through ``ipmi_sim_chassis.sh`` on every Get Chassis Status / Chassis Control. Tests
read and flip the power state out of band through that file, and see what the BMC was asked
to do in ``power.log``.

Facts this relies on (ipmi_sim from openipmi 2.0.33):
- it speaks RMCP+ cipher suites 0-14 but nothing with SHA-256 (no suite 17);
- it needs ``-n`` when it has no console, and always an explicit ``-c`` config;
- a power cycle is "set power 0" now and "set power 1" about a second later;
- ``-s`` keeps persisted users, so every instance gets a fresh directory.

Usage::

    with ipmi_sim_fleet(2, directory=tmp_path, password="secret") as bmcs:
        bmcs[0].host, bmcs[0].port, bmcs[0].power_on, bmcs[0].set_power(True)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.conftest import free_udp_ports
from tests.peers.clients import probe_auth_capabilities

HERE = Path(__file__).resolve().parent
CHASSIS_SCRIPT = HERE / "ipmi_sim_chassis.sh"
EMU_FILE = HERE / "ipmi_sim.emu"

# ipmi_lan(5) privilege names for the ``user`` lines.
_PRIVILEGES = {"user": "user", "operator": "operator", "administrator": "admin", "admin": "admin"}


def ipmi_sim_binary() -> str | None:
    return shutil.which("ipmi_sim") or shutil.which("ipmi_sim", path="/usr/sbin:/usr/bin")


def _quoted(text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError("ipmi_sim config strings cannot hold quotes, backslashes or newlines")
    return f'"{text}"'


def render_lan_conf(
    *,
    name: str,
    host: str,
    port: int,
    power_file: Path,
    users: Mapping[str, tuple[str, str]],
) -> str:
    """An ipmi_lan(5) config for one BMC; ``users`` maps name -> (password, privilege)."""
    lines = [
        f"name {_quoted(name)}",
        "set_working_mc 0x20",
        "  startlan 1",
        f"    addr {host} {port}",
        "    priv_limit admin",
        # IPMI 1.5 auth types; RMCP+ clients only look at the IPMI 2.0 bit.
        "    allowed_auths_callback md5",
        "    allowed_auths_user md5",
        "    allowed_auths_operator md5",
        "    allowed_auths_admin md5",
        # RMCP+ RAKP messages carry the BMC GUID; ipmi_sim needs one configured.
        "    guid 0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "  endlan",
        f"  chassis_control {_quoted(f'/bin/sh {CHASSIS_SCRIPT} {power_file}')}",
        # User 1 is the anonymous (null) user: disabled.
        '  user 1 false "" "" user 1',
    ]
    for number, (username, (password, privilege)) in enumerate(users.items(), start=2):
        lines.append(
            f"  user {number} true {_quoted(username)} {_quoted(password)} "
            f"{_PRIVILEGES[privilege]} 10 md5"
        )
    return "\n".join(lines) + "\n"


class IpmiSimBmc:
    """One running ipmi_sim process and the files that hold its chassis state."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        directory: Path,
        username: str,
        password: str,
        users: Mapping[str, tuple[str, str]],
    ) -> None:
        self.host = host
        self.port = port
        self.directory = directory
        self.username = username
        self.password = password
        self.users = dict(users)
        self.power_file = directory / "power"
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:  # never the password
        return f"IpmiSimBmc({self.host}:{self.port})"

    @property
    def address(self) -> str:
        return self.host

    @property
    def power_on(self) -> bool:
        return self.power_file.read_text().strip() == "1"

    def set_power(self, on: bool) -> None:
        """Change the chassis power out of band (as if someone pressed the button)."""
        temporary = self.power_file.with_suffix(".oob")
        temporary.write_text("1\n" if on else "0\n")
        temporary.replace(self.power_file)

    def calls(self) -> list[str]:
        """What ipmi_sim asked the chassis program, oldest first ("get power", "set power 1")."""
        log = self.power_file.with_name("power.log")
        if not log.exists():
            return []
        return [line.strip() for line in log.read_text().splitlines() if line.strip()]

    def clear_calls(self) -> None:
        self.power_file.with_name("power.log").unlink(missing_ok=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        binary = ipmi_sim_binary()
        if binary is None:
            raise RuntimeError("ipmi_sim not installed (apt-get install openipmi)")
        conf = self.directory / "lan.conf"
        conf.write_text(
            render_lan_conf(
                name=f"bmc-{self.port}",
                host=self.host,
                port=self.port,
                power_file=self.power_file,
                users=self.users,
            )
        )
        conf.chmod(0o600)
        state = self.directory / "state"
        shutil.rmtree(state, ignore_errors=True)  # persisted users would override lan.conf
        state.mkdir()
        with open(self.directory / "stderr.log", "ab") as stderr:
            return subprocess.Popen(
                [binary, "-n", "-c", str(conf), "-f", str(EMU_FILE), "-s", str(state)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def start(self) -> None:
        self.process = self._spawn()

    def wait_ready(self, *, deadline: float) -> bool:
        """True once the BMC answers Get Channel Auth Capabilities; False if it died/timed out."""
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if probe_auth_capabilities(self.host, self.port, timeout=0.2) is not None:
                return True
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def restart(self, *, ready_within: float = 10.0) -> None:
        """Stop and start again on the same port: a BMC reboot that forgets every session."""
        self.stop()
        self.start()
        if not self.wait_ready(deadline=time.monotonic() + ready_within):
            raise RuntimeError(f"ipmi_sim {self.host}:{self.port} did not come back")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextlib.contextmanager
def ipmi_sim_fleet(
    count: int,
    *,
    directory: Path,
    username: str = "admin",
    password: str,
    host: str = "127.0.0.1",
    power_on: bool = False,
    extra_users: Mapping[str, tuple[str, str]] | None = None,
    ready_within: float = 15.0,
) -> Iterator[list[IpmiSimBmc]]:
    """Start ``count`` ipmi_sim BMCs on free UDP ports of ``host``; always stopped on exit.

    ``extra_users`` adds users as name -> (password, privilege), e.g.
    ``{"watcher": ("pw", "user")}``; ``username`` is an administrator.
    """
    if not host.startswith("127."):
        raise ValueError("peer BMCs listen on loopback only")
    users = {username: (password, "administrator"), **(extra_users or {})}
    bmcs: list[IpmiSimBmc] = []
    try:
        pending = count
        for _attempt in range(3):  # a free port can be taken by someone else before we bind
            ports = free_udp_ports(pending, host)
            started = []
            for port in ports:
                bmc_dir = directory / f"ipmi_sim-{port}"
                bmc_dir.mkdir(parents=True, exist_ok=True)
                bmc = IpmiSimBmc(
                    host=host,
                    port=port,
                    directory=bmc_dir,
                    username=username,
                    password=password,
                    users=users,
                )
                bmc.set_power(power_on)
                bmc.start()
                started.append(bmc)
            deadline = time.monotonic() + ready_within
            for bmc in started:
                if bmc.wait_ready(deadline=deadline):
                    bmcs.append(bmc)
                else:
                    bmc.stop()
            pending = count - len(bmcs)
            if pending == 0:
                break
        if pending:
            logs = " | ".join(
                (directory / f"ipmi_sim-{port}" / "stderr.log").read_text()[-300:]
                for port in ports
                if (directory / f"ipmi_sim-{port}" / "stderr.log").exists()
            )
            raise RuntimeError(f"{pending} of {count} ipmi_sim BMCs did not start: {logs}")
        bmcs.sort(key=lambda bmc: bmc.port)
        yield bmcs
    finally:
        for bmc in bmcs:
            bmc.stop()


def _main() -> None:  # manual use: python -m tests.peers.ipmi_sim 3
    import sys
    import tempfile

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    with (
        tempfile.TemporaryDirectory() as tmp,
        ipmi_sim_fleet(
            count, directory=Path(tmp), password=os.environ.get("BMC_PASSWORD", "password")
        ) as bmcs,
    ):
        for bmc in bmcs:
            print(f"{bmc.host}:{bmc.port} pid {bmc.pid} power {'on' if bmc.power_on else 'off'}")
        print("Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    _main()
