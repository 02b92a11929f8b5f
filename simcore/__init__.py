"""The protocol-neutral core of the BMC simulators (``ipmi.sim``, ``redfish.sim``).

One index space of BMCs, their faults and fault selections, the power of the systems
behind them, and the JSON-line control socket: what a simulated fleet is whatever its
BMCs speak. Each protocol's simulator adds only how its BMCs are served; this package
imports neither of them.
"""

from simcore.control import control_main, execute, send_control, serve_control
from simcore.errors import FleetError, SimulatorError
from simcore.faults import SimFaults
from simcore.fleet import SimulatedFleet, check_address, check_fleet_shape, port_for
from simcore.power import PowerTiming, SimulatedBmc, SimulatedPower
from simcore.selection import parse_selection

__all__ = [
    "FleetError",
    "PowerTiming",
    "SimFaults",
    "SimulatedBmc",
    "SimulatedFleet",
    "SimulatedPower",
    "SimulatorError",
    "check_address",
    "check_fleet_shape",
    "control_main",
    "execute",
    "parse_selection",
    "port_for",
    "send_control",
    "serve_control",
]
