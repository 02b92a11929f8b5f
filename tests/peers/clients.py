"""Independent IPMI clients as test peers: ipmitool, FreeIPMI's ipmipower, pyghmi's client.

Each runner takes the same words -- host, port, username, password, cipher suite, op -- and
returns a :class:`ClientResult` with the exit status, the output and the power state it
reported. Every command exists in two forms: ``.run()`` blocks (for tests whose BMC is
another process) and ``await .arun()`` runs it through trio (for tests whose BMC lives in the
same trio process, which must keep serving while the client runs).

Passwords never go on a command line: ipmitool reads ``IPMI_PASSWORD`` (``-E``), ipmipower a
0600 config file, the pyghmi client an environment variable.

Ops: "status", "on", "off", "cycle", "reset", "soft".
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

OPS = ("status", "on", "off", "cycle", "reset", "soft")

_IPMITOOL_PRIVILEGE = {"user": "USER", "operator": "OPERATOR", "administrator": "ADMINISTRATOR"}
_IPMIPOWER_OPS = {
    "status": "--stat",
    "on": "--on",
    "off": "--off",
    "cycle": "--cycle",
    "reset": "--reset",
    "soft": "--soft",
}


def find_program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        raise FileNotFoundError(f"{name} is not installed")
    return path


@attrs.frozen
class ClientResult:
    client: str
    op: str
    returncode: int
    stdout: str
    stderr: str = attrs.field(repr=False)

    @property
    def ok(self) -> bool:
        if self.returncode != 0:
            return False
        if self.op == "status":
            return self.power is not None
        # ipmipower exits 0 even when a host failed; it prints "host: ok" on success.
        return self.client != "ipmipower" or bool(re.search(r":\s*ok\s*$", self.stdout, re.M))

    @property
    def power(self) -> bool | None:
        """The power state the client printed (status only): True on, False off, None unknown."""
        if self.op != "status":
            return None
        text = self.stdout.lower()
        match = re.search(r"chassis power is (on|off)", text) or re.search(
            r":\s*(on|off)\s*$", text, re.MULTILINE
        )
        if match is None:
            return None
        return match.group(1) == "on"

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@attrs.frozen
class ClientCommand:
    """A prepared client run; ``files`` are written (0600) into a temporary directory first."""

    client: str
    op: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    files: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    timeout: float = 60.0

    def _prepare(self, tmp: str) -> tuple[list[str], dict[str, str]]:
        for name, content in self.files.items():
            fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
        argv = [arg.replace("{tmp}", tmp) for arg in self.argv]
        env = {**os.environ, **self.env}
        env.pop("CI", None)  # irrelevant to the clients; keeps their behaviour stable
        return argv, env

    def _result(self, returncode: int, stdout: bytes, stderr: bytes) -> ClientResult:
        return ClientResult(
            client=self.client,
            op=self.op,
            returncode=returncode,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
        )

    def run(self) -> ClientResult:
        with tempfile.TemporaryDirectory(prefix="peer-client-") as tmp:
            argv, env = self._prepare(tmp)
            completed = subprocess.run(
                argv, env=env, capture_output=True, timeout=self.timeout, check=False
            )
        return self._result(completed.returncode, completed.stdout, completed.stderr)

    async def arun(self) -> ClientResult:
        import trio

        with tempfile.TemporaryDirectory(prefix="peer-client-") as tmp:
            argv, env = self._prepare(tmp)
            with trio.fail_after(self.timeout):
                completed = await trio.run_process(
                    argv, env=env, capture_stdout=True, capture_stderr=True, check=False
                )
        return self._result(completed.returncode, completed.stdout, completed.stderr)


def _check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, not {op!r}")


def ipmitool(
    host: str,
    port: int,
    *,
    username: str,
    password: str,
    cipher_suite: int = 3,
    op: str = "status",
    privilege: str = "administrator",
    retries: int | None = None,
    timeout: float = 60.0,
) -> ClientCommand:
    """``ipmitool -I lanplus ... power OP``; always pass a cipher suite (see ipmi-lab pitfall 1)."""
    _check_op(op)
    argv = [
        find_program("ipmitool"),
        "-I",
        "lanplus",
        "-H",
        host,
        "-p",
        str(port),
        "-U",
        username,
        "-E",
        "-C",
        str(cipher_suite),
        "-L",
        _IPMITOOL_PRIVILEGE[privilege],
    ]
    if retries is not None:
        argv += ["-R", str(retries)]
    argv += ["power", op]
    return ClientCommand(
        client="ipmitool",
        op=op,
        argv=tuple(argv),
        env={"IPMI_PASSWORD": password},
        timeout=timeout,
    )


def ipmipower(
    host: str,
    port: int,
    *,
    username: str,
    password: str,
    cipher_suite: int = 3,
    op: str = "status",
    privilege: str = "administrator",
    opensesspriv: bool = True,
    timeout: float = 60.0,
    extra: Sequence[str] = (),
) -> ClientCommand:
    """FreeIPMI ``ipmipower -D LAN_2_0``; ``opensesspriv`` works around ipmi_sim's Open Session
    Response (see ipmi-lab.md), and is harmless elsewhere."""
    _check_op(op)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    argv = [
        find_program("ipmipower"),
        "-D",
        "LAN_2_0",
        "--config-file={tmp}/freeipmi.conf",
        "-h",
        target,
        "-I",
        str(cipher_suite),
        "-l",
        privilege.upper(),
    ]
    if opensesspriv:
        argv += ["-W", "opensesspriv"]
    argv += [*extra, _IPMIPOWER_OPS[op]]
    return ClientCommand(
        client="ipmipower",
        op=op,
        argv=tuple(argv),
        files={"freeipmi.conf": f"username {username}\npassword {password}\n"},
        timeout=timeout,
    )


def ipmipower_fleet(
    targets: Sequence[tuple[str, int]],
    *,
    username: str,
    password: str,
    cipher_suite: int = 3,
    op: str = "status",
    opensesspriv: bool = True,
    timeout: float = 120.0,
) -> ClientCommand:
    """One ipmipower process for many BMCs (``-h a:p1,a:p2,...``), as in the lab benchmarks."""
    _check_op(op)
    hosts = ",".join(f"{host}:{port}" for host, port in targets)
    argv = [
        find_program("ipmipower"),
        "-D",
        "LAN_2_0",
        "--config-file={tmp}/freeipmi.conf",
        "-h",
        hosts,
        "-I",
        str(cipher_suite),
        "-l",
        "ADMINISTRATOR",
    ]
    if opensesspriv:
        argv += ["-W", "opensesspriv"]
    argv.append(_IPMIPOWER_OPS[op])
    return ClientCommand(
        client="ipmipower",
        op=op,
        argv=tuple(argv),
        files={"freeipmi.conf": f"username {username}\npassword {password}\n"},
        timeout=timeout,
    )


# The pyghmi client runs in its own interpreter: it keeps process-wide state (one shared
# socket, threads) that must not leak into the test process.
_PYGHMI_CLIENT = r"""
import os, sys
from pyghmi.ipmi import command
host, port, username, op = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ipmi = command.Command(bmc=host, port=port, userid=username,
                       password=os.environ["PEER_BMC_PASSWORD"])
