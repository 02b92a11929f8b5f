"""One simulated IPMI BMC: the chassis device over the shared power model
(:class:`simcore.SimulatedPower`, power transitions that take time, applied lazily)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ipmi.proto.constants import (
    CC_NOT_IN_PRESENT_STATE,
    CC_OK,
    CC_PARAMETER_OUT_OF_RANGE,
    ChassisAction,
)
from simcore.power import PowerTiming, SimulatedBmc

if TYPE_CHECKING:
    from ipmi.proto.server import BmcProtocol


__all__ = ["PowerTiming", "SimBmc"]


class SimBmc(SimulatedBmc):
    """A simulated BMC and the power of the system behind it.

    ``address``/``port`` is where it listens; ``power_on`` is the hardware truth (what a
    test compares the agent's view against); ``set_power`` changes it out of band, as
    someone pressing the power button would.
    """

    __slots__ = (
        "_ignore_soft_off",
        "controls",
        "fault_bits",
        "last_command",
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
        super().__init__(index, address, port, clock=clock, timing=timing, power_on=power_on)
        self._ignore_soft_off = ignore_soft_off
        self.protocol: BmcProtocol | None = None  # created on the first login attempt
        self.requests = 0  # datagrams answered
        self.last_command: str | None = None
        self.controls = 0  # Chassis Control requests carried out (power actions, counted)
        # Get Chassis Status fault bits to report (0x02 overload ... 0x10 control fault).
        self.fault_bits = 0

    def __repr__(self) -> str:
        power = "on" if self.power_on else "off"
        return f"<SimBmc {self.name} {self.address}:{self.port} power={power}>"

    @property
    def in_transition(self) -> bool:
        return self.next_power(self._clock()) is not None

    # -- what the fleet and its control socket read -----------------------------------------
    def session_count(self, now: float) -> int:
        return self.protocol.session_count(now) if self.protocol else 0

    def drop_sessions(self) -> None:
        self.protocol = None  # every session, pending login and replay cache is gone

    def control_details(self, now: float) -> dict[str, Any]:
        return {}

    # -- what the BMC's chassis device does (called by the protocol machine) ---------------
    def chassis_power(self, now: float) -> bool:
        return self.power_at(now)

    def chassis_faults(self, now: float) -> int:
        return self.fault_bits

    def chassis_control(self, action: int, now: float) -> int:
        """Apply a Chassis Control request; returns the IPMI completion code."""
        self.controls += 1
        on = self.power_at(now)
        if action == ChassisAction.POWER_DOWN:
            self.last_command = "off"
            self.start_power_off(now)
        elif action == ChassisAction.POWER_UP:
            self.last_command = "on"
            self.start_power_on(now)
        elif action == ChassisAction.POWER_CYCLE:
            if not on:
                return CC_NOT_IN_PRESENT_STATE  # nothing to cycle: the system is off
            self.last_command = "cycle"
            self.start_cycle(now)
        elif action == ChassisAction.HARD_RESET:
            if not on:
                return CC_NOT_IN_PRESENT_STATE
            self.last_command = "reset"  # power stays on; the OS restarts
        elif action == ChassisAction.SOFT_SHUTDOWN:
            self.last_command = "soft"
            if on and not self._ignore_soft_off(self.index):
                self.start_soft_off(now)
        elif action == ChassisAction.DIAGNOSTIC_INTERRUPT:
            self.last_command = "diag"
        else:
            return CC_PARAMETER_OUT_OF_RANGE
        return CC_OK
