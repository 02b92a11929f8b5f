"""The client on httpx.MockTransport and trio's MockClock, against tests.redfish.fake.

Every test that opens a session checks, on the fake server's side, that no session is
left behind when the block is done, whatever went wrong inside it.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import trio

from redfish import (
    AuthenticationError,
    BadReplyError,
    NoResponseError,
    RequestRefusedError,
    SessionLimitError,
    UnsupportedActionError,
)
from redfish.client import CLOSE_GRACE, RetryPolicy, parse_address
from redfish.sim import PowerTiming, ServiceOptions
from tests.redfish.fake import PASSWORD, PEER, FakeBmc, hang, on, times

SYSTEM = "/redfish/v1/Systems/1"
SESSIONS = "/redfish/v1/SessionService/Sessions"


def json_response(status: int, doc: Any) -> httpx.Response:
    return httpx.Response(status, json=doc)


async def test_open_read_close_one_get_per_status(autojump_clock: object) -> None:
    bmc = FakeBmc(power_on=True)
    async with bmc.open() as session:
        assert session.system == SYSTEM and session.auth == "session"
        assert bmc.sessions == 1
        before = len(bmc.seen)
        for _ in range(5):
            assert await session.get_power() is True
        assert bmc.seen[before:] == [("GET", SYSTEM)] * 5
        assert session.last_health == "ok"
        stats = session.statistics()
        assert stats.logins == 1 and stats.sessions_opened == 1 and stats.retries == 0
    assert bmc.sessions == 0
    assert bmc.count("DELETE") == 1
    assert session.statistics().sessions_closed == 1
    assert PASSWORD not in repr(session)


async def test_every_request_says_identity_and_carries_the_token(autojump_clock: object) -> None:
    seen: list[httpx.Request] = []

    async def spy(request: httpx.Request) -> None:
        seen.append(request)

    bmc = FakeBmc()
    bmc.hooks.append(spy)
    async with bmc.open() as session:
        await session.get_power()
    assert all(request.headers["accept-encoding"] == "identity" for request in seen)
    read = next(r for r in seen if r.url.path == SYSTEM)
    assert read.headers["x-auth-token"] == "token-1"
    assert "authorization" not in read.headers


async def test_a_401_logs_in_again_once(autojump_clock: object) -> None:
    bmc = FakeBmc()
    async with bmc.open() as session:
        bmc.service.drop_sessions()  # the BMC rebooted, or expired us
        assert await session.get_power() is False
        assert session.statistics().logins == 2
        assert bmc.sessions == 1
    assert bmc.sessions == 0


async def test_a_401_after_the_new_login_is_an_authentication_error(
    autojump_clock: object,
) -> None:
    bmc = FakeBmc()
    async with bmc.open() as session:
        bmc.service.drop_sessions()
        bmc.password = "changed-by-someone"
        with pytest.raises(AuthenticationError) as caught:
            await session.get_power()
        assert session.statistics().logins == 2
    assert PEER in str(caught.value) and PASSWORD not in str(caught.value)
    assert bmc.sessions == 0


async def test_a_wrong_password_is_never_retried(autojump_clock: object) -> None:
    bmc = FakeBmc()
    bmc.password = "the-real-one"
    with pytest.raises(AuthenticationError, match=r"refused user 'admin'.*not retried"):
        async with bmc.open():
            pass
    assert bmc.count("POST", SESSIONS) == 1
    assert PASSWORD not in str(bmc.seen)


async def test_session_table_full_is_its_own_error(autojump_clock: object) -> None:
    bmc = FakeBmc(options=ServiceOptions(max_sessions=1))
    async with bmc.open():
        with pytest.raises(SessionLimitError, match="session table is full") as caught:
            async with bmc.open():
                pass
        assert "the number of user sessions exceeds" in str(caught.value)
        assert bmc.count("POST", SESSIONS) == 2  # a 503 from the session service: no retry
        assert bmc.sessions == 1
    assert bmc.sessions == 0


async def test_a_5xx_burst_is_retried_with_a_warning_per_retry(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    bmc = FakeBmc(power_on=True)
    async with bmc.open() as session:
        bmc.faults = bmc.faults.changed({"server_errors": {0}, "error_burst": 2})
        bmc.service.errors_sent = 0
        with caplog.at_level(logging.WARNING, logger="redfish.client"):
            started = trio.current_time()
            assert await session.get_power() is True
            waited = trio.current_time() - started
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert all(PEER in text and "HTTP 500" in text for text in warnings)
        assert "attempt 1 of 3" in warnings[0] and "attempt 2 of 3" in warnings[1]
        assert waited == pytest.approx(0.5 + 1.0)
        assert session.statistics().retries == 2
    assert bmc.sessions == 0


async def test_5xx_that_never_ends_gives_up_after_the_attempts(autojump_clock: object) -> None:
    bmc = FakeBmc()
    async with bmc.open() as session:
        bmc.faults = bmc.faults.changed({"server_errors": {0}})
        with pytest.raises(RequestRefusedError, match="HTTP 500") as caught:
            await session.get_power()
        assert caught.value.status == 500
        assert bmc.count("GET", SYSTEM) == 3
        bmc.faults = bmc.faults.changed({"server_errors": set()})  # so that logout works
    assert bmc.sessions == 0


async def test_a_retry_never_sleeps_past_the_callers_deadline(autojump_clock: object) -> None:
    bmc = FakeBmc()
    async with bmc.open() as session:
        bmc.faults = bmc.faults.changed({"server_errors": {0}})
        started = trio.current_time()
        with trio.fail_after(0.3), pytest.raises(RequestRefusedError):
            await session.get_power()  # backoff would be 0.5 s: the real error now instead
        assert trio.current_time() - started < 0.3
        assert bmc.count("GET", SYSTEM) == 1
        bmc.faults = bmc.faults.changed({"server_errors": set()})
    assert bmc.sessions == 0


async def test_connection_errors_are_retried_then_no_response(autojump_clock: object) -> None:
    async def refuse() -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    bmc = FakeBmc()
    async with bmc.open() as session:
        bmc.hooks.append(on("GET", SYSTEM, refuse))
        with pytest.raises(NoResponseError, match=f"{PEER}: read the system: cannot connect"):
            await session.get_power()
        assert session.statistics().retries == 2
    assert bmc.sessions == 0


async def test_a_reset_lost_in_flight_is_not_resent(autojump_clock: object) -> None:
    async def reset_by_peer() -> httpx.Response:
        raise httpx.ReadError("connection reset by peer")

    bmc = FakeBmc(power_on=True)
    target = f"{SYSTEM}/Actions/ComputerSystem.Reset"
    async with bmc.open() as session:
        bmc.hooks.append(on("POST", target, reset_by_peer))
        with pytest.raises(NoResponseError, match="connection lost"):
            await session.set_power("cycle")  # ForceRestart twice would reboot twice
        assert bmc.count("POST", target) == 1
        with pytest.raises(NoResponseError):
            await session.set_power("off")  # ForceOff twice ends the same: retried
        assert bmc.count("POST", target) == 1 + 3
    assert bmc.sessions == 0


async def test_a_hang_is_cut_by_the_callers_deadline_and_the_session_still_closes(
    autojump_clock: object,
) -> None:
    bmc = FakeBmc()
    async with bmc.open() as session:
        bmc.hooks.append(on("GET", SYSTEM, hang))
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(5.0):
                await session.get_power()
        assert trio.current_time() - started == pytest.approx(5.0)
    assert bmc.sessions == 0


async def test_cancelled_half_way_through_entering_leaks_no_session(
    autojump_clock: object,
) -> None:
    bmc = FakeBmc()
    bmc.hooks.append(on("GET", "/redfish/v1/Systems", hang))  # after the login
    with pytest.raises(trio.TooSlowError), trio.fail_after(3.0):
        async with bmc.open():
            raise AssertionError("never entered")
    assert bmc.count("POST", SESSIONS) == 1
    assert bmc.count("DELETE") == 1
    assert bmc.sessions == 0


async def test_a_login_answered_after_the_deadline_is_still_logged_out(
    autojump_clock: object,
) -> None:
    bmc = FakeBmc()

    async def late_login(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and request.url.path == SESSIONS:
            await trio.sleep(1.5)  # past the caller's deadline, within LOGIN_GRACE
        return None

    bmc.hooks.append(late_login)
    with pytest.raises(trio.TooSlowError), trio.fail_after(1.0):
        async with bmc.open():
            raise AssertionError("never entered")
    assert bmc.service.logins == 1
    assert bmc.sessions == 0


async def test_close_is_bounded_when_the_bmc_hangs(autojump_clock: object) -> None:
    bmc = FakeBmc()
    async with bmc.open():
        bmc.hooks.append(hang_everything)
        started = trio.current_time()
    assert trio.current_time() - started == pytest.approx(CLOSE_GRACE)


async def hang_everything(request: httpx.Request) -> httpx.Response | None:
    return await hang()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"this is {not json", "not JSON"),
        (b'["a list"]', "not an object"),
        (b'{"@odata.type": "#Chassis.v1_0_0.Chassis", "PowerState": "On"}', "ComputerSystem"),
        (b'{"@odata.type": "#ComputerSystem.v1_0_0.ComputerSystem"}', "PowerState missing"),
        (b'{"@odata.type": "#ComputerSystem.v1_0_0.ComputerSystem", "PowerState": "Unknown"}',
         "'Unknown' is not a power state"),
    ],
)  # fmt: skip
async def test_a_bad_system_body_is_a_bad_reply(
    autojump_clock: object, body: bytes, match: str
) -> None:
    async def garbage() -> httpx.Response:
        return httpx.Response(200, content=body)

    bmc = FakeBmc()
    async with bmc.open() as session:
        bmc.hooks.append(on("GET", SYSTEM, garbage))
        with pytest.raises(BadReplyError, match=match) as caught:
            await session.get_power()
        assert str(caught.value).startswith(f"{PEER}: {SYSTEM}: ")
    assert bmc.sessions == 0


async def test_a_reset_answered_409_counts_if_a_fresh_read_shows_the_state(
    autojump_clock: object,
) -> None:
    bmc = FakeBmc(options=ServiceOptions(conflicts=True), power_on=True)
    async with bmc.open() as session:
        await session.set_power("on")  # 409: already on -> the fresh read says On: done
        assert bmc.count("GET", SYSTEM) == 2  # the Reset target, then the fresh read
    assert bmc.sessions == 0


async def test_a_409_then_the_state_reached_later(autojump_clock: object) -> None:
    # iDRAC answers a power-on with 409 while busy, and powers on anyway.
    bmc = FakeBmc(timing=PowerTiming(power_on_delay=0.0))
    target = f"{SYSTEM}/Actions/ComputerSystem.Reset"

    async def busy_but_doing_it() -> httpx.Response:
        bmc.service.set_power(True)
        return json_response(
            409,
            {"error": {"code": "Base.1.12.GeneralError", "message": "busy"}},
        )

    async with bmc.open() as session:
        bmc.hooks.append(on("POST", target, busy_but_doing_it))
        await session.set_power("on")
        assert await session.get_power() is True
    assert bmc.sessions == 0


async def test_a_409_with_the_state_not_reached_is_refused(autojump_clock: object) -> None:
    bmc = FakeBmc(power_on=False)
    target = f"{SYSTEM}/Actions/ComputerSystem.Reset"

    async def conflict() -> httpx.Response:
        return json_response(
            409,
            {
                "error": {
                    "code": "Base.1.12.GeneralError",
                    "@Message.ExtendedInfo": [{"Message": "The system is\nbusy."}],
                }
            },
        )

    async with bmc.open() as session:
        bmc.hooks.append(on("POST", target, conflict))
        with pytest.raises(RequestRefusedError) as caught:
            await session.set_power("on")
        assert str(caught.value) == (
            f"{PEER}: Reset On refused (409: The system is busy.); the system is Off"
        )
        assert caught.value.status == 409
    assert bmc.sessions == 0


async def test_a_202_task_is_followed_to_completion(autojump_clock: object) -> None:
    bmc = FakeBmc(options=ServiceOptions(tasks=True), timing=PowerTiming(power_on_delay=3.0))
    async with bmc.open() as session:
        started = trio.current_time()
        await session.set_power("on")
        assert trio.current_time() - started >= 3.0
        assert bmc.count("GET", "/redfish/v1/TaskService/Tasks/1") >= 2
        assert await session.get_power() is True
        assert session.last_power_state == "On"
    assert bmc.sessions == 0


async def test_a_failed_task_is_refused_with_its_message(autojump_clock: object) -> None:
    bmc = FakeBmc(options=ServiceOptions(tasks=True))

    async def failed() -> httpx.Response:
        doc = {"TaskState": "Exception", "Messages": [{"Message": "power supply fault"}]}
        return json_response(200, doc)

    async with bmc.open() as session:
        bmc.hooks.append(on("GET", "/redfish/v1/TaskService/Tasks/1", failed))
        with pytest.raises(RequestRefusedError, match="task Exception: power supply fault"):
            await session.set_power("on")
    assert bmc.sessions == 0


async def test_action_info_is_read_once_and_cycle_without_force_restart(
    autojump_clock: object,
) -> None:
    options = ServiceOptions(action_info=True, reset_types=("On", "ForceOff", "GracefulShutdown"))
    bmc = FakeBmc(options=options, power_on=True, timing=PowerTiming(power_off_delay=1.0))
    target = f"{SYSTEM}/Actions/ComputerSystem.Reset"
    async with bmc.open() as session:
        await session.set_power("cycle")  # ForceOff, wait for Off, then On
        assert bmc.service.last_reset == "On"
        assert bmc.count("POST", target) == 2
        with pytest.raises(UnsupportedActionError, match="ForceRestart") as caught:
            await session.set_power("reset")
        assert PEER in str(caught.value)
        await session.set_power("soft")
        assert bmc.count("GET", f"{SYSTEM}/ResetActionInfo") == 1
    assert bmc.sessions == 0


async def test_unknown_action_is_a_value_error_before_any_request(autojump_clock: object) -> None:
    bmc = FakeBmc()
    async with bmc.open() as session:
        before = len(bmc.seen)
        with pytest.raises(ValueError, match="unknown power action"):
            await session.set_power("hibernate")
        assert len(bmc.seen) == before


async def test_basic_auth_where_there_is_no_session_service(autojump_clock: object) -> None:
    bmc = FakeBmc(options=ServiceOptions(session_service=False), power_on=True)
    async with bmc.open() as session:
        assert session.auth == "basic"
        assert await session.get_power() is True
        await session.keepalive()
    assert bmc.count("POST", SESSIONS) == 0  # the root names no sessions: none tried
    assert bmc.count("DELETE") == 0


async def test_auto_falls_back_to_basic_on_404_from_the_sessions_collection(
    autojump_clock: object,
) -> None:
    async def not_found() -> httpx.Response:
        return json_response(404, {"error": {"code": "Base.1.0.ResourceNotFound"}})

    bmc = FakeBmc()
    bmc.hooks.append(on("POST", SESSIONS, not_found))
    async with bmc.open() as session:
        assert session.auth == "basic"
        await session.get_power()
    assert bmc.sessions == 0


async def test_basic_auth_with_a_wrong_password(autojump_clock: object) -> None:
    bmc = FakeBmc()
    bmc.password = "another"
    with pytest.raises(AuthenticationError, match="HTTP 401; not retried"):
        async with bmc.open(auth="basic"):
            pass
    assert bmc.count("GET", "/redfish/v1/Systems") == 1


async def test_several_systems_without_system_id(autojump_clock: object) -> None:
    async def two() -> httpx.Response:
        members = [{"@odata.id": "/redfish/v1/Systems/a"}, {"@odata.id": "/redfish/v1/Systems/b"}]
        return json_response(200, {"Members": members})

    bmc = FakeBmc()
    bmc.hooks.append(on("GET", "/redfish/v1/Systems", two))
    with pytest.raises(BadReplyError, match=r"2 systems \(/redfish/v1/Systems/a, .*system_id"):
        async with bmc.open():
            pass
    assert bmc.sessions == 0
    async with bmc.open(system_id="1") as session:
        assert session.system == SYSTEM
    assert bmc.sessions == 0


async def test_keepalive_reads_the_session_resource(autojump_clock: object) -> None:
    bmc = FakeBmc()
    async with bmc.open() as session:
        await session.keepalive()
        assert bmc.seen[-1] == ("GET", f"{SESSIONS}/1")


async def test_session_limit_then_a_5xx_burst_on_login_is_retried(autojump_clock: object) -> None:
    async def broken() -> httpx.Response:
        return json_response(502, {})

    bmc = FakeBmc()
    bmc.hooks.append(times(1, on("POST", SESSIONS, broken)))
    async with bmc.open() as session:
        assert session.statistics().retries == 1
    assert bmc.sessions == 0


def test_addresses() -> None:
    assert parse_address("https://10.0.0.5") == ("https://10.0.0.5:443", "10.0.0.5:443")
    assert parse_address("127.0.0.1:8443") == ("https://127.0.0.1:8443", "127.0.0.1:8443")
    assert parse_address("https://[::1]:9000/") == ("https://[::1]:9000", "[::1]:9000")
    for bad in ("ftp://x", "https://u:p@host", "https://host:99999"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="password"):
        FakeBmc().open(password="")
    with pytest.raises(ValueError, match="auth"):
        FakeBmc().open(auth="digest")
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
