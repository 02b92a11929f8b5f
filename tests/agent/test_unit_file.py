"""packaging/systemd/powersync.service: the keys the daemon relies on, and systemd's own check."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "powersync.service"


def unit_keys() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values (systemd keys may repeat, so not configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_the_unit_is_a_notify_service_with_watchdog_reload_and_hardening() -> None:
    service = unit_keys()["Service"]

    def one(key: str) -> str:
        assert len(service.get(key, [])) == 1, key
        return service[key][0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("WatchdogSec").rstrip("s").isdigit()
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Restart") == "on-failure"
    assert one("User") == "powersync"
    assert one("StateDirectory") == "powersync"
    assert one("ConfigurationDirectory") == "powersync"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }.items():
        assert one(key) == value, key
    assert "@system-service" in service["SystemCallFilter"]
    # ExecStart runs the project's console script with the config in ConfigurationDirectory.
    argv = shlex.split(one("ExecStart"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(argv[0]).name in scripts
    assert argv[1:] == ["--config", "/etc/powersync/agent.toml", "run"]
    sysusers = (ROOT / "packaging" / "systemd" / "powersync.sysusers").read_text()
    assert "u powersync " in sysusers


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify also checks that ExecStart's program exists: point it at this venv's script.
    script = Path(sys.executable).with_name("powersync")
    assert script.exists(), script
    unit = tmp_path / "powersync.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/powersync", str(script)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # A key systemd cannot parse is only a warning (exit 0): any output is a failure here.
    assert result.returncode == 0 and not result.stdout + result.stderr, (
        result.stdout + result.stderr
    )
