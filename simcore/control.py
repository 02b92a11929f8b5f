"""A fleet's control interface: a Unix stream socket speaking one JSON object per line.

Each request line gets exactly one answer line: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. The socket file is created mode 0600 (only its owner
may change faults). Requests (BMC selections are 0-based indexes, "0,3,10-19" or a list):

    {"op": "status"}                                   counters + faults in force
    {"op": "faults"}                                   faults in force
    {"op": "faults", "set": {"slow": "1", "dead": "2,5-7"}}   change some faults
    {"op": "faults", "reset": true}                    clear all faults (then apply "set")
    {"op": "reboot", "bmcs": "0-3", "down_for": 5}     drop all sessions, silent 5 s
    {"op": "power", "bmcs": "0,1", "on": false}        out-of-band power change
    {"op": "list"}                                     every BMC: name, port, power, sessions

The same protocol serves every simulator (IPMI, Redfish); what a fault means and what
``list`` says about a BMC beyond the common fields are the fleet's. From a shell:
``python -m ipmi.sim /path/to/socket '{"op": "status"}'`` (or ``redfish.sim``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

import trio

from simcore.faults import SimFaults
from simcore.selection import requested_indexes

MAX_LINE = 64 * 1024
FaultsT = TypeVar("FaultsT", bound=SimFaults)


class ControlledBmc(Protocol):
    """What the control interface reads and changes on one BMC."""

    index: int
    name: str
    address: str
    port: int
    boot_count: int

    def power_at(self, now: float) -> bool: ...

    def set_power(self, on: bool) -> None: ...

    def session_count(self, now: float) -> int: ...

    def control_details(self, now: float) -> dict[str, Any]:
        """What ``list`` says about this BMC beyond the fields every BMC has."""
        ...


class ControlledFleet(Protocol[FaultsT]):
    """What the control interface controls (a fleet); it never imports one."""

    @property
    def bmcs(self) -> Sequence[ControlledBmc]: ...

    @property
    def first_index(self) -> int: ...

    @property
    def faults(self) -> FaultsT: ...

    def bmc(self, index: int) -> ControlledBmc: ...

    def set_faults(self, faults: FaultsT | None = None, /, **changes: Any) -> FaultsT: ...

    def reboot(self, indexes: Iterable[int], *, down_for: float = 0.0) -> None: ...

    def statistics(self) -> dict[str, Any]: ...


def execute(fleet: ControlledFleet[Any], request: Any) -> dict[str, Any]:
    """Run one control request against ``fleet``; never raises for a bad request."""
    try:
        return _execute(fleet, request)
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}


def _execute(fleet: ControlledFleet[Any], request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise TypeError('a request is a JSON object with an "op" key')
    op = request.get("op")
    count = len(fleet.bmcs)
    if op == "status":
        return {"ok": True, "statistics": fleet.statistics(), "faults": fleet.faults.to_json()}
    if op == "faults":
        changes = request.get("set", {})
        if not isinstance(changes, dict):
            raise ValueError('"set" must be an object of fault names and values')
        base = type(fleet.faults)() if request.get("reset") else fleet.faults
        if changes or request.get("reset"):
            fleet.set_faults(base.changed(changes))
        return {"ok": True, "faults": fleet.faults.to_json()}
    if op == "reboot":
        indexes = requested_indexes(request.get("bmcs", ""), fleet.first_index, count)
        down_for = float(request.get("down_for", 0.0))
        if not down_for >= 0:
            raise ValueError('"down_for" must be >= 0 seconds')
        fleet.reboot(indexes, down_for=down_for)
        return {"ok": True, "rebooted": len(indexes)}
    if op == "power":
        indexes = requested_indexes(request.get("bmcs", ""), fleet.first_index, count)
        on = request.get("on")
        if not isinstance(on, bool):
            raise ValueError('"on" must be true or false')
        for index in indexes:
            fleet.bmc(index).set_power(on)
        return {"ok": True, "changed": len(indexes)}
    if op == "list":
        now = trio.current_time()
        return {"ok": True, "bmcs": [_listing(bmc, now) for bmc in fleet.bmcs]}
    raise ValueError(f"unknown op {op!r} (status, faults, reboot, power, list)")


def _listing(bmc: ControlledBmc, now: float) -> dict[str, Any]:
    return {
        "index": bmc.index,
        "name": bmc.name,
        "address": bmc.address,
        "port": bmc.port,
        "power_on": bmc.power_at(now),
        "sessions": bmc.session_count(now),
        "boot_count": bmc.boot_count,
        **bmc.control_details(now),
    }


def _prepare_path(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"control socket path {path} exists and is not a socket")
    os.unlink(path)  # a stale socket from an earlier run


async def _serve_connection(fleet: ControlledFleet[Any], stream: trio.SocketStream) -> None:
    buffer = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            buffer += chunk
            if len(buffer) > MAX_LINE and b"\n" not in buffer:
                await stream.send_all(b'{"ok": false, "error": "request line too long"}\n')
                return
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                except ValueError:
                    answer: dict[str, Any] = {"ok": False, "error": "not a JSON line"}
                else:
                    answer = execute(fleet, request)
                await stream.send_all(json.dumps(answer).encode() + b"\n")


async def serve_control(
    fleet: ControlledFleet[Any],
    path: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control interface on the Unix socket ``path`` (mode 0600) until cancelled."""
    _prepare_path(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is born 0600
    try:
        await sock.bind(path)
    finally:
        os.umask(old_umask)
    try:
        sock.listen(16)
        listener = trio.SocketListener(sock)

        async def handler(stream: trio.SocketStream) -> None:
            await _serve_connection(fleet, stream)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, [listener])
            task_status.started()
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def send_control(path: str, request: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """Blocking client: send one request to a fleet's control socket, return the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


def control_main(argv: Sequence[str] | None, *, program: str) -> int:
    """``python -m PROGRAM SOCKET_PATH JSON_REQUEST``: one request, the answer printed."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(f"usage: python -m {program} SOCKET_PATH JSON_REQUEST", file=sys.stderr)
        return 2
    try:
        answer = send_control(args[0], json.loads(args[1]))
    except (OSError, ValueError) as exc:
        print(f"control: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0 if answer.get("ok") else 1
