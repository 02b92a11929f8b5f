"""The managed system's power, as a simulated BMC sees it, whatever protocol it speaks.

Power transitions take time, so each BMC keeps its current state plus a short schedule of
future changes, applied lazily whenever the state is read. That costs nothing for an idle
BMC (no timer, no task), which is what lets one process hold 10,000 of them.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs


@attrs.frozen
class PowerTiming:
    """How long the simulated hardware takes (seconds).

    power_on_delay   power up (IPMI) / On (Redfish) until the state reads on
    power_off_delay  hard power down / ForceOff until the state reads off
    soft_off_delay   soft shutdown / GracefulShutdown until the OS has shut down (unless
                     it ignores it)
    cycle_off_time   power cycle / ForceRestart: how long the system stays off
    """

    power_on_delay: float = 0.0
    power_off_delay: float = 0.0
    soft_off_delay: float = 0.0
    cycle_off_time: float = 0.0

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(PowerTiming):
            if not getattr(self, field.name) >= 0.0:
                raise ValueError(f"{field.name} must be >= 0")


class SimulatedPower:
    """The power of the system behind one BMC: the hardware truth and its schedule.

    ``power_on`` is what a test compares a client's view against; ``set_power`` changes
    it out of band, as someone pressing the power button would. The ``start_*`` methods
    are what a BMC's power actions do; the protocol decides when they are refused.
    """

    # Slots, here and in subclasses that want them: an idle BMC must stay small.
    __slots__ = ("_clock", "_power", "_schedule", "_timing")

    def __init__(self, *, clock: Callable[[], float], timing: PowerTiming, power_on: bool) -> None:
        self._clock = clock
        self._timing = timing
        self._power = power_on
        # Future (time, power_on) changes, earliest first; empty when idle.
        self._schedule: tuple[tuple[float, bool], ...] = ()

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

    def next_power(self, now: float) -> bool | None:
        """The state a transition under way leads to, or None when the power is settled."""
        self.power_at(now)
        return self._schedule[0][1] if self._schedule else None

    def settles_at(self, now: float) -> float:
        """When the last scheduled change happens (``now`` when none is)."""
        self.power_at(now)
        return self._schedule[-1][0] if self._schedule else now

    def set_power(self, on: bool) -> None:
        """Change the power out of band (the button on the front panel): immediate."""
        self._schedule = ()
        self._power = bool(on)

    # -- power actions: each replaces what was scheduled; zero delays take effect at once --
    def _start(self, now: float, *changes: tuple[float, bool]) -> None:
        self._schedule = changes
        self._settle(now)

    def start_power_on(self, now: float) -> None:
        self._start(now, (now + self._timing.power_on_delay, True))

    def start_power_off(self, now: float) -> None:
        self._start(now, (now + self._timing.power_off_delay, False))

    def start_soft_off(self, now: float) -> None:
        self._start(now, (now + self._timing.soft_off_delay, False))

    def start_cycle(self, now: float) -> None:
        off_at = now + self._timing.power_off_delay
        self._start(now, (off_at, False), (off_at + self._timing.cycle_off_time, True))

    def press_button(self, now: float) -> None:
        """The power button, pressed through the BMC: toggles at once."""
        self._start(now, (now, not self.power_at(now)))


class SimulatedBmc(SimulatedPower):
    """One BMC of a fleet: where it listens, its place in the index space, its firmware's
    reboots, and the power of the system behind it. BMC ``i`` is named ``sim-{i:04d}``."""

    __slots__ = ("address", "boot_count", "down_until", "index", "name", "port")

    def __init__(
        self,
        index: int,
        address: str,
        port: int,
        *,
        clock: Callable[[], float],
        timing: PowerTiming,
        power_on: bool,
    ) -> None:
        super().__init__(clock=clock, timing=timing, power_on=power_on)
        self.index = index
        self.name = f"sim-{index:04d}"
        self.address = address
        self.port = port
        self.down_until = 0.0  # rebooting BMC firmware: silent until then
        self.boot_count = 0
