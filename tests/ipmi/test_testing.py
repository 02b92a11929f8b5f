"""ipmi.testing, the public fake network and BMC, as another package's test would use it."""

from __future__ import annotations

import pytest
import trio

from ipmi import AuthenticationError, NoResponseError, RetryPolicy, open_bmc
from ipmi.proto.constants import ChassisAction
from ipmi.testing import FakeEndpoint, open_fake_network

HOST = "192.0.2.7"
QUICK = RetryPolicy(first_timeout=0.5, max_timeout=0.5, retries=1)


def session_to(network: object, **options: object):  # type: ignore[no-untyped-def]
    settings: dict[str, object] = {
        "username": "admin",
        "password": "pw",
        "retry": QUICK,
        "connect": network.connect,  # type: ignore[attr-defined]
    }
    settings.update(options)
    return open_bmc(HOST, 623, **settings)  # type: ignore[arg-type]


async def test_power_out_of_band_and_actions(autojump_clock: object) -> None:
    async with open_fake_network() as network:
        bmc = network.add_bmc(HOST, 623, password="pw", power_on=True)
        async with session_to(network) as session:
            assert await session.get_power() is True
            bmc.power_on = False
            assert await session.get_power() is False
            await session.set_power("on")
        assert bmc.power_on is True
        assert bmc.actions == [ChassisAction.POWER_UP]
        assert network.labels()[:3] == ["v15", "open", "rakp1"]
        assert network.labels()[-1] == "close"
        assert bmc.protocol.session_count(trio.current_time()) == 0
        assert "pw" not in repr(bmc)


async def test_hanging_bmc_logs_in_then_ignores_commands(autojump_clock: object) -> None:
    async with open_fake_network() as network:
        bmc = network.add_bmc(HOST, 623, password="pw")
        bmc.hanging = True
        async with session_to(network) as session:
            with pytest.raises(NoResponseError):
                await session.get_power()
            assert session.statistics().logins == 2  # the login works, every time


async def test_silent_bmc_and_an_empty_address_are_no_response(autojump_clock: object) -> None:
    async with open_fake_network() as network:
        network.add_bmc(HOST, 623, password="pw").silent = True
        with pytest.raises(NoResponseError):
            async with session_to(network):
                pass
        with pytest.raises(NoResponseError):
            async with open_bmc(
                "192.0.2.99", 623, username="admin", password="pw", retry=QUICK,
                connect=network.connect,
            ):  # fmt: skip
                pass
        assert "unreachable" in network.labels()


async def test_wrong_password_and_reboot(autojump_clock: object) -> None:
    async with open_fake_network() as network:
        bmc = network.add_bmc(HOST, 623, password="pw", power_on=True)
        bmc.wrong_password = True
        with pytest.raises(AuthenticationError):
            async with session_to(network):
                pass
        bmc.wrong_password = False
        async with session_to(network) as session:
            assert await session.get_power() is True
            bmc.reboot()
            assert await session.get_power() is True
            assert session.statistics().logins == 2


async def test_a_tap_sees_every_datagram_and_can_inject(autojump_clock: object) -> None:
    seen: list[str] = []

    def tap(direction: str, datagram: bytes, endpoint: FakeEndpoint) -> None:
        seen.append(direction)
        if direction == "to_bmc" and len(seen) == 1:
            endpoint.deliver(b"noise")  # arrives ahead of the real answer

    async with open_fake_network(tap=tap) as network:
        network.add_bmc(HOST, 623, password="pw")
        async with session_to(network) as session:
            await session.get_power()
        assert session.statistics().drops == 1
    assert seen.count("to_bmc") == len(network.labels("to_bmc"))
    assert seen.count("to_client") == len(network.labels("to_client"))


async def test_datagrams_in_flight_are_dropped_when_the_network_closes(
    autojump_clock: object,
) -> None:
    delayed = open_fake_network(rule=lambda direction, label, nth: (30.0,))
    started = trio.current_time()
    async with delayed as network:
        network.add_bmc(HOST, 623, password="pw")
        with trio.move_on_after(1):
            async with session_to(network):
                pass
    assert trio.current_time() - started == pytest.approx(1.0)
