"""The control socket (in process) and ``powersync sim`` (as a real subprocess)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import trio

from ipmi.sim import open_fleet, send_control
from tests.conftest import require_tool
from tests.peers import clients

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pass"


async def control(path: str, request: dict[str, object]) -> dict[str, object]:
    return await trio.to_thread.run_sync(send_control, path, request)


async def test_control_socket_changes_faults_power_and_sessions(tmp_path: Path) -> None:
    path = str(tmp_path / "sim.sock")
    async with open_fleet(4, password=SECRET, control_socket=path) as fleet:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        answer = await control(path, {"op": "faults", "set": {"loss": 0.25, "dead": "1-2"}})
        assert answer["ok"] and fleet.faults.loss == 0.25 and fleet.faults.dead == {1, 2}
        answer = await control(path, {"op": "power", "bmcs": [0, 3], "on": True})
        assert answer == {"ok": True, "changed": 2}
        assert [bmc.power_on for bmc in fleet.bmcs] == [True, False, False, True]
        listing = await control(path, {"op": "list"})
        assert [entry["power_on"] for entry in listing["bmcs"]] == [True, False, False, True]  # type: ignore[index]
        answer = await control(path, {"op": "reboot", "bmcs": "3", "down_for": 30})
        assert answer["ok"] and fleet.bmcs[3].boot_count == 1
        assert fleet.bmcs[3].down_until > trio.current_time()
        status = await control(path, {"op": "status"})
        assert status["statistics"]["bmcs"] == 4  # type: ignore[index]
        answer = await control(path, {"op": "faults", "reset": True})
        assert fleet.faults.loss == 0 and not fleet.faults.dead
        for bad in (
            {"op": "nope"},
            {"op": "faults", "set": {"loss": 2}},
            {"op": "power", "bmcs": "9", "on": True},
            {"op": "power", "bmcs": "0"},
            {"op": "faults", "set": {"dead": "x"}},
            ["not", "an", "object"],
        ):
            answer = await control(path, bad)  # type: ignore[arg-type]
            assert answer["ok"] is False and answer["error"], bad
        assert fleet.faults.loss == 0  # refused requests changed nothing
    assert not os.path.exists(path)  # removed on exit


async def test_non_loopback_address_is_refused() -> None:
    from ipmi.sim import FleetError

    with pytest.raises(FleetError, match="non-loopback"):
        async with open_fleet(1, host="192.0.2.1", password=SECRET):
            pass


def run_cli(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "10.1.2.3"], "non-loopback"),
        (["--cipher-suites", "0,3"], "only 3 and 17"),
        (["--dead", "7"], "--dead: BMC 7 does not exist"),
        (["--loss", "1.5"], "loss must be between 0 and 1"),
        (["--password-env", "UNSET_SIM_PASSWORD_VARIABLE"], "UNSET_SIM_PASSWORD_VARIABLE"),
    ],
)
def test_cli_errors_are_one_line(argv: list[str], message: str) -> None:
    if not any(arg.startswith("--password") for arg in argv):
        argv = [*argv, "--password-env", "SIM_TEST_PASSWORD"]
    environment = {**os.environ, "SIM_TEST_PASSWORD": SECRET}
    environment.pop("UNSET_SIM_PASSWORD_VARIABLE", None)
    result = run_cli("sim", "--nodes", "2", "--port-base", "0", *argv, env=environment)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr


def test_cli_without_any_password_source_asks_for_one() -> None:
    result = run_cli("sim", "--nodes", "1", "--port-base", "0")
    assert result.returncode == 1 and "give --password-file" in result.stderr


@pytest.mark.peers
def test_cli_serves_writes_inventory_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    require_tool("ipmitool")
    password_file = tmp_path / "password"
    password_file.write_text(SECRET + "\n")
    password_file.chmod(0o600)
    inventory = tmp_path / "nodes.toml"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "sim",
            "--nodes",
            "3",
            "--port-base",
            "0",
            "--password-file",
            str(password_file),
            "--write-inventory",
            str(inventory),
            "--power-on",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert "serving 3 BMCs" in ready, ready
        assert SECRET not in ready
        assert stat.S_IMODE(os.stat(inventory).st_mode) == 0o600
        nodes = tomllib.loads(inventory.read_text())["nodes"]
        assert [node["name"] for node in nodes] == ["sim-0000", "sim-0001", "sim-0002"]
        node = nodes[2]
        # The secret stays in its own file: the inventory names that file.
        assert node["bmc_password_file"] == str(password_file)
        assert "bmc_password" not in node
        assert SECRET not in inventory.read_text()
        password = Path(node["bmc_password_file"]).read_text().strip()
        result = clients.ipmitool(
            node["bmc_address"], node["bmc_port"], username="admin", password=password
        ).run()
        assert result.power is True, clients.describe(result)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert SECRET not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_free_ports_are_reported_where_they_can_be_found() -> None:
    import argparse
    from types import SimpleNamespace

    from agent.cli.sim import _where_free_ports_are

    bmcs = [SimpleNamespace(port=40000 + i) for i in range(25)]
    args = argparse.Namespace(write_inventory="nodes.toml", control_socket=None)
    assert _where_free_ports_are(args, bmcs) == "(any free ports, see the inventory)"  # type: ignore[arg-type]
    args = argparse.Namespace(write_inventory=None, control_socket="/tmp/c.sock")
    assert "control socket" in _where_free_ports_are(args, bmcs)  # type: ignore[arg-type]
    args = argparse.Namespace(write_inventory=None, control_socket=None)
    shown = _where_free_ports_are(args, bmcs[:3])  # type: ignore[arg-type]
    assert shown == "(40000, 40001, 40002)"
    assert _where_free_ports_are(args, bmcs).endswith("40019, ...)")  # type: ignore[arg-type]
