"""Shared test helpers.

Integration tests against real peers (ipmi_sim, pyghmi, ipmitool, ipmipower) call
:func:`require_tool`. On a developer machine without the tool the test is skipped with the
reason; under CI (``CI`` set) a missing tool is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_tool(name: str) -> str:
    """Path of an external program the test needs; skip (locally) or fail (CI) without it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        message = f"{name} not installed (apt-get install -y openipmi ipmitool freeipmi-tools)"
        if in_ci():
            pytest.fail(message + " -- CI must never skip peer tests")
        pytest.skip(message)
    return path


def require_module(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        message = f"python module {name} not installed (pip install -e '.[test]')"
        if in_ci():
            pytest.fail(message + " -- CI must never skip peer tests")
        pytest.skip(message)


def free_udp_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct UDP ports that are free on ``host`` right now.

    Tests run in parallel with other work on the machine, so ports are never hard-coded.
    """
    import socket

    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
