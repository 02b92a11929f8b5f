"""``powersync bmc`` end to end: the real command line, in a subprocess, against ipmi_sim."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.secrets import write_secret_file
from tests.conftest import free_udp_ports, require_tool
from tests.peers import clients
from tests.peers.ipmi_sim import IpmiSimBmc, ipmi_sim_fleet

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "cli-Secret-99"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[IpmiSimBmc]:
    require_tool("ipmi_sim")
    with ipmi_sim_fleet(1, directory=tmp_path / "bmc", password=PASSWORD) as bmcs:
        yield bmcs[0]


def powersync(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess, without the default password variables."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("IPMI_PASSWORD", "REDFISH_PASSWORD")
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bmc_args(sim: IpmiSimBmc, *rest: str) -> list[str]:
    return ["bmc", "--host", sim.host, "--port", str(sim.port), "--username", "admin", *rest]


@pytest.mark.peers
def test_status_on_off_with_the_default_password_variable(sim: IpmiSimBmc) -> None:
    env = {"IPMI_PASSWORD": PASSWORD}
    result = powersync(*bmc_args(sim, "power", "status"), env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "Chassis Power is off\n", "")
    result = powersync(*bmc_args(sim, "power", "on"), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Chassis Power Control: Up/On\n"
    assert sim.power_on is True
    result = powersync(*bmc_args(sim, "power", "status"), env=env)
    assert result.stdout == "Chassis Power is on\n"
    result = powersync(*bmc_args(sim, "power", "off"), env=env)
    assert result.stdout == "Chassis Power Control: Down/Off\n"
    assert sim.power_on is False
    # And an independent client agrees.
    require_tool("ipmitool")
    check = clients.ipmitool(sim.host, sim.port, username="admin", password=PASSWORD).run()
    assert check.power is False, clients.describe(check)


@pytest.mark.peers
def test_json_output_with_a_password_file_and_suite_3(sim: IpmiSimBmc, tmp_path: Path) -> None:
    secret = tmp_path / "bmc.pw"
    write_secret_file(str(secret), PASSWORD)
    sim.set_power(True)
    result = powersync(
        *bmc_args(sim, "--password-file", str(secret), "--cipher-suite", "3", "--json"),
        "power",
        "status",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["power"] == "on"
    assert document["power_state"] == "power on"
    assert document["host"] == sim.host and document["port"] == sim.port
    result = powersync(*bmc_args(sim, "--password-file", str(secret), "--json"), "power", "cycle")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result"] == "ok"
    assert "set power 0" in sim.calls()


@pytest.mark.peers
def test_wrong_password_is_one_line_without_the_password(sim: IpmiSimBmc) -> None:
    wrong = "Wrong-Guess-123"
    result = powersync(*bmc_args(sim, "power", "status"), env={"IPMI_PASSWORD": wrong})
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{sim.host}:{sim.port}" in lines[0]
    assert "Traceback" not in result.stderr
    for secret in (wrong, PASSWORD):
        assert secret not in result.stdout + result.stderr


@pytest.mark.peers
def test_a_custom_password_variable_and_no_common_suite(sim: IpmiSimBmc) -> None:
    env = {"MY_BMC_PW": PASSWORD}
    ok = powersync(*bmc_args(sim, "--password-env", "MY_BMC_PW"), "power", "status", env=env)
    assert ok.returncode == 0, ok.stderr
    refused = powersync(
        *bmc_args(sim, "--password-env", "MY_BMC_PW", "--cipher-suite", "17"),
        "power",
        "status",
        env=env,
    )
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "cipher" in refused.stderr.lower()


def test_a_silent_bmc_ends_at_the_timeout_with_one_line() -> None:
    port = free_udp_ports(1)[0]  # nothing listens there
    result = powersync(
        "bmc",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--username",
        "admin",
        "--timeout",
        "1.5",
        "power",
        "status",
        env={"IPMI_PASSWORD": PASSWORD},
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("powersync: bmc 127.0.0.1:") and "1.5 s" in last
    assert PASSWORD not in result.stderr


def test_password_sources_are_checked(tmp_path: Path) -> None:
    base = ["bmc", "--host", "127.0.0.1", "--username", "admin"]
    missing = powersync(*base, "power", "status")
    assert missing.returncode != 0 and "IPMI_PASSWORD" in missing.stderr
    loose = tmp_path / "loose.pw"
    loose.write_text(PASSWORD + "\n")
    loose.chmod(0o644)
    refused = powersync(*base, "--password-file", str(loose), "power", "status")
    assert refused.returncode != 0 and "chmod 600" in refused.stderr
    assert PASSWORD not in refused.stderr
    # There is no way to give the password itself on the command line.
    argv_password = powersync(*base, "--password", PASSWORD, "power", "status")
    assert argv_password.returncode == 2
    unknown_op = powersync(*base, "power", "explode", env={"IPMI_PASSWORD": PASSWORD})
    assert unknown_op.returncode == 2


def test_an_ipv6_bmc_is_named_once_in_brackets(tmp_path: Path) -> None:
    inventory = tmp_path / "bmcs.toml"
    sim = subprocess.Popen(
        [
            *[sys.executable, "-m", "agent.cli.main", "sim", "--nodes", "1", "--host", "::1"],
            *["--port-base", "0", "--password-env", "SIM_PASSWORD"],
            *["--write-inventory", str(inventory)],
        ],
        cwd=ROOT,
        env={**os.environ, "SIM_PASSWORD": PASSWORD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # bounded: 10 s
            if inventory.exists():
                break
            time.sleep(0.1)
        port = int(re.search(r"bmc_port = (\d+)", inventory.read_text()).group(1))  # type: ignore[union-attr]
        result = powersync(
            *["bmc", "--host", "::1", "--port", str(port), "--username", "admin"],
            *["power", "status"],
            env={"IPMI_PASSWORD": "wrong-" + PASSWORD},
        )
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"powersync: bmc [::1]:{port}: ")
    assert last.count(str(port)) == 1
    assert "wrong password" in last
