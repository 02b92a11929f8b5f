"""The Redfish simulator over real HTTPS on loopback, driven by our client: sessions and
their limit, faults, power transitions, the control socket, the inventory description."""

from __future__ import annotations

import json
import logging
import os
import stat
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from redfish import (
    AuthenticationError,
    NoResponseError,
    RequestRefusedError,
    SessionLimitError,
    TLSError,
    open_redfish,
    tls_context,
)
from redfish.client import CLOSE_GRACE, AuthMode, RedfishSession
from redfish.sim import (
    Faults,
    PowerTiming,
    ServiceOptions,
    describe_fleet,
    open_fleet,
    parse_selection,
    send_control,
)
from redfish.sim.fleet import FleetError

PASSWORD = "sim-test-password-1"


def client(
    url: str, ca_file: str, *, auth: AuthMode = "auto", system_id: str | None = None
) -> AbstractAsyncContextManager[RedfishSession]:
    return open_redfish(
        url, username="admin", password=PASSWORD, verify=ca_file, auth=auth, system_id=system_id
    )


async def test_a_status_is_one_request_on_a_live_session(tmp_path: Path) -> None:
    async with open_fleet(3, password=PASSWORD, tls_dir=str(tmp_path), power_on=True) as fleet:
        bmc = fleet.bmcs[1]
        with trio.fail_after(10):
            async with open_redfish(
                bmc.url, username="admin", password=PASSWORD, verify=fleet.ca_file
            ) as session:
                first = session.statistics()
                assert (first.tls_handshakes, first.logins) == (1, 1)
                before = bmc.requests
                for _ in range(10):
                    assert await session.get_power() is True
                assert bmc.requests - before == 10
                assert bmc.session_count() == 1
                assert session.statistics().tls_handshakes == 1  # one kept-alive connection
        assert bmc.session_count() == 0 and bmc.logouts == 1
        assert fleet.bmcs[0].requests == 0
        assert fleet.errors == 0 and fleet.protocol_errors == 0
        assert os.stat(fleet.tls.key_file).st_mode & 0o777 == 0o600


async def test_tls_without_the_ca_and_with_verify_off(tmp_path: Path) -> None:
    async with open_fleet(1, password=PASSWORD, tls_dir=str(tmp_path)) as fleet:
        url = fleet.bmcs[0].url
        with pytest.raises(TLSError, match="redfish_verify_ca"), trio.fail_after(10):
            async with open_redfish(url, username="admin", password=PASSWORD):
                pass
        with trio.fail_after(10):
            async with open_redfish(url, username="admin", password=PASSWORD, verify=False) as s:
                assert await s.get_power() is False
        assert fleet.tls_failures == 1
        assert fleet.session_count() == 0


def test_one_tls_context_per_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    from redfish.sim import make_tls_files

    make_tls_files(tmp_path)
    assert tls_context(str(ca)) is tls_context(str(ca))
    assert tls_context(str(tmp_path / "." / "ca.pem")) is tls_context(str(ca))
    assert tls_context(True) is tls_context(True)
    assert tls_context(False) is not tls_context(True)
    with pytest.raises(TLSError, match="does not exist"):
        tls_context(str(tmp_path / "missing.pem"))


async def test_session_limit_and_idle_expiry(tmp_path: Path) -> None:
    options = ServiceOptions(max_sessions=2, idle_timeout=0.5)
    async with open_fleet(1, password=PASSWORD, tls_dir=str(tmp_path), options=options) as fleet:
        bmc = fleet.bmcs[0]
        with trio.fail_after(10):
            async with client(bmc.url, fleet.ca_file), client(bmc.url, fleet.ca_file):
                assert bmc.session_count() == 2
                with pytest.raises(SessionLimitError, match="session table is full"):
                    async with client(bmc.url, fleet.ca_file):
                        pass
            assert bmc.session_count() == 0
            fleet.set_faults(sessions_full={0})
            with pytest.raises(SessionLimitError):
                async with client(bmc.url, fleet.ca_file):
                    pass
            fleet.set_faults(Faults())
            # A session left idle expires; the client logs in again on the 401.
            async with client(bmc.url, fleet.ca_file) as session:
                await trio.sleep(0.6)
                assert bmc.session_count() == 0
                await session.get_power()
                assert session.statistics().logins == 2
        assert bmc.session_count() == 0


