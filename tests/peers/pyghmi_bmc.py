"""pyghmi's BMC class (``pyghmi.ipmi.bmc.Bmc``) as a real IPMI 2.0 server for tests.

The server runs in its own interpreter (pyghmi keeps process-wide state and threads): the
test process starts ``python tests/peers/pyghmi_bmc.py`` with the ports to serve and waits
for its "ready" line. Each BMC keeps its chassis power in ``<directory>/<port>.power``
("0"/"1") so tests can read and flip it out of band, and appends what it was asked to do to
``<port>.log``. The password reaches the server through an environment variable.

pyghmi 1.6's server speaks RMCP+ cipher suite 3 only, and ships with faults that this
fixture works around, each in a small function of its own below:
- it answers every Open Session Request with suite-3 algorithms and status 0, whatever the
  client proposed. A real BMC rejects what it does not support (RMCP+ status 0x11), and
  by default so does this fixture; ``accept_any_cipher=True`` keeps the shipped behaviour,
  which is what a client must survive (it has to check the algorithms in the answer);
- Close Session never forgets the session;
- sending flips its socket to blocking mode under its own receive thread (server stalls);
- a session-less packet from a client address with a session forgets that address's
  sessions with every BMC of the process;
- its event loop can miss a wake-up, so it is driven with a short poll interval.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PASSWORD_VARIABLE = "PEER_BMC_PASSWORD"


class PyghmiBmc:
    """One BMC served by a :class:`PyghmiFleet` process."""

    def __init__(self, fleet: PyghmiFleet, host: str, port: int) -> None:
        self.fleet = fleet
        self.host = host
        self.port = port
        self.power_file = fleet.directory / f"{port}.power"
        self.log_file = fleet.directory / f"{port}.log"

    def __repr__(self) -> str:
        return f"PyghmiBmc({self.host}:{self.port})"

    @property
    def address(self) -> str:
        return self.host

    @property
    def username(self) -> str:
        return self.fleet.username

    @property
    def password(self) -> str:
        return self.fleet.password

    @property
    def power_on(self) -> bool:
        return self.power_file.read_text().strip() == "1"

    def set_power(self, on: bool) -> None:
        temporary = self.power_file.with_suffix(".oob")
        temporary.write_text("1\n" if on else "0\n")
        temporary.replace(self.power_file)

    def calls(self) -> list[str]:
        if not self.log_file.exists():
            return []
        return [line.strip() for line in self.log_file.read_text().splitlines() if line.strip()]

    def restart(self) -> None:
        """Restart the serving process (every BMC of the fleet): all sessions are forgotten."""
        self.fleet.restart()


class PyghmiFleet:
    def __init__(
        self,
        *,
        directory: Path,
        host: str,
        username: str,
        password: str,
        accept_any_cipher: bool,
    ) -> None:
        self.directory = directory
        self.host = host
        self.username = username
        self.password = password
        self.accept_any_cipher = accept_any_cipher
        self.bmcs: list[PyghmiBmc] = []
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self, ports: list[int], ready_within: float) -> bool:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--address",
            self.host,
            "--ports",
            ",".join(map(str, ports)),
            "--directory",
            str(self.directory),
            "--user",
            self.username,
        ]
        if self.accept_any_cipher:
            argv.append("--accept-any-cipher")
        stderr = open(self.directory / "server.stderr", "ab")  # noqa: SIM115 - child keeps it
        try:
            process = subprocess.Popen(
                argv,
                env={**os.environ, PASSWORD_VARIABLE: self.password},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stderr.close()
        self.process = process
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], ready_within)
        line = process.stdout.readline() if ready else b""
        if line.startswith(b"ready"):
            return True
        self.stop()
        return False

    def start(self, count: int, *, power_on: bool, ready_within: float = 20.0) -> None:
        # Imported here: the server half of this file runs as a script without the project.
        from tests.conftest import free_udp_ports

        for _attempt in range(3):  # a free port can be taken by someone else before we bind
            ports = free_udp_ports(count, self.host)
            for port in ports:
                power = self.directory / f"{port}.power"
                power.write_text("1\n" if power_on else "0\n")
            if self._spawn(ports, ready_within):
                self.bmcs = [PyghmiBmc(self, self.host, port) for port in ports]
                return
        tail = (self.directory / "server.stderr").read_text()[-500:]
        raise RuntimeError(f"pyghmi BMC server did not start: {tail}")

    def restart(self, *, ready_within: float = 20.0) -> None:
        self.stop()
        if not self._spawn([bmc.port for bmc in self.bmcs], ready_within):
            raise RuntimeError("pyghmi BMC server did not come back on its ports")

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
        if process.stdout is not None:
            process.stdout.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextlib.contextmanager
def pyghmi_bmc_fleet(
    count: int,
    *,
    directory: Path,
    username: str = "admin",
    password: str,
    host: str = "127.0.0.1",
    power_on: bool = False,
    accept_any_cipher: bool = False,
) -> Iterator[PyghmiFleet]:
    """``count`` pyghmi BMCs in one server process on free UDP ports; always stopped on exit."""
    if not host.startswith("127."):
        raise ValueError("peer BMCs listen on loopback only")
    directory.mkdir(parents=True, exist_ok=True)
    fleet = PyghmiFleet(
        directory=directory,
        host=host,
        username=username,
        password=password,
        accept_any_cipher=accept_any_cipher,
    )
    try:
        fleet.start(count, power_on=power_on)
        yield fleet
    finally:
        fleet.stop()


# --------------------------------------------------------------------------------------
# The server process. Everything below runs only in the child interpreter.
# --------------------------------------------------------------------------------------


def _workarounds(accept_any_cipher: bool) -> None:
    """Patch the shipped pyghmi server in this (child) process; see the module docstring."""
    import pyghmi.ipmi.private.serversession as serversession
    import pyghmi.ipmi.private.session as session_module

    Session = session_module.Session
    ServerSession = serversession.ServerSession
    shipped_open_response = ServerSession.create_open_session_response
    shipped_handle_packet = ServerSession._handle_ipmi_packet

    def forget(server_session: Any, client: Any) -> None:
        per_port = Session.bmc_handlers.get(client)
        if per_port is not None and per_port.get(server_session.bmc.port) is server_session:
            del per_port[server_session.bmc.port]
            if not per_port:
                del Session.bmc_handlers[client]

    def open_session_response(self: Any, request: Any) -> Any:
        # Suite 3 is RAKP-HMAC-SHA1 (1), HMAC-SHA1-96 (1), AES-CBC-128 (1). The algorithm
        # bytes sit at offsets 12, 20 and 28; a zero payload length means "BMC's choice".
        request = bytearray(request)
        proposed = {
            (length, algorithm): request[length] == 0 or (request[algorithm] & 0x3F) == 1
            for length, algorithm in ((11, 12), (19, 20), (27, 28))
        }
        if all(proposed.values()):
            return shipped_open_response(self, request)
        self.clientsessionid = request[4:8]
        return bytearray([request[0], 0x11, 0, 0]) + self.clientsessionid

    def handle_packet(self: Any, data: Any, sockaddr: Any = None, qent: Any = None) -> Any:
        # A session-less IPMI 1.5 packet (session id 0, sequence 0) from an address that
        # has a session here: forget only that session, then let the BMC answer it.
        if (
            qent is not None
            and len(data) >= 13
            and data[4] in (0, 2)
            and bytes(data[5:13]) == bytes(8)
            and qent[2] in Session.bmc_handlers
        ):
            forget(self, sockaddr)
            server = Session.bmc_handlers[qent[2]][0]
            server.pktqueue.append(qent)
            server.process_pktqueue()
            return None
        return shipped_handle_packet(self, data, sockaddr, qent)

    def close_server_session(self: Any) -> None:
        forget(self, self.sockaddr)

    def send_datagram(sock: Any, packet: Any, sockaddr: Any) -> None:
        # Never change the socket's blocking mode: the receive thread shares the socket.
        sock = getattr(sock, "fd", sock)
        for _ in range(3):
            try:
                sock.sendto(packet, sockaddr)
                return
            except BlockingIOError:
                select.select((), (sock,), (), 0.1)
            except OSError:
                return

    session_module._io_sendto = send_datagram
    ServerSession._handle_ipmi_packet = handle_packet
    ServerSession.close_server_session = close_server_session
    ServerSession.sessionless_data = lambda self, data, sockaddr: self.bmc.sessionless_data(
        data, sockaddr
    )
    if not accept_any_cipher:
        ServerSession.create_open_session_response = open_session_response


def _serve(argv: list[str]) -> None:
    import argparse
    import traceback
    import uuid

    import pyghmi.ipmi.bmc as bmc_module
    import pyghmi.ipmi.private.session as session_module

    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--ports", required=True)
    parser.add_argument("--directory", required=True)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--accept-any-cipher", action="store_true")
    parser.add_argument("--poll", type=float, default=0.02)
    args = parser.parse_args(argv)
    if not args.address.startswith("127."):
        sys.exit("loopback addresses only")
    password = os.environ.pop(PASSWORD_VARIABLE)
    directory = Path(args.directory)
    _workarounds(args.accept_any_cipher)

    class FileBackedBmc(bmc_module.Bmc):  # type: ignore[misc]
        """Chassis power lives in a file; every action is logged next to it."""

        def __init__(self, port: int) -> None:
            super().__init__(
                {args.user: password},
                port=port,
                address=args.address,
                bmcuuid=uuid.uuid5(uuid.NAMESPACE_URL, f"powersync-test-bmc-{port}"),
            )
            self.power_file = directory / f"{port}.power"
            self.log_file = directory / f"{port}.log"

        def _log(self, what: str) -> None:
            with open(self.log_file, "a") as log:
                log.write(what + "\n")

        def _write_power(self, on: bool) -> None:
            temporary = self.power_file.with_suffix(".tmp")
            temporary.write_text("1\n" if on else "0\n")
            temporary.replace(self.power_file)

        def get_power_state(self) -> str:
            self._log("get power")
            return "on" if self.power_file.read_text().strip() == "1" else "off"

        def power_on(self) -> None:
            self._log("set power 1")
            self._write_power(True)

        def power_off(self) -> None:
            self._log("set power 0")
            self._write_power(False)

        def power_shutdown(self) -> None:
            self._log("set shutdown 1")
            self._write_power(False)

        def power_cycle(self) -> None:
            self._log("set power 0")
            self._log("set power 1")
            self._write_power(True)

        def power_reset(self) -> int:
            self._log("set reset 1")
            if self.get_power_state() != "on":
                return 0xD5  # "cannot execute command in present state"
            return 0

        def pulse_diag(self) -> int:
            return 0

        def get_system_guid(self) -> Any:
            return self.uuid

        def cold_reset(self) -> int:
            return 0

        def is_active(self) -> bool:
            return self.get_power_state() == "on"

    try:
        bmcs = [FileBackedBmc(int(port)) for port in args.ports.split(",")]
    except OSError as exc:
        sys.exit(f"cannot bind: {exc}")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"ready {len(bmcs)}", flush=True)
    while True:
        try:
            session_module.Session.wait_for_rsp(args.poll)
        except Exception:  # keep serving, as a BMC would
            traceback.print_exc()
            time.sleep(args.poll)


if __name__ == "__main__":
    _serve(sys.argv[1:])
