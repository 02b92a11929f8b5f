"""What every simulated fleet shares, whatever its BMCs speak: where it may listen, one
index space, faults swapped whole, reboots, flapping power and delayed answers.

A protocol's fleet subclasses :class:`SimulatedFleet` and adds how its BMCs are served
(sockets, sessions, what "dead" and "hanging" mean on the wire).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
from collections.abc import Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import trio

from simcore.errors import FleetError
from simcore.faults import SimFaults


class FleetBmc(Protocol):
    """What the shared fleet logic reads and changes on one of its BMCs."""

    index: int
    name: str
    address: str
    port: int
    down_until: float  # rebooting BMC firmware: silent until then
    boot_count: int

    @property
    def power_on(self) -> bool: ...

    def set_power(self, on: bool) -> None: ...

    def session_count(self, now: float) -> int: ...

    def drop_sessions(self) -> None: ...


BmcT = TypeVar("BmcT", bound=FleetBmc)
FaultsT = TypeVar("FaultsT", bound=SimFaults)


def check_address(
    host: str, *, allow_any_address: bool, error: type[FleetError] = FleetError
) -> int:
    """The socket family for ``host``; refuses non-loopback addresses unless allowed."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise error(f"host {host!r} is not an IP address") from None
    if not address.is_loopback and not allow_any_address:
        raise error(
            f"refusing to serve simulated BMCs on non-loopback address {host} "
            f"(pass allow_any_address / --allow-any-address to really do that)"
        )
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def check_fleet_shape(
    count: int,
    *,
    port_base: int,
    ports: Sequence[int] | None,
    password: str,
    error: type[FleetError] = FleetError,
) -> None:
    """Refuse a fleet that cannot exist: no BMC, ports that do not fit, no password."""
    if count < 1:
        raise ValueError("a fleet needs at least one BMC")
    if ports is not None and len(ports) != count:
        raise ValueError("ports must name one port per BMC")
    if port_base and port_base + count - 1 > 65535:
        raise error(f"ports {port_base}..{port_base + count - 1} do not fit below 65536")
    if not password:
        raise ValueError("the fleet needs a password")


def cannot_bind(
    position: int, host: str, port: int, exc: OSError, error: type[FleetError] = FleetError
) -> FleetError:
    """The error for a BMC's port that cannot be bound (taken, not ours)."""
    return error(f"cannot bind BMC {position} to {host}:{port}: {exc.strerror}")


def port_for(position: int, port_base: int, ports: Sequence[int] | None) -> int:
    """The port the ``position``-th BMC binds: given, ``port_base + position``, or 0 (any)."""
    if ports is not None:
        return ports[position]
    return port_base + position if port_base else 0


class SimulatedFleet(Generic[BmcT, FaultsT]):
    """BMCs ``first_index`` .. ``first_index + len(bmcs) - 1`` and the faults in force.

    ``first_index`` lets a fleet follow another (a mixed IPMI + Redfish fleet is one
    index space). The dice (``_rng``) serve every random fault, in the order they are
    asked, so a seed reproduces a run.
    """

    def __init__(
        self,
        bmcs: Sequence[BmcT],
        *,
        faults: FaultsT,
        seed: int | None,
        log: logging.Logger,
        first_index: int = 0,
    ) -> None:
        self.bmcs: Sequence[BmcT] = bmcs
        self.first_index = first_index
        self._faults = faults
        self._faults_changed = trio.Event()
        self._rng = random.Random(seed)  # noqa: S311 -- fault dice, not cryptography
        self._log = log

    @property
    def faults(self) -> FaultsT:
        return self._faults

    @property
    def endpoints(self) -> list[tuple[str, str, int]]:
        """(name, address, port) of every BMC."""
        return [(bmc.name, bmc.address, bmc.port) for bmc in self.bmcs]

    def bmc(self, index: int) -> BmcT:
        """The BMC with this index (``first_index`` .. ``first_index + len(bmcs) - 1``)."""
        if not self.first_index <= index < self.first_index + len(self.bmcs):
            raise IndexError(f"no BMC with index {index}")
        return self.bmcs[index - self.first_index]

    def set_faults(self, faults: FaultsT | None = None, /, **changes: Any) -> FaultsT:
        """Replace the faults (``set_faults(Faults(...))``) or change some of them
        (``set_faults(dead={2})``); returns the faults now in force."""
        base = faults if faults is not None else self._faults
        new = base.changed(changes) if changes else base
        self._faults = new
        self._faults_replaced()
        self._faults_changed.set()
        self._faults_changed = trio.Event()
        self._log.info("faults now %s", new.to_json())
        return new

    def _faults_replaced(self) -> None:
        """Called when new faults are in force (a protocol may restart what they count)."""

    def reboot(self, indexes: Iterable[int], *, down_for: float = 0.0) -> None:
        """Reboot BMC firmware: every session dropped, silent for ``down_for`` seconds."""
        now = trio.current_time()
        for index in indexes:
            bmc = self.bmc(index)
            bmc.drop_sessions()
            bmc.down_until = now + down_for
            bmc.boot_count += 1

    def session_count(self) -> int:
        now = trio.current_time()
        return sum(bmc.session_count(now) for bmc in self.bmcs)

    def _power_statistics(self) -> dict[str, Any]:
        """The counters every fleet reports first: BMCs, powered on, live sessions."""
        return {
            "bmcs": len(self.bmcs),
            "powered_on": sum(1 for bmc in self.bmcs if bmc.power_on),
            "sessions": self.session_count(),
        }

    def _silent(self, bmc: BmcT, faults: FaultsT, now: float) -> bool:
        """A dead or rebooting BMC answers nothing."""
        return bmc.index in faults.dead or bmc.down_until > now

    def _answer_delay(self, bmc: BmcT, faults: FaultsT) -> float:
        """Seconds to hold an answer back: latency, jitter, and a slow BMC's delay."""
        if not faults.delays_answers():
            return 0.0
        delay = faults.latency
        if faults.jitter:
            delay += self._rng.uniform(-faults.jitter, faults.jitter)
        if bmc.index in faults.slow:
            delay += faults.slow_delay
        return delay

    async def _flap_forever(self) -> None:
        """Press the power button of every flapping BMC each ``flap_interval``."""
        while True:
            faults = self._faults
            if not faults.flapping:
                await self._faults_changed.wait()
                continue
            with trio.move_on_after(faults.flap_interval):
                await self._faults_changed.wait()
                continue  # faults changed: re-read the interval and the selection
            for index in sorted(faults.flapping):
                if self.first_index <= index < self.first_index + len(self.bmcs):
                    bmc = self.bmc(index)
                    bmc.set_power(not bmc.power_on)
