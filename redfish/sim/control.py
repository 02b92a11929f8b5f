"""The Redfish fleet's control interface: the IPMI fleet's protocol, for Redfish services.

A Unix stream socket speaking one JSON object per line; each request line gets exactly one
answer line: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The socket file is
created mode 0600 (only its owner may change faults). Requests (BMC selections are 0-based
indexes, "0,3,10-19" or a list):

    {"op": "status"}                                   counters + faults in force
    {"op": "faults"}                                   faults in force
    {"op": "faults", "set": {"slow": "1", "server_errors": "2,5-7", "error_burst": 2}}
    {"op": "faults", "reset": true}                    clear all faults (then apply "set")
    {"op": "reboot", "bmcs": "0-3", "down_for": 5}     drop all sessions, silent 5 s
    {"op": "power", "bmcs": "0,1", "on": false}        out-of-band power change
    {"op": "list"}                                     every BMC: name, port, power, sessions

From a shell: ``python -m redfish.sim /path/to/socket '{"op": "status"}'``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from typing import TYPE_CHECKING, Any

import trio

from redfish.sim.faults import Faults, parse_selection

if TYPE_CHECKING:
    from redfish.sim.fleet import Fleet

MAX_LINE = 64 * 1024


def _selection(value: Any, first: int, count: int) -> list[int]:
    if isinstance(value, str):
        indexes = parse_selection(value)
    elif isinstance(value, list) and all(isinstance(item, int) for item in value):
        indexes = frozenset(value)
    else:
        raise ValueError('"bmcs" must be a selection string like "0,3-5" or a list of indexes')
    last = first + count - 1
    bad = sorted(index for index in indexes if not first <= index <= last)
    if bad:
        raise ValueError(f"no BMC with index {bad[0]} (the fleet has {count}: {first}..{last})")
    return sorted(indexes)


def execute(fleet: Fleet, request: Any) -> dict[str, Any]:
    """Run one control request against ``fleet``; never raises for a bad request."""
    try:
        return _execute(fleet, request)
    except (ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}


def _execute(fleet: Fleet, request: Any) -> dict[str, Any]:
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
        base = Faults() if request.get("reset") else fleet.faults
        if changes or request.get("reset"):
            fleet.set_faults(base.changed(changes))
        return {"ok": True, "faults": fleet.faults.to_json()}
    if op == "reboot":
        indexes = _selection(request.get("bmcs", ""), fleet.first_index, count)
        down_for = float(request.get("down_for", 0.0))
        if not down_for >= 0:
            raise ValueError('"down_for" must be >= 0 seconds')
        fleet.reboot(indexes, down_for=down_for)
        return {"ok": True, "rebooted": len(indexes)}
    if op == "power":
        indexes = _selection(request.get("bmcs", ""), fleet.first_index, count)
        on = request.get("on")
        if not isinstance(on, bool):
            raise ValueError('"on" must be true or false')
        for index in indexes:
            fleet.bmc(index).set_power(on)
        return {"ok": True, "changed": len(indexes)}
    if op == "list":
        now = trio.current_time()
        return {
            "ok": True,
            "bmcs": [
                {
                    "index": bmc.index,
                    "name": bmc.name,
                    "address": bmc.address,
                    "port": bmc.port,
                    "url": bmc.url,
                    "system_id": bmc.system_path,
                    "power_on": bmc.power_at(now),
                    "power_state": bmc.power_state,
                    "sessions": bmc.session_count(now),
                    "requests": bmc.requests,
                    "boot_count": bmc.boot_count,
                }
                for bmc in fleet.bmcs
            ],
        }
    raise ValueError(f"unknown op {op!r} (status, faults, reboot, power, list)")


def _prepare_path(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"control socket path {path} exists and is not a socket")
    os.unlink(path)  # a stale socket from an earlier run


async def _serve_connection(fleet: Fleet, stream: trio.SocketStream) -> None:
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
    fleet: Fleet, path: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
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
