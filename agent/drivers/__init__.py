"""BMC drivers: each protocol behind the seam of :mod:`agent.bmc.seam`.

* ``ipmi`` (:mod:`.ipmi`): IPMI v2.0 / RMCP+ through the native client in ``ipmi/``.
* ``redfish`` (:mod:`.redfish`): Redfish over HTTPS through the client in ``redfish/``.

:func:`configured_drivers` is the one place that knows which drivers exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from agent.bmc.seam import Drivers
from agent.drivers import ipmi
from agent.drivers.ipmi import IpmiDriver
from agent.drivers.redfish import RedfishDriver

if TYPE_CHECKING:
    from agent.config.options import AgentConfig

DRIVER_NAMES: Final = ("ipmi", "redfish")
DEFAULT_PORTS: Final = {"ipmi": 623, "redfish": 443}


def check_secret(driver: str, password: str) -> None:
    """The driver's own rule for a password (ValueError says what is wrong)."""
    if not password or "\0" in password:
        raise ValueError("the BMC password must be non-empty, without NUL characters")
    if driver == ipmi.NAME:
        ipmi.check_password(password)


def configured_drivers(config: AgentConfig) -> Drivers:
    """Every driver, set up from its section of the configuration."""
    return Drivers(
        {
            "ipmi": IpmiDriver(
                config.ipmi, min_datagram_interval=config.conductor.min_command_interval
            ),
            "redfish": RedfishDriver(session_mode=config.ipmi.session_mode),
        }
    )
