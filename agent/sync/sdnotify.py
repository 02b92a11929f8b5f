"""systemd's notify protocol (sd_notify(3)), written here rather than taken from libsystemd.

A message is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` names Linux's abstract namespace). Without the variable
nothing is sent. The daemon says ``READY=1`` after its first cycle, ``STATUS=`` after each,
``WATCHDOG=1`` while its sync loop makes progress, ``RELOADING=1``/``READY=1`` around a
SIGHUP and ``STOPPING=1`` on SIGTERM.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping

import trio

from agent.config.options import ConductorConfig

log = logging.getLogger("powersync.systemd")


def socket_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as an address for ``sendto``: ``@name`` is the abstract ``\\0name``."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def message(**fields: object) -> bytes:
    """``READY=1\\nSTATUS=...``: one line per field, in order; a value is kept to one line."""
    return "\n".join(
        f"{key}={' '.join(str(value).splitlines())}" for key, value in fields.items()
    ).encode()


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``MONOTONIC_USEC=`` wants it next to RELOADING=1."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_period(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC`` (None: no watchdog for this process)."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


def stall_limit(conductor: ConductorConfig) -> float:
    """How long the sync loop may go without progress: the wait for the next cycle, its
    jitter and one node's deadline (infinite while sync is off: nothing to wait for)."""
    if not conductor.sync_enabled:
        return math.inf
    return (
        conductor.sync_power_state_interval
        + conductor.sync_jitter_window
        + conductor.sync_node_timeout
    )


def loop_alive(now: float, last_progress: float | None, limit: float) -> bool:
    """Whether a ping is due: the loop moved (a node or a cycle finished) within ``limit``."""
    return last_progress is None or now - last_progress <= limit


class SdNotifier:
    """Sends notify messages; a failed send is logged once and never raises."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SdNotifier:
        return cls((os.environ if environ is None else environ).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send one message; False when there is no socket or the send failed."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                # Non-blocking: a manager that stops reading must never stall the daemon.
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message(**fields), socket_address(self.address))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify systemd at %s (%s); further failures are not logged",
                    self.address,
                    exc.strerror or exc,
                )
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def watchdog_loop(
    notifier: SdNotifier,
    period: float,
    progress: Callable[[], tuple[float | None, float]],
) -> None:
    """``WATCHDOG=1`` every ``period`` while ``progress()`` (last progress, limit) says the
    sync loop moves; a stuck loop goes quiet so systemd restarts the agent."""
    quiet = False
    while True:
        last, limit = progress()
        now = trio.current_time()
        if loop_alive(now, last, limit):
            if quiet:
                log.info("the sync loop is moving again: watchdog pings resumed")
                quiet = False
            notifier.notify(WATCHDOG=1)
        elif not quiet:
            quiet = True
            assert last is not None and math.isfinite(limit)
            log.warning(
                "the sync loop made no progress for %.1f s (limit: interval + jitter window + "
                "node timeout = %g s): watchdog pings stopped, systemd will restart the agent",
                now - last,
                limit,
            )
        await trio.sleep(period)
