"""``powersync bmc --driver redfish`` and ``powersync sim --driver redfish | ipmi,redfish``.

Real command lines in subprocesses. Peers nobody here wrote: OpenStack's sushy-emulator
(``--fake``, HTTPS, basic auth) for ``powersync bmc``, and the sushy library (what Ironic
uses) against ``powersync sim``. Under CI a missing peer fails, never skips.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from agent.config.secrets import write_secret_file
from redfish.sim import send_control
from store import open_store
from tests.agent.test_cmd_bmc import powersync
from tests.conftest import require_module
from tests.redfish.peers import Emulator, free_tcp_port, run_sushy_emulator

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "rf-cli-Secret-42"
STARTUP = 20.0  # seconds for `powersync sim` to print its serving line


def one_error_line(result: subprocess.CompletedProcess[str], *secrets: str) -> str:
    """The command failed with exactly one line on stderr, naming no secret."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for secret in secrets:
        assert secret not in result.stderr
    return lines[0]


@attrs.frozen
class Sim:
    process: subprocess.Popen[str]
    line: str  # what it printed once serving
    nodes: list[dict[str, Any]]  # the inventory's [[nodes]]
    inventory: Path
    password_file: Path

    def redfish(self) -> list[dict[str, Any]]:
        return [node for node in self.nodes if node.get("driver") == "redfish"]


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Any]:
    """Start ``powersync sim`` with the given options; stopped (SIGTERM, exit 0) after."""
    started: list[subprocess.Popen[str]] = []
    password_file = tmp_path / "sim.pw"
    write_secret_file(str(password_file), PASSWORD)

    def start(*options: str) -> Sim:
        inventory = tmp_path / f"inventory-{len(started)}.toml"
        process = subprocess.Popen(
            [
                *[sys.executable, "-m", "agent.cli.main", "sim", "--port-base", "0"],
                *["--password-file", str(password_file), "--write-inventory", str(inventory)],
                *options,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], STARTUP)
        assert ready, "powersync sim printed nothing in time"
        line = process.stdout.readline()
        assert line.startswith("powersync sim: serving"), line + process.stderr.read()  # type: ignore[union-attr]
        nodes = tomllib.loads(inventory.read_text())["nodes"]
        return Sim(process, line, nodes, inventory, password_file)

    yield start
    for process in started:
        process.terminate()
        assert process.wait(timeout=10) == 0


def bmc_command(port: int, *rest: str, host: str = "127.0.0.1") -> list[str]:
    return ["bmc", "--driver", "redfish", "--host", host, "--port", str(port), "--username",
            "admin", *rest]  # fmt: skip


# ---- powersync bmc against sushy-emulator (a real peer) ------------------------------------


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    directory = tmp_path / "emulator"
    directory.mkdir()
    with run_sushy_emulator(directory) as running:
        yield running


def wait_for_status(command: list[str], env: dict[str, str], want: str, within: float) -> None:
    deadline = time.monotonic() + within
    while True:  # sushy-emulator's fake driver applies a change 1-11 s later
        result = powersync(*command, "power", "status", env=env)
        assert result.returncode == 0, result.stderr
        if result.stdout == f"Chassis Power is {want}\n" or time.monotonic() > deadline:
            assert result.stdout == f"Chassis Power is {want}\n"
            return
        time.sleep(0.5)


