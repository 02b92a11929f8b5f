"""The simulator core's exceptions (one root; each protocol's fleet error also derives
from its own package's root, so callers catch whichever they know)."""

from __future__ import annotations


class SimulatorError(Exception):
    """Root of the simulator core's errors."""


class FleetError(SimulatorError):
    """The fleet cannot start: address refused, port in use, too many open files."""
