"""A fleet of simulated Redfish services in one trio process (tests, demo, benchmarks).

    async with open_fleet(100, port_base=0, password="secret", tls_dir=d) as fleet:
        bmc = fleet.bmcs[0]           # .url .port .system_path .power_on .set_power(on)
        fleet.ca_file                 # trust this (redfish_verify_ca)
        fleet.set_faults(slow={3}, server_errors={5}, error_burst=2)
        describe_fleet(fleet, password_file="/path/pw")

Each BMC is an HTTPS (TLS + h11) server on its own port answering a sans-I/O
:class:`SimService`; see docs/redfish.md for behaviour, faults and the control socket.
What is not Redfish (faults shared with IPMI, power timing, the control socket) is
``simcore``'s.
"""

from redfish.sim.certs import TlsFiles, make_tls_files
from redfish.sim.faults import Faults
from redfish.sim.fleet import Fleet, FleetError, open_fleet
from redfish.sim.inventory import describe_fleet
from redfish.sim.service import ALL_RESET_TYPES, ServiceOptions, SimRequest, SimResponse, SimService
from simcore import PowerTiming, parse_selection, send_control, serve_control

__all__ = [
    "ALL_RESET_TYPES",
    "Faults",
    "Fleet",
    "FleetError",
    "PowerTiming",
    "ServiceOptions",
    "SimRequest",
    "SimResponse",
    "SimService",
    "TlsFiles",
    "describe_fleet",
    "make_tls_files",
    "open_fleet",
    "parse_selection",
    "send_control",
    "serve_control",
]