@pytest.mark.peers
def test_bmc_against_sushy_emulator(emulator: Emulator, tmp_path: Path) -> None:
    port = int(emulator.url.rsplit(":", 1)[1])
    secret = tmp_path / "emulator.pw"
    write_secret_file(str(secret), emulator.password)
    trusted = bmc_command(port, "--ca-file", emulator.tls.ca_file, "--password-file", str(secret))
    off = [*trusted, "--system-id", emulator.off_system]

    result = powersync(*off, "power", "status")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Chassis Power is off\n", "")
    result = powersync(*off, "--json", "power", "status")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["power"] == "off" and document["power_state"] == "power off"
    assert document["driver"] == "redfish" and document["port"] == port
    assert document["logins"] == 0  # sushy-tools has no SessionService: basic auth
    assert document["requests"] >= 2 and document["retries"] == 0
    assert document["tls_handshakes"] >= 1  # werkzeug speaks HTTP/1.0: one per request

    result = powersync(*off, "power", "on")
    assert (result.returncode, result.stdout) == (0, "Chassis Power Control: Up/On\n")
    wait_for_status(off, {}, "on", within=20)
    result = powersync(*off, "--json", "power", "off")
    assert result.returncode == 0 and json.loads(result.stdout)["result"] == "ok"
    wait_for_status(off, {}, "off", within=20)

    # Two systems and no --system-id: an error that lists them.
    several = one_error_line(powersync(*trusted, "power", "status"), emulator.password)
    assert emulator.off_system in several and emulator.on_system in several

    wrong = {"REDFISH_PASSWORD": "Wrong-Guess-77"}
    refused = powersync(*bmc_command(port, "--ca-file", emulator.tls.ca_file, "--system-id",
                                     emulator.on_system), "power", "status", env=wrong)  # fmt: skip
    line = one_error_line(refused, "Wrong-Guess-77", emulator.password)
    assert line.startswith(f"powersync: bmc 127.0.0.1:{port}: ") and "refused" in line

    untrusted = powersync(*bmc_command(port, "--password-file", str(secret)), "power", "status")
    line = one_error_line(untrusted, emulator.password)
    assert "TLS certificate not trusted" in line and "self-signed" in line
    assert "--ca-file" in line and "--insecure" in line


# ---- powersync bmc against our simulator ---------------------------------------------------


@pytest.mark.peers
def test_bmc_against_the_simulator(start_sim: Any) -> None:
    sim = start_sim("--driver", "redfish", "--nodes", "2", "--dead", "1")
    assert "2 Redfish BMCs on 127.0.0.1 HTTPS ports" in sim.line
    live, dead = sim.redfish()
    ca_file = live["redfish_verify_ca"]
    env = {"REDFISH_PASSWORD": PASSWORD}
    command = bmc_command(live["bmc_port"], "--ca-file", ca_file)

    result = powersync(*command, "power", "status", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "Chassis Power is off\n", "")
    result = powersync(*command, "power", "on", env=env)
    assert (result.returncode, result.stdout) == (0, "Chassis Power Control: Up/On\n")
    result = powersync(*command, "--json", "power", "status", env=env)
    document = json.loads(result.stdout)
    assert document["power"] == "on"
    # root, login, Systems, the system, and the session's DELETE: one TLS handshake.
    assert (document["logins"], document["tls_handshakes"], document["retries"]) == (1, 1, 0)
    assert document["requests"] == 5
    result = powersync(*command, "--system-id", live["redfish_system_id"], "power", "off", env=env)
    assert (result.returncode, result.stdout) == (0, "Chassis Power Control: Down/Off\n")
    assert powersync(*command, "power", "status", env=env).stdout == "Chassis Power is off\n"
    # --insecure skips verification (and says nothing about it on success).
    insecure = powersync(*bmc_command(live["bmc_port"], "--insecure"), "power", "status", env=env)
    assert insecure.returncode == 0 and insecure.stdout == "Chassis Power is off\n"

    wrong = powersync(*command, "power", "status", env={"REDFISH_PASSWORD": "Not-It-12"})
    line = one_error_line(wrong, "Not-It-12", PASSWORD)
    assert line.startswith(f"powersync: bmc 127.0.0.1:{live['bmc_port']}: the BMC refused")

    untrusted = powersync(*bmc_command(live["bmc_port"]), "power", "status", env=env)
    line = one_error_line(untrusted, PASSWORD)
    assert "self-signed" in line and "--ca-file" in line

    silent = powersync(*bmc_command(dead["bmc_port"], "--ca-file", ca_file, "--timeout", "1.5"),
                       "power", "status", env=env)  # fmt: skip
    line = one_error_line(silent, PASSWORD)
    assert line == f"powersync: bmc 127.0.0.1:{dead['bmc_port']}: no result within 1.5 s"