try:
    if op == "status":
        print("Chassis Power is " + ipmi.get_power()["powerstate"])
    else:
        word = {"soft": "shutdown", "cycle": "boot"}.get(op, op)
        ipmi.set_power(word, wait=False)
        print("Chassis Power Control: " + op)
finally:
    ipmi.ipmi_session.logout()
"""


def pyghmi_client(
    host: str,
    port: int,
    *,
    username: str,
    password: str,
    op: str = "status",
    timeout: float = 60.0,
) -> ClientCommand:
    """pyghmi's ``Command`` (it proposes suite 17 first and falls back to 3 on rejection)."""
    _check_op(op)
    return ClientCommand(
        client="pyghmi",
        op=op,
        argv=(sys.executable, "-c", _PYGHMI_CLIENT, host, str(port), username, op),
        env={"PEER_BMC_PASSWORD": password},
        timeout=timeout,
    )


def build_get_channel_auth_capabilities(sequence: int = 0) -> bytes:
    """A sessionless IPMI 1.5 Get Channel Authentication Capabilities request, built by hand
    from the spec (independent of ``ipmi.proto``): channel 0x0E (this one) with the IPMI 2.0
    extended-data bit, requested privilege administrator."""

    def checksum(data: bytes) -> int:
        return (-sum(data)) & 0xFF

    header = bytes([0x20, 0x06 << 2])  # rsAddr BMC, netFn App / LUN 0
    body = bytes([0x81, (sequence & 0x3F) << 2, 0x38, 0x8E, 0x04])
    message = header + bytes([checksum(header)]) + body + bytes([checksum(body)])
    rmcp = bytes([0x06, 0x00, 0xFF, 0x07])
    session = bytes([0x00]) + bytes(4) + bytes(4) + bytes([len(message)])
    return rmcp + session + message


def probe_auth_capabilities(host: str, port: int, *, timeout: float = 0.5) -> bytes | None:
    """The raw reply of a BMC to Get Channel Auth Capabilities, or None if it stays silent."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            sock.send(build_get_channel_auth_capabilities())
            return sock.recv(512)
        except OSError:  # timeout, or ICMP port unreachable while the BMC starts
            return None


def run_all(commands: Sequence[ClientCommand]) -> list[ClientResult]:
    """Run prepared commands one after the other (blocking)."""
    return [command.run() for command in commands]


def describe(result: ClientResult) -> dict[str, Any]:
    """A compact dict for assertion messages (no password is ever part of a result)."""
    return {
        "client": result.client,
        "op": result.op,
        "rc": result.returncode,
        "out": result.stdout.strip()[-300:],
        "err": result.stderr.strip()[-300:],
    }
