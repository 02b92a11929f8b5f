"""Real peers: OpenStack's sushy-tools emulator as a server for our client, and the sushy
client library (what Ironic uses) against our simulator. Loopback only, free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from redfish import AuthenticationError, BadReplyError, TLSError, open_redfish
from redfish.sim import open_fleet
from tests.conftest import require_module
from tests.redfish.peers import Emulator, run_sushy_emulator

pytestmark = pytest.mark.peers

# The fake driver applies a power change 1-11 s later (random); poll for at most this.
POWER_CHANGE_LIMIT = 20.0


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    with run_sushy_emulator(tmp_path) as running:
        yield running


# ---- our client against sushy-tools ------------------------------------------------------


async def test_read_both_systems_with_basic_auth(emulator: Emulator) -> None:
    for path, expected in ((emulator.off_system, False), (emulator.on_system, True)):
        with trio.fail_after(10):
            async with open_redfish(
                emulator.url,
                username=emulator.username,
                password=emulator.password,
                system_id=path,
                verify=emulator.tls.ca_file,
            ) as session:
                assert session.auth == "basic"  # sushy-tools has no SessionService
                assert await session.get_power() is expected
                assert await session.get_power() is expected
                stats = session.statistics()
                # Werkzeug's server speaks HTTP/1.0 and closes after every answer: one
                # handshake per request here (our simulator keeps the connection).
                assert stats.requests == 3  # the root, then two reads (no collection)
                assert stats.tls_handshakes == stats.connections == 3


async def test_power_on_and_off_are_reached(emulator: Emulator) -> None:
    async def drive(path: str, action: str, target: bool) -> float:
        async with open_redfish(
            emulator.url,
            username=emulator.username,
            password=emulator.password,
            system_id=path,
            verify=emulator.tls.ca_file,
        ) as session:
            started = trio.current_time()
            await session.set_power(action)
            with trio.fail_after(POWER_CHANGE_LIMIT):
                while await session.get_power() is not target:
                    await trio.sleep(0.5)
            return trio.current_time() - started

    took: dict[str, float] = {}

    async def run(path: str, action: str, target: bool) -> None:
        took[action] = await drive(path, action, target)

    async with trio.open_nursery() as nursery:  # both at once: the waits overlap
        nursery.start_soon(run, emulator.off_system, "on", True)
        nursery.start_soon(run, emulator.on_system, "off", False)
    assert set(took) == {"on", "off"}


async def test_without_the_ca_the_self_signed_certificate_is_refused(emulator: Emulator) -> None:
    with pytest.raises(TLSError) as caught, trio.fail_after(10):
        async with open_redfish(
            emulator.url, username=emulator.username, password=emulator.password
        ):
            pass
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(emulator.url.removeprefix("https://") + ": TLS certificate")
    assert "self-signed or from a private CA" in message
    assert 'redfish_verify_ca = "/path/ca.pem"' in message
    assert emulator.password not in message


async def test_wrong_password(emulator: Emulator) -> None:
    with pytest.raises(AuthenticationError) as caught, trio.fail_after(10):
        async with open_redfish(
            emulator.url,
            username=emulator.username,
            password="not-the-password",
            verify=emulator.tls.ca_file,
        ):
            pass
    assert "not-the-password" not in str(caught.value)


async def test_two_systems_and_no_system_id(emulator: Emulator) -> None:
    with pytest.raises(BadReplyError) as caught, trio.fail_after(10):
        async with open_redfish(
            emulator.url,
            username=emulator.username,
            password=emulator.password,
            verify=emulator.tls.ca_file,
        ):
            pass
    assert emulator.off_system in str(caught.value) and emulator.on_system in str(caught.value)


# ---- the sushy library against our simulator -----------------------------------------------


def _sushy_session(url: str, ca_file: str, password: str) -> dict[str, Any]:
    import sushy  # type: ignore[import-untyped]
    from sushy import auth

    login = auth.SessionAuth(username="admin", password=password)
    conn = sushy.Sushy(url + "/redfish/v1", auth=login, verify=ca_file)
    try:
        system = conn.get_system("/redfish/v1/Systems/1")
        before = system.power_state
        allowed = system.get_allowed_reset_system_values()
        system.reset_system(sushy.ResetType.ON)
        system.refresh()
        return {"before": before, "after": system.power_state, "allowed": allowed}
    finally:
        login.close()  # DELETE the session


async def test_sushy_reads_and_resets_our_simulator(tmp_path: Path) -> None:
    require_module("sushy")
    import sushy

    async with open_fleet(1, password="sim-password-9", tls_dir=str(tmp_path)) as fleet:
        bmc = fleet.bmcs[0]
        with trio.fail_after(30):
            seen = await trio.to_thread.run_sync(
                _sushy_session, bmc.url, fleet.ca_file, "sim-password-9"
            )
        assert seen["before"] == sushy.PowerState.OFF
        assert seen["after"] == sushy.PowerState.ON
        assert sushy.ResetType.FORCE_RESTART in seen["allowed"]
        assert bmc.power_on is True and bmc.last_reset == "On"
        assert bmc.logins == 1 and bmc.logouts == 1 and bmc.session_count() == 0
        assert fleet.errors == 0 and fleet.protocol_errors == 0


def _sushy_wrong_password(url: str, ca_file: str) -> str:
    import sushy
    from sushy import auth, exceptions

    try:
        sushy.Sushy(
            url + "/redfish/v1",
            auth=auth.SessionAuth(username="admin", password="wrong"),
            verify=ca_file,
        )
    except exceptions.AccessError as exc:
        return type(exc).__name__
    return "accepted"


async def test_sushy_is_refused_a_wrong_password(tmp_path: Path) -> None:
    require_module("sushy")
    async with open_fleet(1, password="sim-password-9", tls_dir=str(tmp_path)) as fleet:
        with trio.fail_after(30):
            outcome = await trio.to_thread.run_sync(
                _sushy_wrong_password, fleet.bmcs[0].url, fleet.ca_file
            )
        assert outcome == "AccessError"
        assert fleet.bmcs[0].session_count() == 0