async def test_wrong_password_fault(tmp_path: Path) -> None:
    async with open_fleet(2, password=PASSWORD, tls_dir=str(tmp_path)) as fleet:
        fleet.set_faults(wrong_password="1")
        with pytest.raises(AuthenticationError), trio.fail_after(10):
            async with client(fleet.bmcs[1].url, fleet.ca_file):
                pass
        with trio.fail_after(10):
            async with client(fleet.bmcs[0].url, fleet.ca_file):
                pass
        with pytest.raises(AuthenticationError), trio.fail_after(10):
            async with client(fleet.bmcs[1].url, fleet.ca_file, auth="basic"):
                pass


async def test_dead_and_hanging_bmcs_cost_the_callers_deadline(tmp_path: Path) -> None:
    async with open_fleet(2, password=PASSWORD, tls_dir=str(tmp_path)) as fleet:
        fleet.set_faults(dead={0}, hanging={1})
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.5):
            async with client(fleet.bmcs[0].url, fleet.ca_file):
                pass
        assert trio.current_time() - started < 0.5 + 1.0
        hanging = fleet.bmcs[1]
        with trio.fail_after(10):
            async with client(hanging.url, fleet.ca_file, system_id="1") as session:
                assert hanging.session_count() == 1  # the login works
                with pytest.raises(trio.TooSlowError), trio.fail_after(0.5):
                    await session.get_power()
                started = trio.current_time()
            assert trio.current_time() - started < CLOSE_GRACE + 1.0  # close is bounded
        # A hanging BMC never sees the DELETE: its session stays until it expires.
        assert hanging.session_count() == 1


