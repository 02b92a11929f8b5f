"""Redfish fleets for the benchmark: the powersync Redfish simulator and sushy-emulator.

Both run in processes of their own (their CPU is read from /proc, never mixed with a
contender's), serve HTTPS on 127.0.0.1 with a CA of their own, and keep the known power
pattern of :func:`bench.fleets.expected_power`, so every answer is checked node by node.

- ``redfish_sim``: ``redfish.sim`` (bench.redfish_sim_host), one service per port; its
  control socket counts the requests, logins and TLS handshakes the BMCs saw.
- ``sushy_emulator``: OpenStack's sushy-tools emulator (``--fake``, basic auth from a
  bcrypt htpasswd, the way tests/redfish/peers.py starts it): one service on one port with
  several fake systems; a node is one system. It keeps no counters.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.fleets import HOST, PASSWORD, USERNAME, Endpoint, HostedFleet, expected_power
from bench.procs import free_port_block
from redfish.sim import make_tls_files, send_control

# what the simulator's control socket counts that the report uses
SERVER_FIELDS = ("requests", "logins", "logouts", "tls_handshakes", "connections")
STARTUP_LIMIT = 120.0  # seconds: 1,000 listening sockets, or the emulator's first answer


def control_counters(control: str | None) -> dict[str, int] | None:
    """Requests, logins, TLS handshakes the simulator's BMCs saw so far (None: no socket)."""
    if control is None:
        return None
    statistics = send_control(control, {"op": "status"})["statistics"]
    return {name: int(statistics[name]) for name in SERVER_FIELDS}


class RedfishFleet(HostedFleet):
    """What Redfish contenders need on top of :class:`Fleet`: a URL and a system per node,
    the CA to trust, and (where the server keeps them) its counters."""

    cipher_suite = 0  # not IPMI
    control: str | None = None  # the simulator's control socket

    def __init__(self, count: int) -> None:
        self.count = count  # nodes (BMCs, or systems of one emulator)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.kind.replace('_', '-')}-"))
        self.port_base = 0
        self.endpoints = []
        self.urls: list[str] = []
        self.systems: list[str] = []
        self.ca_file = ""

    def counters(self) -> dict[str, int] | None:
        """Requests, logins, TLS handshakes the servers saw so far (None: not counted)."""
        return control_counters(self.control)

    def set_dead(self, indices: Any) -> None:
        raise NotImplementedError("Redfish fleets run clean only")

    def set_impairment(self, *, delay_ms: float, loss: float) -> None:
        raise NotImplementedError("Redfish fleets run clean only")

    def clear_faults(self) -> None:
        return None


class RedfishSimFleet(RedfishFleet):
    """``count`` simulated Redfish services (``redfish.sim``) in a child process."""

    kind = "redfish_sim"
    stop_grace = 15.0

    def start(self) -> None:
        assert self.workdir is not None
        self.port_base = free_port_block(self.count)
        self.spawn_host(
            "bench.redfish_sim_host",
            *("--count", str(self.count), "--host", HOST, "--port-base", str(self.port_base)),
            *("--username", USERNAME, "--workdir", str(self.workdir)),
        )
        ready = self.read_reply("the Redfish simulator")
        self.ca_file = ready["ca_file"]
        self.control = str(self.workdir / "control.sock")
        self.endpoints = [
            Endpoint(f"rfsim-{i:05d}", HOST, self.port_base + i) for i in range(self.count)
        ]
        self.urls = [f"https://{HOST}:{ep.port}" for ep in self.endpoints]
        self.systems = [ready["system"]] * self.count

    def reset_power(self) -> None:
        assert self.control is not None
        on = [i for i in range(self.count) if expected_power(i)]
        off = [i for i in range(self.count) if not expected_power(i)]
        for selection, power in ((on, True), (off, False)):
            if selection:
                send_control(self.control, {"op": "power", "bmcs": selection, "on": power})

    def powers(self) -> list[bool]:
        assert self.control is not None
        listing = send_control(self.control, {"op": "list"}, timeout=60)
        return [bool(row["power_on"]) for row in listing["bmcs"]]


class SushyEmulatorFleet(RedfishFleet):
    """sushy-emulator ``--fake`` with ``count`` fake systems behind one HTTPS port."""

    kind = "sushy_emulator"
    stop_grace = 5.0
    stop_by_stdin = False  # it serves until SIGTERM

    def start(self) -> None:
        import bcrypt

        assert self.workdir is not None
        program = shutil.which("sushy-emulator") or str(
            Path(sys.executable).parent / "sushy-emulator"
        )
        tls = make_tls_files(self.workdir, hosts=(HOST,))
        htpasswd = self.workdir / "htpasswd"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{USERNAME}:{hashed}\n")
        htpasswd.chmod(0o600)
        ids = [str(uuid.UUID(int=index + 1)) for index in range(self.count)]
        systems = [
            {
                "uuid": ids[index],
                "name": f"bench-{index:03d}",
                "power_state": "On" if expected_power(index) else "Off",
                "external_notifier": False,
                "nics": [{"mac": f"00:5c:52:31:{index >> 8:02x}:{index & 255:02x}", "ip": HOST}],
            }
            for index in range(self.count)
        ]
        state = self.workdir / "state"
        state.mkdir()
        config = self.workdir / "emulator.conf"
        config.write_text(
            f"SUSHY_EMULATOR_LISTEN_IP = {HOST!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(state)!r}\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
        )
        self.port_base = free_port_block(1)
        env = {key: value for key, value in os.environ.items() if not key.endswith("_proxy")}
        with (self.workdir / "emulator.log").open("wb") as output:
            self.proc = subprocess.Popen(
                [
                    *(program, "--fake", "--config", str(config), "-p", str(self.port_base)),
                    *("--ssl-certificate", tls.cert_file, "--ssl-key", tls.key_file),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.ca_file = tls.ca_file
        self.wait_until_serving()
        self.endpoints = [
            Endpoint(f"sushy-{i:03d}", HOST, self.port_base) for i in range(self.count)
        ]
        self.urls = [f"https://{HOST}:{self.port_base}"] * self.count
        self.systems = [f"/redfish/v1/Systems/{system_id}" for system_id in ids]

    def wait_until_serving(self) -> None:
        import socket

        assert self.proc is not None
        context = ssl.create_default_context(cafile=self.ca_file)
        deadline = time.monotonic() + STARTUP_LIMIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited with status {self.proc.returncode}")
            try:
                with (
                    socket.create_connection((HOST, self.port_base), timeout=1.0) as raw,
                    context.wrap_socket(raw, server_hostname=HOST),
                ):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sushy-emulator did not listen in {STARTUP_LIMIT} s")

    def reset_power(self) -> None:
        return None  # status passes only: the fake systems keep their configured states

    def powers(self) -> list[bool]:
        return [expected_power(i) for i in range(self.count)]
