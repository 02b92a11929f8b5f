"""A fleet of simulated IPMI v2.0 BMCs in one trio process (tests, demo, benchmarks).

    async with open_fleet(100, port_base=0, password="secret") as fleet:
        bmc = fleet.bmcs[0]            # .address, .port, .power_on, .set_power(on)
        fleet.set_faults(loss=0.3, dead={5})
        fleet.describe()               # [BmcDescription(name, host, port, username, ...)]
        write_inventory("nodes.toml", fleet, "admin", "secret")

Each BMC is a real RMCP+ server (ipmi.proto.server) on its own UDP port; see
docs/simulator.md for behaviour, faults and the control socket. What is not IPMI (faults
shared with Redfish, power timing, the control socket) is ``simcore``'s.
"""

from ipmi.sim.bmc import SimBmc
from ipmi.sim.description import BmcDescription
from ipmi.sim.faults import Faults
from ipmi.sim.fleet import Fleet, FleetError, open_fleet
from ipmi.sim.inventory import render_descriptions, render_inventory, write_inventory
from simcore import PowerTiming, parse_selection, send_control, serve_control

__all__ = [
    "BmcDescription",
    "Faults",
    "Fleet",
    "FleetError",
    "PowerTiming",
    "SimBmc",
    "open_fleet",
    "parse_selection",
    "render_descriptions",
    "render_inventory",
    "send_control",
    "serve_control",
    "write_inventory",
]
