"""``powersync node ...`` through agent.cli.main on a real SQLite store, and one real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config.options import load_config
from store import NodeChange, open_store

PASSWORD = "Bmc-pa55word"
INSTANCE = "4b3b9a57-0a53-4e5a-a1b7-1f4d0fb6f2c1"
ROOT = Path(__file__).resolve().parents[2]


class Cli:
    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.dir = tmp_path
        self.capsys = capsys
        self.config = tmp_path / "agent.toml"
        self.config.write_text('[store]\npath = "nodes.sqlite"\n')
        self.config.chmod(0o600)
        self.password_file = tmp_path / "bmc.pw"
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        status = main(["--config", str(self.config), *argv])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err
        assert PASSWORD not in out and PASSWORD not in err
        return status, out, err

    def fails(self, *argv: str) -> str:
        status, out, err = self(*argv)
        assert status == 1, (out, err)
        lines = err.splitlines()
        assert len(lines) == 1, err
        return lines[0]

    def add(self, name: str, *extra: str, port: int = 623) -> None:
        status, _, err = self(
            "node", "add", name, "--address", "127.0.0.1", "--port", str(port),
            "--username", "admin", "--password-file", str(self.password_file), *extra,
        )  # fmt: skip
        assert status == 0, err

    def store(self):  # type: ignore[no-untyped-def]
        return open_store(str(self.dir / "nodes.sqlite"))


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(tmp_path, capsys)


# ---- add, list, show ---------------------------------------------------------------------------


def test_add_list_show_with_password_masked(cli: Cli) -> None:
    status, out, _ = cli(
        "node", "add", "n1", "--address", "127.0.0.1", "--port", "6230", "--username", "admin",
        "--password-file", str(cli.password_file), "--cipher-suites", "3",
        "--privilege", "operator", "--instance-uuid", INSTANCE, "--session-mode", "per-cycle",
    )  # fmt: skip
    assert status == 0 and out.startswith("added node n1 (")
    with cli.store() as store:
        node = store.get_node("n1")
        # The node refers to the file (read at each login); the store holds no copy.
        assert node.bmc_password == ""
        assert dict(node.driver_info) == {"ipmi_password_file": str(cli.password_file)}
        assert (node.bmc_port, node.cipher_suites, node.privilege) == (6230, (3,), "operator")
        assert (node.instance_uuid, node.session_mode) == (INSTANCE, "per-cycle")

    status, out, _ = cli("node", "list")
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == [
        "NAME", "POWER", "STATE", "PROVISION", "STATE", "MAINTENANCE", "FAULT", "HEALTH",
        "DRIVER", "BMC",
    ]  # fmt: skip
    assert row.split() == ["n1", "unknown", "-", "no", "-", "-", "ipmi", "127.0.0.1:6230"]

    _, out, _ = cli("node", "show", "n1")
    assert "bmc_password:" in out and "******" in out
    assert "privilege:" in out and "operator" in out
    assert "driver:" in out and "provision_state:" in out and "health:" in out

    _, out, _ = cli("node", "show", "n1", "--json")
    document = json.loads(out)
    assert document["bmc_password"] == "******"
    assert document["name"] == "n1" and document["history"] == []
    assert document["driver"] == "ipmi"
    assert document["driver_info"] == {"ipmi_password_file": str(cli.password_file)}
    assert document["password_source"] == f"file {cli.password_file}"
    assert document["provision_state"] is None and document["health"] is None


def test_driver_and_provision_state_are_set_and_shown(cli: Cli) -> None:
    status, _, err = cli(
        "node", "add", "n1", "--driver", "ipmi", "--address", "127.0.0.1", "--username", "admin",
        "--password-file", str(cli.password_file), "--provision-state", "enroll",
    )  # fmt: skip
    assert status == 0, err
    with cli.store() as store:
        node = store.get_node("n1")
        assert (node.driver, node.bmc_port, node.provision_state) == ("ipmi", 623, "enroll")
    assert cli("node", "set", "n1", "--provision-state", "active")[0] == 0
    _, out, _ = cli("node", "list", "--json")
    assert json.loads(out)[0]["provision_state"] == "active"
    assert cli("node", "set", "n1", "--provision-state", "")[0] == 0
    with cli.store() as store:
        assert store.get_node("n1").provision_state is None


def test_defaults_come_from_ipmi_section(cli: Cli) -> None:
    cli.config.write_text(
        '[store]\npath = "nodes.sqlite"\n[ipmi]\ncipher_suites = [3]\nprivilege = "operator"\n'
    )
    cli.add("n1")
    with cli.store() as store:
        node = store.get_node("n1")
    assert node.cipher_suites == (3,) and node.privilege == "operator"
    assert node.session_mode is None  # follows [ipmi] session_mode at run time


def test_add_password_from_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N1_PW", "env-secret")
    status, _, _ = cli(
        "node", "add", "n1", "--address", "10.1.2.3", "--username", "root",
        "--password-env", "N1_PW",
    )  # fmt: skip
    assert status == 0
    with cli.store() as store:
        node = store.get_node("n1")
    # A reference, read at each login; never a copy unless --store-secret.
    assert node.bmc_password == "" and node.driver_info == {"ipmi_password_env": "N1_PW"}
    status, out, _ = cli("node", "show", "n1")
    assert "environment variable N1_PW" in out and "env-secret" not in out


def test_store_secret_copies_the_password(cli: Cli) -> None:
    status, _, err = cli(
        "node", "add", "n1", "--address", "10.1.2.3", "--username", "root",
        "--password-file", str(cli.password_file), "--store-secret",
    )  # fmt: skip
    assert status == 0, err
    with cli.store() as store:
        node = store.get_node("n1")
    assert node.bmc_password == PASSWORD and dict(node.driver_info) == {}
    _, out, _ = cli("node", "show", "n1", "--json")
    assert json.loads(out)["password_source"] == "stored in the store"
    assert PASSWORD not in out


def test_add_errors_are_one_line(cli: Cli) -> None:
    cli.add("n1")
    assert "node n1 already exists" in cli.fails(
        "node", "add", "n1", "--address", "127.0.0.1", "--username", "a",
        "--password-file", str(cli.password_file),
    )  # fmt: skip
    open_file = cli.dir / "open.pw"
    open_file.write_text("x\n")
    open_file.chmod(0o644)
    line = cli.fails(
        "node", "add", "n2", "--address", "127.0.0.1", "--username", "a",
        "--password-file", str(open_file),
    )  # fmt: skip
    assert "readable by other users" in line and "chmod 600" in line
    line = cli.fails(
        "node", "add", "n2", "--address", "127.0.0.1", "--username", "a",
        "--password-file", str(cli.password_file), "--cipher-suites", "17,0",
    )  # fmt: skip
    assert "node add n2: cipher_suites must not contain cipher suite 0" in line
    line = cli.fails(
        "node", "add", "n2", "--address", "999.1.1.1", "--username", "a",
        "--password-file", str(cli.password_file),
    )  # fmt: skip
    assert "bmc_address" in line
    assert "environment variable NOPE" in cli.fails(
        "node", "add", "n2", "--address", "127.0.0.1", "--username", "a", "--password-env", "NOPE"
    )


def test_password_is_never_accepted_on_argv(cli: Cli) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--config", str(cli.config), "node", "add", "n1", "--address", "127.0.0.1",
              "--username", "a", "--password", "x"])  # fmt: skip
    assert info.value.code == 2
    with pytest.raises(SystemExit):  # a password source is required
        main(["--config", str(cli.config), "node", "add", "n1", "--address", "127.0.0.1",
              "--username", "a"])  # fmt: skip
    cli.capsys.readouterr()


def test_list_filters_and_json(cli: Cli) -> None:
    cli.add("a")
    cli.add("b", "--instance-uuid", INSTANCE)
    cli.add("c")
    with cli.store() as store:
        c = store.get_node("c")
        store.apply([NodeChange(c.uuid, {"maintenance": True, "fault": "power failure",
                                         "maintenance_reason": "BMC silent"})])  # fmt: skip

    def names(*options: str) -> list[str]:
        status, out, _ = cli("node", "list", "--json", *options)
        assert status == 0
        return [node["name"] for node in json.loads(out)]

    assert names() == ["a", "b", "c"]
    assert names("--maintenance") == ["c"]
    assert names("--no-maintenance") == ["a", "b"]
    assert names("--fault", "power failure") == ["c"]
    assert names("--has-instance") == ["b"]
    assert names("--no-has-instance") == ["a", "c"]
    _, out, _ = cli("node", "list", "--json")
    assert all(node["bmc_password"] == "******" for node in json.loads(out))


def test_show_unknown_node_and_missing_store(cli: Cli) -> None:
    line = cli.fails("node", "list")
    assert "nodes.sqlite does not exist yet" in line
    assert not (cli.dir / "nodes.sqlite").exists()  # reads never create a store
    cli.add("a")
    assert cli.fails("node", "show", "nope") == "powersync: node nope: no such node"


# ---- set and delete ----------------------------------------------------------------------------


def test_set_maintenance_records_history(cli: Cli) -> None:
    cli.add("n1")
    status, out, _ = cli("node", "set", "n1", "--maintenance", "on", "--reason", "disk swap")
    assert status == 0 and "maintenance: yes (disk swap)" in out
    with cli.store() as store:
        node = store.get_node("n1")
        assert node.maintenance and node.maintenance_reason == "disk swap"
        store.apply([NodeChange(node.uuid, {"fault": "power failure", "sync_failures": 4})])
    status, _, _ = cli("node", "set", "n1", "--maintenance", "off")
    assert status == 0
    with cli.store() as store:
        node = store.get_node("n1")
        assert not node.maintenance and node.maintenance_reason is None
        assert node.fault is None and node.sync_failures == 0
    _, out, _ = cli("node", "show", "n1", "--json")
    history = json.loads(out)["history"]
    assert [entry["cause"] for entry in history] == ["operator", "operator"]
    assert history[0]["message"] == "maintenance off (fault 'power failure' cleared)"
    assert history[1]["message"] == "maintenance on: disk swap"
    _, out, _ = cli("node", "show", "n1")
    assert "history (newest first):" in out and "maintenance on: disk swap" in out


def test_set_inventory_fields(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.add("n1", "--instance-uuid", INSTANCE, "--session-mode", "per-cycle")
    monkeypatch.setenv("NEW_PW", "newer-secret")
    status, _, _ = cli(
        "node", "set", "n1", "--name", "n1b", "--address", "10.0.0.9", "--port", "1623",
        "--cipher-suites", "3 17", "--password-env", "NEW_PW", "--no-instance",
        "--session-mode", "default",
    )  # fmt: skip
    assert status == 0
    with cli.store() as store:
        node = store.get_node("n1b")
    assert (node.bmc_address, node.bmc_port, node.cipher_suites) == ("10.0.0.9", 1623, (3, 17))
    assert node.bmc_password == "" and dict(node.driver_info) == {"ipmi_password_env": "NEW_PW"}
    assert node.instance_uuid is None and node.session_mode is None


def test_set_errors(cli: Cli) -> None:
    cli.add("n1")
    cli.add("n2")
    assert "nothing to change" in cli.fails("node", "set", "n1")
    assert "--reason needs --maintenance on" in cli.fails("node", "set", "n1", "--reason", "x")
    assert "cipher suite 0" in cli.fails("node", "set", "n1", "--cipher-suites", "0")
    line = cli.fails("node", "set", "n1", "--name", "n2")
    assert line.startswith("powersync: node n1: ") and "n2" in line
    assert "bmc_port" in cli.fails("node", "set", "n1", "--port", "0")
    assert "no such node" in cli.fails("node", "set", "zz", "--maintenance", "on")


def test_delete_is_refused_while_locked(cli: Cli) -> None:
    cli.add("n1")
    with cli.store() as store:
        uuid = store.get_node("n1").uuid
        assert store.acquire_lock(uuid, "agent@host:123", ttl=600)
    line = cli.fails("node", "delete", "n1")
    assert "node n1 is locked by agent@host:123" in line and "not deleted" in line
    with cli.store() as store:
        assert store.release_lock(uuid, "agent@host:123")
    status, out, _ = cli("node", "delete", "n1")
    assert status == 0 and out.startswith("deleted node n1")
    assert "no such node" in cli.fails("node", "delete", "n1")


# ---- import ------------------------------------------------------------------------------------


def test_import_simulator_inventory(cli: Cli) -> None:
    from ipmi.sim.inventory import write_inventory

    path = cli.dir / "sim.toml"
    endpoints = [(f"sim-{i:04d}", "127.0.0.1", 20000 + i) for i in range(1, 4)]
    write_inventory(str(path), endpoints, "admin", PASSWORD)
    assert (path.stat().st_mode & 0o777) == 0o600
    status, out, _ = cli("node", "import", str(path))
    assert status == 0
    assert out.strip() == f"{path}: 3 added, 0 updated, 0 unchanged, 0 skipped, 0 failed"
    with cli.store() as store:
        nodes = store.list_nodes()
    assert [(n.name, n.bmc_port, n.bmc_password) for n in nodes] == [
        (name, port, PASSWORD) for name, _, port in endpoints
    ]
    # the same file again changes nothing; a changed port is an update
    status, out, _ = cli("node", "import", str(path), "--json")
    assert json.loads(out) | {"errors": []} == {
        "file": str(path), "dry_run": False, "added": 0, "updated": 0, "unchanged": 3,
        "skipped": 0, "failed": 0, "errors": [],
    }  # fmt: skip
    endpoints[0] = ("sim-0001", "127.0.0.1", 30001)
    write_inventory(str(path), endpoints, "admin", PASSWORD)
    _, out, _ = cli("node", "import", str(path), "--dry-run")
    assert "0 added, 1 updated, 2 unchanged" in out and "dry run" in out
    with cli.store() as store:
        assert store.get_node("sim-0001").bmc_port == 20001
    _, out, _ = cli("node", "import", str(path))
    with cli.store() as store:
        assert store.get_node("sim-0001").bmc_port == 30001


def test_import_toml_with_literal_password_must_be_private(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = cli.dir / "nodes.toml"
    path.write_text(
        '[[nodes]]\nname = "a"\nbmc_address = "127.0.0.1"\nbmc_username = "u"\n'
        f'bmc_password = "{PASSWORD}"\n'
        '[[nodes]]\nname = "b"\nbmc_address = "127.0.0.1"\nbmc_username = "u"\n'
        'bmc_password_env = "B_PW"\n'
    )
    path.chmod(0o644)
    monkeypatch.setenv("B_PW", "b-secret")
    status, out, err = cli("node", "import", str(path))
    assert status == 1
    assert "1 added" in out and "1 failed" in out
    assert err.strip() == (
        f"powersync: {path}: [[nodes]] #1 (a): bmc_password: a literal password needs a file "
        "only its owner can read (chmod 600), or use bmc_password_file / bmc_password_env"
    )


def test_import_csv_with_row_errors(cli: Cli) -> None:
    path = cli.dir / "fleet.csv"
    path.write_text(
        "name,bmc_address,bmc_port,bmc_username,bmc_password_file,cipher_suites,instance_uuid\n"
        f"r1,127.0.0.1,6231,admin,bmc.pw,17 3,{INSTANCE}\n"
        "r2,127.0.0.1,notaport,admin,bmc.pw,,\n"
        "\n"
        "r3,127.0.0.1,6233,admin,bmc.pw,3,\n"
        "r1,127.0.0.1,6234,admin,bmc.pw,3,\n"
        "r4,127.0.0.1,6235,admin,,,\n"
    )
    status, out, err = cli("node", "import", str(path))
    assert status == 1
    assert "2 added, 0 updated, 0 unchanged, 0 skipped, 3 failed" in out
    errors = err.splitlines()
    assert (
        errors[0] == f"powersync: {path}: row 3 (r2): bmc_port must be an integer (got 'notaport')"
    )
    assert errors[1] == f"powersync: {path}: row 6 (r1): name 'r1' is already used by row 2 (r1)"
    assert errors[2].startswith(f"powersync: {path}: row 7 (r4): no password")
    with cli.store() as store:
        r1 = store.get_node("r1")
        assert (r1.bmc_port, r1.cipher_suites, r1.instance_uuid) == (6231, (17, 3), INSTANCE)
        assert r1.bmc_password == PASSWORD
        assert store.get_node("r3").cipher_suites == (3,)


def test_import_csv_default_password_and_bad_header(cli: Cli) -> None:
    path = cli.dir / "fleet.csv"
    path.write_text("name,bmc_address,bmc_username\nx1,127.0.0.1,admin\n")
    status, out, _ = cli("node", "import", str(path), "--password-file", str(cli.password_file))
    assert status == 0 and "1 added" in out
    path.write_text("name,bmc_address,bmc_username,colour\nx1,127.0.0.1,admin,red\n")
    assert "row 1: unknown column 'colour'" in cli.fails("node", "import", str(path))
    path.write_text("name,bmc_username\n")
    assert "the header has no 'bmc_address' column" in cli.fails("node", "import", str(path))
    other = cli.dir / "fleet.txt"
    other.write_text("")
    assert "give --format toml|csv|json" in cli.fails("node", "import", str(other))
    assert "cannot read inventory" in cli.fails("node", "import", str(cli.dir / "no.csv"))


IRONIC_LIST = [
    {
        "UUID": "f6b1b1a6-1c1e-4a43-9f39-3d6a3c0e9b01",
        "Name": "rack1-node1",
        "Instance UUID": INSTANCE,
        "Power State": "power on",
        "Provisioning State": "active",
        "Maintenance": False,
        "Maintenance Reason": None,
        "Driver": "ipmi",
        "Driver Info": {
            "ipmi_address": "127.0.0.1",
            "ipmi_port": "6240",
            "ipmi_username": "admin",
            "ipmi_password": "******",
            "ipmi_priv_level": "OPERATOR",
            "ipmi_cipher_suite": 3,
            "deploy_kernel": "x",
        },
    },
    {
        "UUID": "0c2d4e6f-8a9b-4c1d-8e2f-3a4b5c6d7e8f",
        "Name": None,
        "Instance UUID": None,
        "Power State": "power off",
        "Maintenance": True,
        "Maintenance Reason": "fan",
        "Driver": "ipmi",
        "Driver Info": {"ipmi_address": "127.0.0.1", "ipmi_username": "admin"},
    },
    {
        "UUID": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
        "Name": "redfish-1",
        "Driver": "redfish",
        "Driver Info": {
            "redfish_address": "https://127.0.0.1:8443",
            "redfish_system_id": "/redfish/v1/Systems/1",
            "redfish_username": "root",
            "redfish_password": "******",
            "redfish_verify_ca": "False",
        },
    },
    {
        "UUID": "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a",
        "Name": "agent-only",
        "Driver": "fake-hardware",
        "Driver Info": {},
    },
]


def test_import_ironic_json(cli: Cli) -> None:
    path = cli.dir / "ironic.json"
    path.write_text(json.dumps(IRONIC_LIST))
    line = cli.fails("node", "import", str(path))
    assert "ipmi_password is masked in this file; give --password-file" in line
    status, out, err = cli("node", "import", str(path), "--password-file", str(cli.password_file))
    assert status == 0, err
    assert "3 added, 0 updated, 0 unchanged, 1 skipped, 0 failed" in out
    assert "(agent-only): skipped: no ipmi_address or redfish_address (driver fake-hardware)" in err
    with cli.store() as store:
        first = store.get_node("rack1-node1")
        second = store.get_node("node-0c2d4e6f-8a9b-4c1d-8e2f-3a4b5c6d7e8f")
        history = store.history("rack1-node1")
        redfish = store.get_node("redfish-1")
    # Ironic's node UUIDs are kept, so the operator's `node show <uuid>` finds the node.
    assert first.uuid == IRONIC_LIST[0]["UUID"] and second.uuid == IRONIC_LIST[1]["UUID"]
    status, out, _ = cli("node", "show", str(IRONIC_LIST[0]["UUID"]))
    assert status == 0 and "rack1-node1" in out
    assert redfish.uuid == IRONIC_LIST[2]["UUID"] and redfish.driver == "redfish"
    assert (redfish.bmc_address, redfish.bmc_port, redfish.bmc_username) == (
        "127.0.0.1",
        8443,
        "root",
    )
    assert redfish.driver_info == {
        "redfish_address": "https://127.0.0.1:8443",
        "redfish_system_id": "/redfish/v1/Systems/1",
        "redfish_verify_ca": False,
    }
    assert redfish.bmc_password == PASSWORD
    assert (first.bmc_port, first.privilege, first.cipher_suites) == (6240, "operator", (3,))
    assert first.instance_uuid == INSTANCE and first.power_state == "power on"
    assert first.bmc_password == PASSWORD
    assert second.bmc_port == 623 and second.power_state == "power off"
    assert second.maintenance and second.maintenance_reason == "fan"
    assert history[0].cause == "operator" and history[0].message == f"imported from {path}"


def test_import_json_errors(cli: Cli) -> None:
    path = cli.dir / "ironic.json"
    path.write_text("[{")
    assert "line 1: invalid JSON" in cli.fails("node", "import", str(path))
    path.write_text("42")
    assert "expected the JSON list" in cli.fails("node", "import", str(path))


# ---- the real executable -----------------------------------------------------------------------


def powersync_command() -> list[str]:
    script = Path(sys.executable).with_name("powersync")
    # CI installs the project (pip install -e .), which creates the script; a bare checkout
    # runs the same entry point as a module.
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli.main"]


def test_real_subprocess(cli: Cli) -> None:
    cli.add("n1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [*powersync_command(), "--config", str(cli.config), "node", "list", "--json"],
        capture_output=True, text=True, timeout=60, env=env, cwd=cli.dir, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert [node["name"] for node in json.loads(ok.stdout)] == ["n1"]
    bad = cli.dir / "bad.toml"
    bad.write_text("[conductor]\nsync_power_state_workers = -2\n")
    failed = subprocess.run(
        [*powersync_command(), "--config", str(bad), "node", "list"],
        capture_output=True, text=True, timeout=60, env=env, cwd=cli.dir, check=False,
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr == (
        f"powersync: {bad}: [conductor] sync_power_state_workers must be an integer >= 1 (got -2)\n"
    )


def test_config_used_is_the_one_given(cli: Cli) -> None:
    assert load_config(str(cli.config)).store.path == str(cli.dir / "nodes.sqlite")


def test_dry_run_without_a_store_creates_nothing(cli: Cli) -> None:
    path = cli.dir / "fleet.csv"
    path.write_text("name,bmc_address,bmc_username,bmc_password_file\nd1,127.0.0.1,a,bmc.pw\n")
    status, out, _ = cli("node", "import", str(path), "--dry-run", "--json")
    assert status == 0
    assert json.loads(out)["added"] == 1
    assert not (cli.dir / "nodes.sqlite").exists()


def test_closed_stdout_is_not_a_traceback(cli: Cli) -> None:
    cli.add("n1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [*powersync_command(), "--config", str(cli.config), "node", "show", "n1", "--json"]
    reader, writer = os.pipe()
    os.close(reader)  # like `powersync ... | head` after head has exited
    try:
        result = subprocess.run(
            command, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60, env=env,
            check=False,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert result.returncode == 141
    assert result.stderr == ""


def test_json_backend(cli: Cli) -> None:
    cli.config.write_text('[store]\nbackend = "json"\npath = "nodes.json"\n')
    cli.add("j1")
    status, _, _ = cli("node", "set", "j1", "--maintenance", "on", "--reason", "test")
    assert status == 0
    status, out, _ = cli("node", "list", "--json")
    assert [(n["name"], n["maintenance"]) for n in json.loads(out)] == [("j1", True)]
    assert (cli.dir / "nodes.json").stat().st_mode & 0o077 == 0
    status, out, _ = cli("status", "--json")
    assert json.loads(out)["maintenance"] == [{"name": "j1", "reason": "test", "fault": None}]
    assert cli("node", "delete", "j1")[0] == 0


def test_import_keeps_fields_the_file_leaves_out(cli: Cli) -> None:
    cli.add("k1", "--instance-uuid", INSTANCE, "--privilege", "operator", "--cipher-suites", "3")
    path = cli.dir / "k.csv"
    path.write_text("name,bmc_address,bmc_username,bmc_password_file\nk1,127.0.0.1,admin,bmc.pw\n")
    status, out, _ = cli("node", "import", str(path))
    assert status == 0 and "1 unchanged" in out
    path.write_text("name,bmc_address,bmc_username,bmc_password_file\nk1,127.0.0.2,admin,bmc.pw\n")
    status, out, _ = cli("node", "import", str(path))
    assert status == 0 and "1 updated" in out
    with cli.store() as store:
        node = store.get_node("k1")
    assert node.bmc_address == "127.0.0.2"
    assert (node.instance_uuid, node.privilege, node.cipher_suites) == (INSTANCE, "operator", (3,))


def test_ironic_import_keeps_the_power_failure_fault_and_the_provision_state(cli: Cli) -> None:
    # Found: "fault": "power failure" became an operator maintenance (never auto-recovered),
    # and provision_state was dropped, so an enroll node was synced.
    nodes = [
        {
            "UUID": "5b0f3f2e-6c1d-4e8a-9a55-0f7f2c1d4e01", "Name": "failed-1",
            "Driver": "ipmi", "Provision State": "active", "Power State": "power off",
            "Maintenance": True, "Maintenance Reason": "power sync failed",
            "Fault": "power failure",
            "Driver Info": {"ipmi_address": "127.0.0.1", "ipmi_username": "admin",
                            "ipmi_password": "******"},
        },
        {
            "UUID": "5b0f3f2e-6c1d-4e8a-9a55-0f7f2c1d4e02", "Name": "new-1",
            "Driver": "ipmi", "Provision State": "enroll", "Power State": None,
            "Maintenance": False, "Fault": None,
            "Driver Info": {"ipmi_address": "127.0.0.2", "ipmi_username": "admin",
                            "ipmi_password": "******"},
        },
    ]  # fmt: skip
    path = cli.dir / "ironic.json"
    path.write_text(json.dumps(nodes))
    status, _, err = cli("node", "import", str(path), "--password-file", str(cli.password_file))
    assert status == 0, err
    with cli.store() as store:
        failed, new = store.get_node("failed-1"), store.get_node("new-1")
    assert failed.maintenance and failed.fault == "power failure"
    assert (failed.provision_state, new.provision_state) == ("active", "enroll")
    assert not new.maintenance and new.fault is None


def test_import_redfish_nodes_with_ironic_names(cli: Cli) -> None:
    ca = cli.dir / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    path = cli.dir / "fleet.toml"
    path.write_text(
        "[[nodes]]\n"
        'name = "rf-1"\ndriver = "redfish"\nredfish_address = "https://[::1]:8000"\n'
        'redfish_username = "admin"\n'
        f'redfish_password_file = "{cli.password_file}"\n'
        'redfish_system_id = "/redfish/v1/Systems/437XR1138R2"\nredfish_verify_ca = "ca.pem"\n'
        "[[nodes]]\n"
        'name = "rf-2"\ndriver = "redfish"\nbmc_address = "127.0.0.1"\nbmc_port = 8001\n'
        f'bmc_username = "admin"\nbmc_password_file = "{cli.password_file}"\n'
        "cipher_suites = [17]\n"
        "[[nodes]]\n"
        'name = "ipmi-1"\nbmc_address = "127.0.0.1"\nbmc_username = "admin"\n'
        f'bmc_password_file = "{cli.password_file}"\nredfish_system_id = "1"\n'
    )
    status, out, err = cli("node", "import", str(path))
    assert status == 1 and "1 added, 0 updated, 0 unchanged, 0 skipped, 2 failed" in out
    assert "[[nodes]] #2 (rf-2): cipher_suites is an IPMI setting; this node's driver is" in err
    assert '#3 (ipmi-1): redfish_system_id is a Redfish setting; add driver = "redfish"' in err
    with cli.store() as store:
        node = store.get_node("rf-1")
    assert (node.driver, node.bmc_address, node.bmc_port) == ("redfish", "::1", 8000)
    assert node.driver_info == {
        "redfish_address": "https://[::1]:8000",
        "redfish_system_id": "/redfish/v1/Systems/437XR1138R2",
        "redfish_verify_ca": str(ca),  # relative to the file naming it
    }
    csv = cli.dir / "fleet.csv"
    csv.write_text(
        "name,driver,redfish_address,bmc_username,redfish_verify_ca\n"
        "rf-3,redfish,https://127.0.0.1:8003,admin,false\n"
        "rf-4,redfish,ftp://127.0.0.1,admin,true\n"
    )
    status, out, err = cli("node", "import", str(csv), "--password-file", str(cli.password_file))
    assert "1 added" in out and "1 failed" in out
    assert "row 3 (rf-4): redfish_address" in err and "not an https:// URL" in err
    with cli.store() as store:
        assert store.get_node("rf-3").driver_info["redfish_verify_ca"] is False


def test_add_a_redfish_node_with_its_system_and_ca(cli: Cli) -> None:
    ca = cli.dir / "bmc-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    status, out, err = cli(
        "node", "add", "rf-9", "--driver", "redfish", "--address", "https://127.0.0.1:8443",
        "--username", "root", "--password-file", str(cli.password_file),
        "--system-id", "/redfish/v1/Systems/1", "--ca-file", str(ca), "--json",
    )  # fmt: skip
    assert status == 0, err
    shown = json.loads(out)
    assert (shown["driver"], shown["bmc_address"], shown["bmc_port"]) == (
        "redfish",
        "127.0.0.1",
        8443,
    )
    assert shown["driver_info"]["redfish_system_id"] == "/redfish/v1/Systems/1"
    assert shown["driver_info"]["redfish_verify_ca"] == str(ca)
    assert shown["driver_info"]["redfish_address"] == "https://127.0.0.1:8443"
    assert shown["driver_info"]["redfish_password_file"] == str(cli.password_file)  # a reference
    line = cli.fails(
        "node", "add", "ipmi-9", "--address", "127.0.0.1", "--username", "admin",
        "--password-file", str(cli.password_file), "--insecure",
    )  # fmt: skip
    assert "redfish_verify_ca is a Redfish setting" in line
