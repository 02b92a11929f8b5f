"""One simulated BMC: the managed system's power, as the BMC sees it.

Power transitions take time, so each BMC keeps its current state plus a short schedule of
future changes, applied lazily whenever the state is read. That costs nothing for an idle
BMC (no timer, no task), which is what lets one process hold 10,000 of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ipmi.proto.constants import (
    CC_NOT_IN_PRESENT_STATE,
    CC_OK,
    CC_PARAMETER_OUT_OF_RANGE,
    ChassisAction,
)

if TYPE_CHECKING:
    from ipmi.proto.server import BmcProtocol


@attrs.frozen
class PowerTiming:
    """How long the simulated hardware takes (seconds).

    power_on_delay   Chassis Control "power up" until the state reads on
    power_off_delay  "power down" (hard) until the state reads off
    soft_off_delay   "soft shutdown" until the OS has shut down (unless it ignores it)
    cycle_off_time   "power cycle": how long the system stays off before coming back
    """

    power_on_delay: float = 0.0
    power_off_delay: float = 0.0
    soft_off_delay: float = 0.0
    cycle_off_time: float = 0.0

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(PowerTiming):
            if not getattr(self, field.name) >= 0.0:
                raise ValueError(f"{field.name} must be >= 0")


class SimBmc:
    """A simulated BMC and the power of the system behind it.

    ``address``/``port`` is where it listens; ``power_on`` is the hardware truth (what a
    test compares the agent's view against); ``set_power`` changes it out of band, as
    someone pressing the power button would.
    """

    __slots__ = (
        "_clock",
        "_ignore_soft_off",
        "_power",
        "_schedule",
        "_timing",
        "address",
        "boot_count",
        "controls",
        "down_until",
        "fault_bits",
        "index",
        "last_command",
        "name",
        "port",
        "protocol",
        "requests",
    )

    def __init__(
        self,
        index: int,
        address: str,
        port: int,
        *,
        clock: Callable[[], float],
        timing: PowerTiming,
        ignore_soft_off: Callable[[int], bool],
        power_on: bool = False,
    ) -> None:
        self.index = index
        self.name = f"sim-{index:04d}"
        self.address = address
        self.port = port
        self._clock = clock
        self._timing = timing
        self._ignore_soft_off = ignore_soft_off
        self._power = power_on
        # Future (time, power_on) changes, earliest first; empty when idle.
        self._schedule: tuple[tuple[float, bool], ...] = ()
        self.protocol: BmcProtocol | None = None  # created on the first login attempt
        self.down_until = 0.0  # rebooting BMC firmware: silent until then
        self.boot_count = 0
        self.requests = 0  # datagrams answered
        self.last_command: str | None = None
        self.controls = 0  # Chassis Control requests carried out (power actions, counted)
        # Get Chassis Status fault bits to report (0x02 overload ... 0x10 control fault).
        self.fault_bits = 0

    def __repr__(self) -> str:
        power = "on" if self.power_on else "off"
        return f"<SimBmc {self.name} {self.address}:{self.port} power={power}>"

    # -- the hardware truth ---------------------------------------------------------------
    def _settle(self, now: float) -> None:
        schedule = self._schedule
        while schedule and schedule[0][0] <= now:
            self._power = schedule[0][1]
            schedule = schedule[1:]
        self._schedule = schedule

    def power_at(self, now: float) -> bool:
        if self._schedule:
            self._settle(now)
        return self._power

    @property
    def power_on(self) -> bool:
        return self.power_at(self._clock())

    @property
    def in_transition(self) -> bool:
        self.power_at(self._clock())
        return bool(self._schedule)

    def set_power(self, on: bool) -> None:
        """Change the power out of band (the button on the front panel): immediate."""
        self._schedule = ()
        self._power = bool(on)

    # -- what the BMC's chassis device does (called by the protocol machine) ---------------
    def chassis_power(self, now: float) -> bool:
        return self.power_at(now)

    def chassis_faults(self, now: float) -> int:
        return self.fault_bits

    def chassis_control(self, action: int, now: float) -> int:
        """Apply a Chassis Control request; returns the IPMI completion code."""
        self.controls += 1
        on = self.power_at(now)
        timing = self._timing
        if action == ChassisAction.POWER_DOWN:
            self.last_command = "off"
            self._schedule = ((now + timing.power_off_delay, False),)
        elif action == ChassisAction.POWER_UP:
            self.last_command = "on"
            self._schedule = ((now + timing.power_on_delay, True),)
        elif action == ChassisAction.POWER_CYCLE:
            if not on:
                return CC_NOT_IN_PRESENT_STATE  # nothing to cycle: the system is off
            self.last_command = "cycle"
            off_at = now + timing.power_off_delay
            self._schedule = ((off_at, False), (off_at + timing.cycle_off_time, True))
        elif action == ChassisAction.HARD_RESET:
            if not on:
                return CC_NOT_IN_PRESENT_STATE
            self.last_command = "reset"  # power stays on; the OS restarts
        elif action == ChassisAction.SOFT_SHUTDOWN:
            self.last_command = "soft"
            if on and not self._ignore_soft_off(self.index):
                self._schedule = ((now + timing.soft_off_delay, False),)
        elif action == ChassisAction.DIAGNOSTIC_INTERRUPT:
            self.last_command = "diag"
        else:
            return CC_PARAMETER_OUT_OF_RANGE
        self._settle(now)  # zero delays take effect at once
        return CC_OK