def test_options_of_the_other_protocol_are_a_one_line_usage_error() -> None:
    env = {"REDFISH_PASSWORD": PASSWORD, "IPMI_PASSWORD": PASSWORD}
    for command in (
        [*bmc_command(443, "--cipher-suite", "17"), "power", "status"],
        [*bmc_command(443, "--privilege", "user"), "power", "status"],
        ["bmc", "--host", "127.0.0.1", "--username", "admin", "--ca-file", "x.pem", "power",
         "status"],
        ["bmc", "--host", "127.0.0.1", "--username", "admin", "--insecure", "power", "status"],
    ):  # fmt: skip
        result = powersync(*command, env=env)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "option of" in result.stderr
    # No password anywhere: one line naming the Redfish form's default variable.
    refused = powersync(*bmc_command(free_tcp_port(), "--insecure"), "power", "status")
    assert refused.returncode == 1 and "REDFISH_PASSWORD" in refused.stderr


# ---- powersync sim --driver redfish: a real client, node import, sync --once --------------


def _sushy_reads_and_resets(url: str, system: str, ca_file: str) -> tuple[str, str]:
    import sushy  # type: ignore[import-untyped]
    from sushy import auth

    login = auth.SessionAuth(username="admin", password=PASSWORD)
    conn = sushy.Sushy(url + "/redfish/v1", auth=login, verify=ca_file)
    try:
        target = conn.get_system(system)
        before = target.power_state
        target.reset_system(sushy.ResetType.ON)
        target.refresh()
        return before, target.power_state
    finally:
        login.close()


@pytest.mark.peers
def test_sushy_reads_and_resets_a_system_of_powersync_sim(start_sim: Any) -> None:
    require_module("sushy")
    sim = start_sim("--driver", "redfish", "--nodes", "3")
    node = sim.redfish()[2]
    assert node["name"] == "sim-0002"
    before, after = _sushy_reads_and_resets(
        node["redfish_address"], node["redfish_system_id"], node["redfish_verify_ca"]
    )
    import sushy

    assert (before, after) == (sushy.PowerState.OFF, sushy.PowerState.ON)
    # And our one-shot command sees what sushy did.
    trust = ["--ca-file", node["redfish_verify_ca"], "--password-file", str(sim.password_file)]
    result = powersync(*bmc_command(node["bmc_port"], *trust), "power", "status")
    assert result.stdout == "Chassis Power is on\n", result.stderr


def write_config(path: Path, store: Path) -> None:
    path.write_text(
        "[conductor]\nsync_node_timeout = 5.0\nsync_jitter_window = 0.0\n"
        f'[store]\npath = "{store}"\n'
    )
    path.chmod(0o600)


def sync_once(tmp_path: Path) -> dict[str, Any]:
    once = powersync("--config", str(tmp_path / "agent.toml"), "sync", "--once", "--json")
    assert once.returncode == 0, once.stderr
    document: dict[str, Any] = json.loads(once.stdout)
    return document


def import_and_sync(tmp_path: Path, sim: Sim) -> dict[str, Any]:
    config = tmp_path / "agent.toml"
    write_config(config, tmp_path / "agent.sqlite")
    imported = powersync("--config", str(config), "node", "import", str(sim.inventory))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    return sync_once(tmp_path)


@pytest.mark.peers
def test_the_inventory_of_a_redfish_fleet_imports_and_syncs(start_sim: Any, tmp_path: Path) -> None:
    sim = start_sim("--driver", "redfish", "--nodes", "4", "--power-on")
    assert {node["redfish_verify_ca"] for node in sim.nodes} == {
        sim.line.split("; CA ", 1)[1].split(";", 1)[0]
    }
    assert all("bmc_password" not in node for node in sim.nodes)  # the file is named instead
    document = import_and_sync(tmp_path, sim)
    assert document["summary"]["nodes"] == 4
    assert {n["action"] for n in document["nodes"]} == {"record"}
    assert {n["new_state"] for n in document["nodes"]} == {"power on"}


