"""Our client against pyghmi's BMC class (``pyghmi.ipmi.bmc.Bmc``), cross-checked with ipmitool.

pyghmi's server speaks cipher suite 3 only. Two flavours run here (see
tests/peers/pyghmi_bmc.py): one that rejects other proposals like a real BMC (status 0x11),
where the default preference (17, 3) must fall back to 3; and the shipped behaviour, which
answers a suite-17 proposal with suite-3 algorithms and "no error" -- a client that does not
check the answer against its proposal breaks (pyghmi's own client crashes there).
"""

from __future__ import annotations

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
from tests.conftest import require_module, require_tool
from tests.peers import clients
from tests.peers.pyghmi_bmc import PyghmiBmc, PyghmiFleet, pyghmi_bmc_fleet

pytestmark = pytest.mark.peers

PASSWORD = "pyg-Secret-7"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PyghmiFleet]:
    require_module("pyghmi")
    with pyghmi_bmc_fleet(
        1, directory=tmp_path_factory.mktemp("pyghmi"), password=PASSWORD
    ) as running:
        yield running


@pytest.fixture
def pyg(fleet: PyghmiFleet) -> PyghmiBmc:
    if not fleet.alive():
        fleet.restart()
    bmc = fleet.bmcs[0]
    bmc.set_power(False)
    return bmc


@pytest.fixture
def stock(tmp_path: Path) -> Iterator[PyghmiBmc]:
    require_module("pyghmi")
    with pyghmi_bmc_fleet(
        1, directory=tmp_path, password=PASSWORD, accept_any_cipher=True, power_on=True
    ) as running:
        yield running.bmcs[0]


def _open(bmc: PyghmiBmc, **kwargs: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {"username": "admin", "password": PASSWORD}
    options.update(kwargs)
    return open_bmc(bmc.host, bmc.port, **options)  # type: ignore[arg-type]


async def _ipmitool(bmc: PyghmiBmc, op: str = "status") -> clients.ClientResult:
    require_tool("ipmitool")
    result = await clients.ipmitool(
        bmc.host, bmc.port, username="admin", password=PASSWORD, cipher_suite=3, op=op
    ).arun()
    assert result.ok, clients.describe(result)
    return result


async def test_status_on_off_cycle_with_suite_3(pyg: PyghmiBmc) -> None:
    async with _open(pyg, cipher_suites=(3,)) as bmc:
        assert await bmc.get_power() is False
        await bmc.set_power("on")
        assert pyg.power_on is True
        assert (await _ipmitool(pyg)).power is True
        await bmc.set_power("off")
        assert pyg.power_on is False
        assert (await _ipmitool(pyg)).power is False
        await bmc.set_power("cycle")
        assert pyg.power_on is True
        assert await bmc.get_power() is True
        assert bmc.statistics().logins == 1
    assert pyg.calls()[-3:-1] == ["set power 0", "set power 1"]


async def test_default_preference_falls_back_from_17_to_3(pyg: PyghmiBmc) -> None:
    pyg.set_power(True)
    async with _open(pyg) as bmc:
        assert await bmc.get_power() is True


async def test_suite_17_alone_is_a_negotiation_error(pyg: PyghmiBmc) -> None:
    with pytest.raises(NegotiationError):
        async with _open(pyg, cipher_suites=(17,)):
            pytest.fail("pyghmi's BMC accepted suite 17")


async def test_changes_made_by_ipmitool_are_seen(pyg: PyghmiBmc) -> None:
    async with _open(pyg) as bmc:
        assert await bmc.get_power() is False
        await _ipmitool(pyg, "on")
        assert await bmc.get_power() is True
        await _ipmitool(pyg, "off")
        assert await bmc.get_power() is False


async def test_reset_while_off_is_a_completion_code_error(pyg: PyghmiBmc) -> None:
    async with _open(pyg) as bmc:
        with pytest.raises(CompletionCodeError) as caught:
            await bmc.set_power("reset")
        assert caught.value.code == 0xD5
        assert await bmc.get_power() is False  # the session survives a refused command


async def test_wrong_password_is_refused_at_once(pyg: PyghmiBmc) -> None:
    with trio.fail_after(5):  # a retried login would wait 1+2+4+4 s
        with pytest.raises(AuthenticationError) as caught:
            async with _open(pyg, password="wrong-Password"):
                pytest.fail("logged in with a wrong password")
    assert "wrong-Password" not in str(caught.value)
    assert f"{pyg.host}:{pyg.port}" in str(caught.value)


async def test_a_restarted_bmc_gets_a_new_session_transparently(
    pyg: PyghmiBmc, fleet: PyghmiFleet
) -> None:
    # Short, so the dead session is noticed quickly, yet roomy enough for a loaded machine.
    quick = RetryPolicy(first_timeout=0.5, backoff=4.0, max_timeout=2.0, retries=1)
    async with _open(pyg, retry=quick) as bmc:
        assert await bmc.get_power() is False
        await trio.to_thread.run_sync(fleet.restart)
        pyg.set_power(True)
        assert await bmc.get_power() is True
        assert bmc.statistics().logins == 2


async def test_shipped_server_answering_suite_3_to_a_17_proposal(stock: PyghmiBmc) -> None:
    """The shipped pyghmi server says "yes" to suite 17 and then speaks suite 3. Offering 17
    alone must be refused; with (17, 3) the client must end up on 3 and work."""
    with pytest.raises(NegotiationError):
        async with _open(stock, cipher_suites=(17,)):
            pytest.fail("accepted an Open Session Response that does not match the proposal")
    async with _open(stock, cipher_suites=(17, 3)) as bmc:
        assert await bmc.get_power() is True
        await bmc.set_power("off")
    assert stock.power_on is False
