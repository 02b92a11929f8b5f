"""The client's own HTTP/1.1 connection (redfish.http11) against the simulator over real
HTTPS: one connection kept alive, a new one when the server closed the idle one, and a
request made once however often it is sent."""

from __future__ import annotations

from pathlib import Path

import trio

from redfish import open_redfish
from redfish.http11 import Headers
from redfish.sim import ServiceOptions, open_fleet

PASSWORD = "http11-test-password-2"


async def test_one_connection_serves_every_read_and_one_request_is_made_once(
    tmp_path: Path,
) -> None:
    async with open_fleet(1, password=PASSWORD, tls_dir=str(tmp_path), power_on=True) as fleet:
        bmc = fleet.bmcs[0]
        with trio.fail_after(10):
            async with open_redfish(
                bmc.url, username="admin", password=PASSWORD, verify=fleet.ca_file
            ) as session:
                for _ in range(20):
                    assert await session.get_power() is True
                stats = session.statistics()
                assert (stats.connections, stats.tls_handshakes) == (1, 1)
                made = session._connection._made  # type: ignore[attr-defined]
                # root, login, systems list, the system: one request object each
                assert len(made) <= 4
        assert bmc.tls_handshakes == 1
        assert fleet.session_count() == 0  # logged out over the same connection


async def test_a_connection_the_server_closed_while_idle_is_replaced(tmp_path: Path) -> None:
    options = ServiceOptions(idle_timeout=0.2)  # the server drops idle keep-alives
    async with open_fleet(
        1, password=PASSWORD, tls_dir=str(tmp_path), options=options, power_on=True
    ) as fleet:
        with trio.fail_after(10):
            async with open_redfish(
                fleet.bmcs[0].url, username="admin", password=PASSWORD, verify=fleet.ca_file
            ) as session:
                await session.get_power()
                await trio.sleep(0.5)  # the server closed it; the session expired too
                assert await session.get_power() is True
                stats = session.statistics()
                assert stats.connections == 2
                assert stats.retries == 0  # noticed before sending, not after a failure


def test_headers_are_read_in_any_case() -> None:
    headers = Headers({"x-auth-token": "t", "location": "/redfish/v1/SessionService/1"})
    assert headers.get("X-Auth-Token") == "t"
    assert headers.get("LOCATION") == "/redfish/v1/SessionService/1"
    assert headers.get("Content-Type") is None