def start_mixed(start_sim: Any, tmp_path: Path) -> Sim:
    sim: Sim = start_sim("--driver", "ipmi,redfish", "--nodes", "6", "--redfish-nodes", "2",
                         "--control-socket", str(tmp_path / "control.sock"))  # fmt: skip
    assert "4 IPMI BMCs" in sim.line and "2 Redfish BMCs" in sim.line
    names = [node["name"] for node in sim.nodes]
    assert names == [f"sim-{i:04d}" for i in range(6)]
    assert [node.get("driver", "ipmi") for node in sim.nodes] == ["ipmi"] * 4 + ["redfish"] * 2
    # One index space: the Redfish control socket takes the fleet's indexes 4 and 5.
    answer = send_control(str(tmp_path / "control.sock.redfish"),
                          {"op": "power", "bmcs": "5", "on": True})  # fmt: skip
    assert answer == {"ok": True, "changed": 1}
    return sim


MIXED_STATES = {**{f"sim-{i:04d}": "power off" for i in range(5)}, "sim-0005": "power on"}


@pytest.mark.peers
def test_the_inventory_of_a_mixed_fleet_imports_and_syncs(start_sim: Any, tmp_path: Path) -> None:
    document = import_and_sync(tmp_path, start_mixed(start_sim, tmp_path))
    assert {n["name"]: n["new_state"] for n in document["nodes"]} == MIXED_STATES


def recorded(store: Path) -> dict[str, str | None]:
    with open_store(str(store)) as opened:
        return {node.name: node.power_state for node in opened.list_nodes()}


def wait_until(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {within:g} s")


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("force", [True, False])
def test_run_keeps_a_mixed_fleet_with_a_power_action_beside_it(
    start_sim: Any, tmp_path: Path, force: bool
) -> None:
    sim = start_mixed(start_sim, tmp_path)  # sim-0000..3 IPMI, sim-0004..5 Redfish
    store, config = tmp_path / "agent.sqlite", tmp_path / "agent.toml"
    config.write_text(
        "[conductor]\nsync_power_state_interval = 1.0\nsync_node_timeout = 0.8\n"
        f"sync_jitter_window = 0.0\nforce_power_state_during_sync = {str(force).lower()}\n"
        f'[store]\npath = "{store}"\n'
    )
    config.chmod(0o600)
    imported = powersync("--config", str(config), "node", "import", str(sim.inventory))
    assert imported.returncode == 0, imported.stderr
    log = tmp_path / "daemon.log"
    with log.open("wb") as output:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "agent.cli.main", "--config", str(config), "run"],
            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: recorded(store) == MIXED_STATES, 20, "the first cycle")
        # Out of band, the Redfish BMC sim-0004 comes on.
        answer = send_control(str(tmp_path / "control.sock.redfish"),
                              {"op": "power", "bmcs": "4", "on": True})  # fmt: skip
        assert answer == {"ok": True, "changed": 1}
        node = next(n for n in sim.redfish() if n["name"] == "sim-0004")
        trust = ["--ca-file", node["redfish_verify_ca"], "--password-file", str(sim.password_file)]

        def bmc_says(word: str) -> bool:
            status = powersync(*bmc_command(node["bmc_port"], *trust), "power", "status")
            return status.stdout == f"Chassis Power is {word}\n"

        if force:  # Ironic's default: the hardware is driven back to the record
            wait_until(lambda: bmc_says("off"), 10, "the force back off")
            assert recorded(store)["sim-0004"] == "power off"
        else:  # the record follows the hardware
            wait_until(lambda: recorded(store)["sim-0004"] == "power on", 10, "the record")
        # A power action from the CLI beside the daemon, on the other Redfish node.
        action = powersync("--config", str(config), "power", "sim-0005", "off", "--wait")
        assert action.returncode == 0, action.stderr
        time.sleep(3.0)  # three cycles: nobody fights the action
        assert recorded(store)["sim-0005"] == "power off"
        target = next(n for n in sim.redfish() if n["name"] == "sim-0005")
        status = powersync(*bmc_command(target["bmc_port"], *trust), "power", "status")
        assert status.stdout == "Chassis Power is off\n"
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=15) == 0
    output_text = log.read_text()
    assert "Traceback" not in output_text and "not confirmed" not in output_text
    assert PASSWORD not in output_text
