"""A neutral description of a fleet for an inventory (the agent writes its own format).

Each BMC becomes a dict in Ironic's redfish driver_info terms: no password itself, only
the file that holds it, and the CA file that vouches for the fleet's certificate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redfish.sim.fleet import Fleet


def describe_fleet(
    fleet: Fleet, *, password_file: str | None = None, ca_file: str | None = None
) -> list[dict[str, str | None]]:
    """``[{name, address, system_id, username, password_file, verify_ca}]``, one per BMC.

    ``address`` is the redfish_address URL, ``system_id`` the redfish_system_id path,
    ``verify_ca`` the CA file (default: the fleet's ca.pem; it lives as long as the
    fleet's ``tls_dir``).
    """
    return [
        {
            "name": bmc.name,
            "address": bmc.url,
            "system_id": bmc.system_path,
            "username": fleet.username,
            "password_file": password_file,
            "verify_ca": ca_file or fleet.ca_file,
        }
        for bmc in fleet.bmcs
    ]
