"""Fixtures for real Redfish peers: OpenStack's sushy-tools emulator (a server for our
client) and the sushy client library (a client of our simulator)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from redfish.sim import TlsFiles, make_tls_files
from tests.conftest import in_ci

STARTUP_LIMIT = 20.0  # seconds for the emulator to answer its first request


def require_sushy_emulator() -> str:
    path = shutil.which("sushy-emulator") or str(Path(sys.executable).parent / "sushy-emulator")
    if not os.access(path, os.X_OK):
        message = "sushy-emulator not installed (pip install -e '.[test]')"
        if in_ci():
            pytest.fail(message + " -- CI must never skip peer tests")
        pytest.skip(message)
    return path


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class Emulator:
    url: str
    tls: TlsFiles
    username: str
    password: str
    off_system: str  # path of a system that starts Off
    on_system: str  # path of a system that starts On
    log: Path


def _wait_until_serving(port: int, ca_file: str, process: subprocess.Popen[bytes]) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + STARTUP_LIMIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sushy-emulator exited with status {process.returncode}")
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sushy-emulator did not listen on port {port} in {STARTUP_LIMIT} s")


@contextlib.contextmanager
def run_sushy_emulator(directory: Path) -> Iterator[Emulator]:
    """sushy-emulator --fake over HTTPS on a free loopback port, basic auth (bcrypt)."""
    import bcrypt

    program = require_sushy_emulator()
    tls = make_tls_files(directory)
    password = "emulator-password-3"
    htpasswd = directory / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"admin:{hashed}\n")
    htpasswd.chmod(0o600)
    off_id, on_id = str(uuid.uuid4()), str(uuid.uuid4())
    systems = [
        {"uuid": off_id, "name": "peer-off", "power_state": "Off", "external_notifier": False,
         "nics": [{"mac": "00:5c:52:31:3a:9c", "ip": "127.0.0.2"}]},
        {"uuid": on_id, "name": "peer-on", "power_state": "On", "external_notifier": False,
         "nics": [{"mac": "00:5c:52:31:3a:9d", "ip": "127.0.0.3"}]},
    ]  # fmt: skip
    state = directory / "state"
    state.mkdir()
    config = directory / "emulator.conf"
    config.write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(state)!r}\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
    )
    port = free_tcp_port()
    log = directory / "emulator.log"
    env = {key: value for key, value in os.environ.items() if not key.endswith("_proxy")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [program, "--fake", "--config", str(config), "-p", str(port),
             "--ssl-certificate", tls.cert_file, "--ssl-key", tls.key_file],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    try:
        _wait_until_serving(port, tls.ca_file, process)
        yield Emulator(
            url=f"https://127.0.0.1:{port}",
            tls=tls,
            username="admin",
            password=password,
            off_system=f"/redfish/v1/Systems/{off_id}",
            on_system=f"/redfish/v1/Systems/{on_id}",
            log=log,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
