"""Our trio client (``ipmi.open_bmc``) against the simulator over real loopback sockets.

The last link of the suite-17 chain (independent clients accept the simulator in
test_peers.py; here our client accepts it), plus faults as the agent will meet them.
"""

from __future__ import annotations

import pytest
import trio

from ipmi import AuthenticationError, NoResponseError, RetryPolicy, open_bmc
from tests.sim.console import checked_fleet

SECRET = "s3cret-pass"
FAST = RetryPolicy(first_timeout=0.2, backoff=1.5, max_timeout=0.5, retries=6)


@pytest.mark.parametrize("suite", [17, 3])
async def test_open_bmc_controls_a_simulated_bmc(suite: int) -> None:
    async with checked_fleet(2, password=SECRET) as fleet:
        bmc = fleet.bmcs[1]
        async with open_bmc(
            bmc.address,
            bmc.port,
            username="admin",
            password=SECRET,
            cipher_suites=(suite,),
            retry=FAST,
        ) as session:
            assert await session.get_power() is False
            await session.set_power("on")
            assert bmc.power_on and not fleet.bmcs[0].power_on
            assert (await session.chassis_status()).power_on
            await session.keepalive()
            assert fleet.session_count() == 1
        assert fleet.session_count() == 0  # Close Session on exit


async def test_open_bmc_retransmits_through_loss_inside_a_session() -> None:
    async with checked_fleet(1, password=SECRET, seed=3, power_on=True) as fleet:
        bmc = fleet.bmcs[0]
        with trio.fail_after(60):
            async with open_bmc(
                bmc.address, bmc.port, username="admin", password=SECRET, retry=FAST
            ) as session:
                fleet.set_faults(loss=0.2, answer_loss=0.2)
                for _ in range(10):
                    assert await session.get_power() is True
                await session.set_power("cycle")
                assert bmc.last_command == "cycle"
                fleet.set_faults(loss=0.0, answer_loss=0.0)
        assert fleet.lost > 0
        assert session.statistics().retransmits > 0


async def test_open_bmc_logs_in_through_loss_when_the_bmc_has_spare_slots() -> None:
    """Each restarted handshake leaves a half-open login on the BMC until its 10 s login
    timeout; with the default 4 slots, 20% loss each way can exhaust them (the client then
    gets "insufficient resources"), so this BMC has 16 (see docs/simulator.md)."""
    faults = {"loss": 0.2, "answer_loss": 0.2}
    async with checked_fleet(1, password=SECRET, seed=3, faults=faults, max_sessions=16) as fleet:
        bmc = fleet.bmcs[0]
        with trio.fail_after(60):
            async with open_bmc(
                bmc.address, bmc.port, username="admin", password=SECRET, retry=FAST
            ) as session:
                assert await session.get_power() is False
        assert fleet.lost > 0


async def test_open_bmc_wrong_password_and_dead_bmc() -> None:
    async with checked_fleet(
        2, password=SECRET, faults={"wrong_password": {0}, "dead": {1}}
    ) as fleet:
        wrong, dead = fleet.bmcs
        with pytest.raises(AuthenticationError):
            async with open_bmc(
                wrong.address, wrong.port, username="admin", password=SECRET, retry=FAST
            ):
                pass
        with pytest.raises(NoResponseError):
            async with open_bmc(
                dead.address,
                dead.port,
                username="admin",
                password=SECRET,
                retry=RetryPolicy(0.1, 1.0, 0.1, 1),
            ):
                pass