async def test_slow_bmc_and_a_5xx_burst(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with open_fleet(2, password=PASSWORD, tls_dir=str(tmp_path)) as fleet:
        with trio.fail_after(20):
            async with client(fleet.bmcs[0].url, fleet.ca_file) as session:
                fleet.set_faults(slow={0}, slow_delay=0.3)
                started = trio.current_time()
                await session.get_power()
                assert trio.current_time() - started >= 0.3
                fleet.set_faults(Faults(server_errors={0}, error_burst=1, error_status=503))
                with caplog.at_level(logging.WARNING, logger="redfish.client"):
                    await session.get_power()
                assert session.statistics().retries == 1
                assert "HTTP 503; attempt 1 of 3" in caplog.text
                fleet.set_faults(Faults(server_errors={0}))
                with pytest.raises(RequestRefusedError, match="HTTP 500"):
                    await session.get_power()
                fleet.set_faults(Faults())
        assert fleet.session_count() == 0


async def test_power_transitions_read_powering_on_then_on(tmp_path: Path) -> None:
    timing = PowerTiming(power_on_delay=0.4, power_off_delay=0.2)
    async with open_fleet(1, password=PASSWORD, tls_dir=str(tmp_path), timing=timing) as fleet:
        bmc = fleet.bmcs[0]
        with trio.fail_after(10):
            async with client(bmc.url, fleet.ca_file) as session:
                await session.set_power("on")
                assert await session.get_power() is True  # PoweringOn counts as on
                assert session.last_power_state == "PoweringOn"
                assert bmc.power_on is False
                await trio.sleep(0.5)
                assert await session.get_power() is True
                assert session.last_power_state == "On"
                await session.set_power("off")
                assert await session.get_power() is False
                assert session.last_power_state == "PoweringOff"


async def test_tasks_and_action_info_over_https(tmp_path: Path) -> None:
    options = ServiceOptions(
        tasks=True, action_info=True, reset_types=("On", "ForceOff", "GracefulShutdown")
    )
    timing = PowerTiming(power_on_delay=0.6)
    async with open_fleet(
        1, password=PASSWORD, tls_dir=str(tmp_path), options=options, timing=timing
    ) as fleet:
        bmc = fleet.bmcs[0]
        with trio.fail_after(15):
            async with client(bmc.url, fleet.ca_file) as session:
                await session.set_power("on")  # 202 + Task, followed until Completed
                assert bmc.power_state == "On"
                await session.set_power("cycle")  # no ForceRestart: ForceOff, then On
                assert bmc.last_reset == "On"


async def test_flapping(tmp_path: Path) -> None:
    async with open_fleet(2, password=PASSWORD, tls_dir=str(tmp_path)) as fleet:
        fleet.set_faults(flapping={0}, flap_interval=0.1)
        seen: set[bool] = set()
        with trio.fail_after(5):
            while len(seen) < 2:
                seen.add(fleet.bmcs[0].power_on)
                await trio.sleep(0.05)
        assert fleet.bmcs[1].power_on is False


async def test_control_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    async with open_fleet(
        4, password=PASSWORD, tls_dir=str(tmp_path), control_socket=path
    ) as fleet:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

        def ask(request: dict[str, object]) -> dict[str, object]:
            return send_control(path, request, timeout=5)

        async def control(request: dict[str, object]) -> dict[str, object]:
            return await trio.to_thread.run_sync(ask, request)

        answer = await control({"op": "faults", "set": {"dead": "1-2", "error_burst": 3}})
        assert answer["ok"] is True
        assert fleet.faults.dead == {1, 2} and fleet.faults.error_burst == 3
        answer = await control({"op": "power", "bmcs": "0,3", "on": True})
        assert answer == {"ok": True, "changed": 2}
        assert [bmc.power_on for bmc in fleet.bmcs] == [True, False, False, True]
        listing = await control({"op": "list"})
        rows = listing["bmcs"]
        assert isinstance(rows, list) and rows[3]["power_state"] == "On"
        assert rows[0]["url"] == fleet.bmcs[0].url
        async with client(fleet.bmcs[0].url, fleet.ca_file):
            answer = await control({"op": "reboot", "bmcs": [0], "down_for": 0})
            assert answer == {"ok": True, "rebooted": 1}
            assert fleet.bmcs[0].session_count() == 0 and fleet.bmcs[0].boot_count == 1
        status = await control({"op": "status"})
        assert status["ok"] is True and isinstance(status["statistics"], dict)
        assert (await control({"op": "faults", "reset": True}))["faults"] == Faults().to_json()
        bad = await control({"op": "power", "bmcs": "9", "on": True})
        assert bad["ok"] is False and "no BMC with index 9" in str(bad["error"])
        assert (await control({"op": "explode"}))["ok"] is False
        assert json.dumps(await control({"op": "faults"}))


def test_describe_fleet_names_files_never_passwords(tmp_path: Path) -> None:
    async def run() -> list[dict[str, str | None]]:
        async with open_fleet(2, password=PASSWORD, tls_dir=str(tmp_path)) as fleet:
            return describe_fleet(fleet, password_file="/etc/pw")

    rows = trio.run(run)
    assert rows[1]["name"] == "sim-0001"
    assert rows[1]["address"] is not None and rows[1]["address"].startswith("https://127.0.0.1:")
    assert rows[1]["system_id"] == "/redfish/v1/Systems/1"
    assert rows[1]["verify_ca"] == str(tmp_path / "ca.pem")
    assert rows[1]["password_file"] == "/etc/pw" and rows[1]["username"] == "admin"
    assert PASSWORD not in json.dumps(rows)


async def test_fleet_refuses_non_loopback_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="non-loopback"):
        async with open_fleet(1, host="10.1.2.3", password=PASSWORD):
            pass
    with pytest.raises(ValueError):
        async with open_fleet(0, password=PASSWORD):
            pass
    with pytest.raises(ValueError, match="unknown fault"):
        Faults().changed({"loss": 0.5})
    assert parse_selection("0,3-4") == {0, 3, 4}
    with pytest.raises(ValueError):
        ServiceOptions(reset_types=("Explode",))


async def test_no_answer_from_a_closed_port(tmp_path: Path) -> None:
    from tests.redfish.peers import free_tcp_port

    port = free_tcp_port()
    with pytest.raises(NoResponseError, match="cannot connect"), trio.fail_after(10):
        async with open_redfish(
            f"https://127.0.0.1:{port}", username="admin", password=PASSWORD, verify=False
        ):
            pass
