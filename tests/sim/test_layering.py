"""ipmi.sim's layering: the fleet describes itself neutrally, the inventory writer only
renders descriptions, and the control socket (simcore.control, shared with redfish.sim)
knows the fleet only by an interface."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import ipmi.sim
import redfish.sim
import simcore
from ipmi.sim import BmcDescription, open_fleet, render_inventory, write_inventory

SIM = Path(ipmi.sim.__file__).parent
REDFISH_SIM = Path(redfish.sim.__file__).parent
CORE = Path(simcore.__file__).parent


def imported_modules(module: str, package: Path = SIM) -> set[str]:
    tree = ast.parse((package / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_control_and_inventory_never_import_the_fleet() -> None:
    assert "simcore.fleet" not in imported_modules("control", CORE)  # no import cycle
    assert "ipmi.sim.fleet" not in imported_modules("inventory")
    for fleet in (SIM, REDFISH_SIM):  # one direction only
        assert "simcore.control" in imported_modules("fleet", fleet)


async def test_a_fleet_describes_itself_without_its_password(tmp_path: Path) -> None:
    async with open_fleet(2, password="s3cret-pw", username="root") as fleet:
        described = fleet.describe(password_file="/etc/pw", cipher_suites=(3,))
        default = fleet.describe()
        write_inventory(str(tmp_path / "a.toml"), fleet, "root", "s3cret-pw")
        endpoints = fleet.endpoints
    assert described == [
        BmcDescription(bmc.name, bmc.address, bmc.port, "root", "/etc/pw", (3,))
        for bmc in fleet.bmcs
    ]
    assert default[0].username == "root" and default[0].password_file is None
    assert "s3cret" not in repr(described) + repr([d.to_dict() for d in described])
    assert described[1].to_dict() == {
        "name": "sim-0001",
        "host": "127.0.0.1",
        "port": fleet.bmcs[1].port,
        "username": "root",
        "password_file": "/etc/pw",
        "cipher_suites": [3],
    }
    # The fleet and its (name, address, port) triples give the same file, byte for byte.
    assert (tmp_path / "a.toml").read_text() == render_inventory(endpoints, "root", "s3cret-pw")


def test_the_inventory_format_is_unchanged() -> None:
    text = render_inventory(
        [("sim-0001", "127.0.0.1", 20001)], "admin", None, password_file="/p", cipher_suites=(17, 3)
    )
    assert text == (
        "# Simulated BMCs written by `powersync sim`; load with `powersync node import`.\n"
        "\n"
        "[[nodes]]\n"
        'name = "sim-0001"\n'
        'bmc_address = "127.0.0.1"\n'
        "bmc_port = 20001\n"
        'bmc_username = "admin"\n'
        'bmc_password_file = "/p"\n'
        "cipher_suites = [17, 3]\n"
    )
    assert tomllib.loads(text)["nodes"][0]["bmc_port"] == 20001
