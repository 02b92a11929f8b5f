"""Our client against OpenIPMI's ipmi_sim, cross-checked with ipmitool and ipmipower.

ipmi_sim speaks cipher suite 3 but nothing with SHA-256, so suite 17 is proven elsewhere
(against our simulator, itself checked by ipmitool/ipmipower -C 17); here the default
preference (17, 3) must fall back cleanly to 3. The chassis power lives in a file that
ipmi_sim reads and writes through tests/peers/ipmi_sim_chassis.sh, so every test can see
what the BMC really did, independently of any IPMI client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ipmi import (
    AuthenticationError,
    CompletionCodeError,
    NegotiationError,
    RetryPolicy,
    open_bmc,
)
from tests.conftest import require_tool
from tests.peers import clients
from tests.peers.ipmi_sim import IpmiSimBmc, ipmi_sim_fleet

pytestmark = pytest.mark.peers

PASSWORD = "sim-Secret-42"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[IpmiSimBmc]:
    require_tool("ipmi_sim")
    with ipmi_sim_fleet(
        1,
        directory=tmp_path,
        password=PASSWORD,
        extra_users={"watcher": ("watch-Secret-1", "user")},
    ) as bmcs:
        yield bmcs[0]


def _open(bmc: IpmiSimBmc, **kwargs: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {"username": "admin", "password": PASSWORD}
    options.update(kwargs)
    return open_bmc(bmc.host, bmc.port, **options)  # type: ignore[arg-type]


async def _ipmitool_status(bmc: IpmiSimBmc) -> bool | None:
    require_tool("ipmitool")
    result = await clients.ipmitool(
        bmc.host, bmc.port, username="admin", password=PASSWORD, cipher_suite=3
    ).arun()
    assert result.ok, clients.describe(result)
    return result.power


async def _wait_for_power(bmc: IpmiSimBmc, on: bool) -> None:
    with trio.fail_after(10):
        while bmc.power_on != on:
            await trio.sleep(0.05)


async def test_status_on_off_with_suite_3_read_back_by_ipmitool(sim: IpmiSimBmc) -> None:
    async with _open(sim, cipher_suites=(3,)) as bmc:
        assert await bmc.get_power() is False
        await bmc.set_power("on")
        assert sim.power_on is True
        assert await _ipmitool_status(sim) is True
        assert await bmc.get_power() is True
        await bmc.set_power("off")
        assert sim.power_on is False
        assert await _ipmitool_status(sim) is False
        assert await bmc.get_power() is False
        stats = bmc.statistics()
    assert stats.logins == 1
    assert "set power 1" in sim.calls() and "set power 0" in sim.calls()


async def test_default_preference_falls_back_from_17_to_3(sim: IpmiSimBmc) -> None:
    sim.set_power(True)
    async with _open(sim) as bmc:  # (17, 3): ipmi_sim has no suite 17
        assert await bmc.get_power() is True
        assert bmc.statistics().logins == 1


async def test_suite_17_alone_is_a_negotiation_error(sim: IpmiSimBmc) -> None:
    with pytest.raises(NegotiationError) as caught:
        async with _open(sim, cipher_suites=(17,)):
            pytest.fail("ipmi_sim accepted suite 17")
    assert f"{sim.host}:{sim.port}" in str(caught.value)


async def test_changes_made_by_ipmitool_and_ipmipower_are_seen(sim: IpmiSimBmc) -> None:
    require_tool("ipmitool")
    require_tool("ipmipower")
    async with _open(sim) as bmc:
        assert await bmc.get_power() is False
        result = await clients.ipmitool(
            sim.host, sim.port, username="admin", password=PASSWORD, op="on"
        ).arun()
        assert result.ok, clients.describe(result)
        assert await bmc.get_power() is True
        result = await clients.ipmipower(
            sim.host, sim.port, username="admin", password=PASSWORD, op="off"
        ).arun()
        assert result.ok, clients.describe(result)
        assert await bmc.get_power() is False
        sim.set_power(True)  # out of band: the power button
        assert await bmc.get_power() is True


async def test_cycle_turns_the_power_off_then_on(sim: IpmiSimBmc) -> None:
    sim.set_power(True)
    async with _open(sim) as bmc:
        sim.clear_calls()
        await bmc.set_power("cycle")
        await _wait_for_power(sim, True)
        assert await bmc.get_power() is True
    sets = [call for call in sim.calls() if call.startswith("set")]
    assert sets[:2] == ["set power 0", "set power 1"]
    assert await _ipmitool_status(sim) is True


async def test_soft_and_reset(sim: IpmiSimBmc) -> None:
    sim.set_power(True)
    async with _open(sim) as bmc:
        await bmc.set_power("reset")
        assert "set reset 1" in sim.calls()
        assert await bmc.get_power() is True
        await bmc.set_power("soft")
        assert "set shutdown 1" in sim.calls()
        assert await bmc.get_power() is False


async def test_keepalive_and_many_requests_on_one_session(sim: IpmiSimBmc) -> None:
    async with _open(sim) as bmc:
        for _ in range(5):
            await bmc.keepalive()
            assert await bmc.get_power() is False
        stats = bmc.statistics()
    # One session served every request. (Retransmissions are not asserted: on a loaded
    # machine ipmi_sim can miss the 50 ms adaptive floor, and a resent read is harmless.)
    assert stats.logins == 1
    assert stats.requests >= 10


async def test_wrong_password_is_refused_at_once(
    sim: IpmiSimBmc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ipmi")
    with trio.fail_after(5):  # a retried login would wait 1+2+4+4 s
        with pytest.raises(AuthenticationError) as caught:
            async with _open(sim, password="not-the-password"):
                pytest.fail("logged in with a wrong password")
    assert f"{sim.host}:{sim.port}" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
    assert not [r for r in caplog.records if "retransmi" in r.getMessage()]
    assert not [r for r in caplog.records if "restarting" in r.getMessage()]


async def test_user_privilege_reads_but_cannot_control(sim: IpmiSimBmc) -> None:
    async with _open(sim, username="watcher", password="watch-Secret-1", privilege="user") as bmc:
        assert await bmc.get_power() is False
        with pytest.raises(CompletionCodeError) as caught:
            await bmc.set_power("on")
    assert caught.value.code == 0xD4  # insufficient privilege
    assert sim.power_on is False


async def test_a_rebooted_bmc_gets_a_new_session_transparently(sim: IpmiSimBmc) -> None:
    # Short, so the dead session is noticed quickly, yet roomy enough for a loaded machine.
    quick = RetryPolicy(first_timeout=0.5, backoff=4.0, max_timeout=2.0, retries=1)
    async with _open(sim, retry=quick) as bmc:
        assert await bmc.get_power() is False
        await trio.to_thread.run_sync(sim.restart)  # forgets every session
        sim.set_power(True)
        assert await bmc.get_power() is True
        stats = bmc.statistics()
    assert stats.logins == 2


async def test_datagrams_per_status(sim: IpmiSimBmc) -> None:
    """Fresh session: login + status + close; live session: one round trip per status."""

    # Counted net of retransmissions: on a loaded machine ipmi_sim can miss the 50 ms
    # adaptive floor, and a resent datagram is not a second request.
    def requests_sent() -> int:
        stats = bmc.statistics()
        return stats.sent - stats.retransmits

    async with _open(sim) as bmc:
        login = bmc.statistics()
        after_login = requests_sent()
        await bmc.get_power()
        one = requests_sent() - after_login
        await bmc.get_power()
        two = requests_sent() - after_login
        before_close = bmc.statistics()
    assert one == 1
    assert two == 2
    # Every request was answered (a late answer to a resent one may come on top).
    assert before_close.received >= before_close.sent - before_close.retransmits
    # Fall back 17 -> 3 costs one Open Session more than a BMC that speaks 17 (a handshake
    # restarted on a slow answer sends the steps again).
    assert login.sent <= 6 or login.retransmits > 0
