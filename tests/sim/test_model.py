"""The simulated hardware (power transitions), fault settings and the inventory file."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from ipmi.proto.constants import CC_NOT_IN_PRESENT_STATE, CC_PARAMETER_OUT_OF_RANGE, ChassisAction
from ipmi.sim import Faults, PowerTiming, SimBmc, parse_selection, write_inventory


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(timing: PowerTiming, ignore_soft_off: bool = False) -> tuple[SimBmc, Clock]:
    clock = Clock()
    bmc = SimBmc(
        3,
        "127.0.0.1",
        20003,
        clock=clock,
        timing=timing,
        ignore_soft_off=lambda index: ignore_soft_off,
    )
    return bmc, clock


def test_power_on_takes_the_configured_time() -> None:
    bmc, clock = make(PowerTiming(power_on_delay=5.0))
    assert bmc.name == "sim-0003"
    assert bmc.chassis_control(ChassisAction.POWER_UP, clock.now) == 0
    assert not bmc.power_on and bmc.in_transition
    clock.now = 4.9
    assert not bmc.power_on
    clock.now = 5.0
    assert bmc.power_on and not bmc.in_transition


def test_cycle_goes_off_then_back_on() -> None:
    bmc, _clock = make(PowerTiming(power_off_delay=1.0, cycle_off_time=3.0))
    bmc.set_power(True)
    assert bmc.chassis_control(ChassisAction.POWER_CYCLE, 0.0) == 0
    assert [bmc.power_at(t) for t in (0.5, 1.0, 3.9, 4.0)] == [True, False, False, True]
    assert bmc.last_command == "cycle"


def test_cycle_and_reset_need_a_running_system() -> None:
    bmc, _clock = make(PowerTiming())
    assert bmc.chassis_control(ChassisAction.POWER_CYCLE, 0.0) == CC_NOT_IN_PRESENT_STATE
    assert bmc.chassis_control(ChassisAction.HARD_RESET, 0.0) == CC_NOT_IN_PRESENT_STATE
    bmc.set_power(True)
    assert bmc.chassis_control(ChassisAction.HARD_RESET, 0.0) == 0
    assert bmc.power_on
    assert bmc.chassis_control(0x0F, 0.0) == CC_PARAMETER_OUT_OF_RANGE


@pytest.mark.parametrize("ignored", [False, True])
def test_soft_off_unless_the_os_ignores_it(ignored: bool) -> None:
    bmc, clock = make(PowerTiming(soft_off_delay=2.0), ignore_soft_off=ignored)
    bmc.set_power(True)
    assert bmc.chassis_control(ChassisAction.SOFT_SHUTDOWN, 0.0) == 0
    clock.now = 1.0
    assert bmc.power_on
    clock.now = 2.0
    assert bmc.power_on is ignored


def test_out_of_band_change_cancels_a_pending_transition() -> None:
    bmc, clock = make(PowerTiming(power_on_delay=5.0))
    bmc.chassis_control(ChassisAction.POWER_UP, 0.0)
    bmc.set_power(False)
    clock.now = 10.0
    assert not bmc.power_on


def test_parse_selection() -> None:
    assert parse_selection("0,3,10-12") == {0, 3, 10, 11, 12}
    assert parse_selection("") == frozenset()
    for bad in ("x", "3-1", "-2", "1-"):
        with pytest.raises(ValueError, match="BMC"):
            parse_selection(bad)


def test_faults_validate_and_change() -> None:
    faults = Faults().changed({"loss": 0.3, "dead": "1-2", "slow": [4]})
    assert faults.loss == 0.3 and faults.dead == {1, 2} and faults.slow == {4}
    assert faults.delays_answers()
    assert faults.to_json()["dead"] == [1, 2]
    with pytest.raises(ValueError, match="unknown fault"):
        faults.changed({"explode": True})
    with pytest.raises(ValueError, match="between 0 and 1"):
        Faults(loss=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        Faults(latency=-1)


def test_inventory_is_0600_and_loads_as_nodes(tmp_path: Path) -> None:
    path = tmp_path / "nodes.toml"
    endpoints = [("sim-0000", "127.0.0.1", 20000), ("sim-0001", "127.0.0.1", 20001)]
    write_inventory(str(path), endpoints, "admin", 'pa"ss\\word', cipher_suites=(17, 3))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    nodes = tomllib.loads(path.read_text())["nodes"]
    assert nodes[1] == {
        "name": "sim-0001",
        "bmc_address": "127.0.0.1",
        "bmc_port": 20001,
        "bmc_username": "admin",
        "bmc_password": 'pa"ss\\word',
        "cipher_suites": [17, 3],
    }
    write_inventory(str(path), endpoints[:1], "admin", None, password_file="/etc/pw")
    assert tomllib.loads(path.read_text())["nodes"][0]["bmc_password_file"] == "/etc/pw"
    assert [p.name for p in tmp_path.iterdir()] == ["nodes.toml"]  # no temp files left


def test_fd_limit_beyond_the_hard_limit_is_a_clear_error() -> None:
    import resource

    from ipmi.sim import FleetError
    from ipmi.sim.fleet import ensure_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    with pytest.raises(FleetError, match="hard limit"):
        ensure_fd_limit(hard + 1)
    ensure_fd_limit(min(soft, hard))  # within the limit: nothing to do
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
