"""Adaptive retransmission over real UDP: against OpenIPMI's ipmi_sim through a relay that
loses chosen datagrams, and against the project's simulator with its random-loss fault.

What these prove that the MockClock tests cannot: a BMC we did not write answers a resent
read (same rqSeq, new session sequence number) at once, a real socket's measured round
trips drive the RTO, and no answer is ever wrong. Nothing here asserts timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ipmi import NoResponseError, RetryPolicy, open_bmc
from ipmi.sim import open_fleet
from tests.conftest import require_tool
from tests.peers.ipmi_sim import IpmiSimBmc, ipmi_sim_fleet

PASSWORD = "sim-Secret-43"


class LossyRelay:
    """A UDP relay on a free loopback port, between one client and one BMC, that drops the
    next ``drop_requests`` datagrams to the BMC and the next ``drop_answers`` back."""

    def __init__(self, bmc_host: str, bmc_port: int) -> None:
        self._upstream = (bmc_host, bmc_port)
        self.port = 0
        self.drop_requests = 0
        self.drop_answers = 0
        self.dropped = 0
        self.forwarded = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        front = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        back = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with front, back:
            await front.bind(("127.0.0.1", 0))
            await back.connect(self._upstream)
            self.port = front.getsockname()[1]
            client: list[object] = []
            task_status.started()
            async with trio.open_nursery() as nursery:

                async def to_bmc() -> None:
                    while True:
                        datagram, address = await front.recvfrom(4096)
                        client[:] = [address]
                        if self.drop_requests:
                            self.drop_requests -= 1
                            self.dropped += 1
                            continue
                        self.forwarded += 1
                        await back.send(datagram)

                async def to_client() -> None:
                    while True:
                        datagram = await back.recv(4096)
                        if self.drop_answers:
                            self.drop_answers -= 1
                            self.dropped += 1
                            continue
                        if client:
                            self.forwarded += 1
                            await front.sendto(datagram, client[0])

                nursery.start_soon(to_bmc)
                nursery.start_soon(to_client)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[IpmiSimBmc]:
    require_tool("ipmi_sim")
    with ipmi_sim_fleet(1, directory=tmp_path, password=PASSWORD) as bmcs:
        yield bmcs[0]


@pytest.mark.peers
async def test_ipmi_sim_answers_adaptive_resends_of_lost_reads(sim: IpmiSimBmc) -> None:
    async with trio.open_nursery() as nursery:
        relay = LossyRelay(sim.host, sim.port)
        await nursery.start(relay.run)
        async with open_bmc(
            "127.0.0.1", relay.port, username="admin", password=PASSWORD, cipher_suites=(3,)
        ) as bmc:
            for read in range(12):
                on = read % 2 == 0
                sim.set_power(on)  # out of band, between reads
                if read % 3 == 1:
                    relay.drop_requests = 1  # the read never reaches ipmi_sim
                elif read % 3 == 2:
                    relay.drop_answers = 1  # ipmi_sim's answer is lost: it answers the resend
                assert await bmc.get_power() is on
            stats = bmc.statistics()
        nursery.cancel_scope.cancel()
    assert relay.dropped == 8
    assert stats.retransmits >= 8  # on a loaded machine a slow answer may be resent too
    assert stats.logins == 1
    assert stats.rtt_samples >= 5  # login steps and the reads answered at once
    assert stats.srtt is not None and stats.rttvar is not None
    assert stats.rto is not None and stats.rto >= RetryPolicy().min_timeout


@pytest.mark.peers
async def test_ipmi_sim_chassis_control_is_not_resent_early(sim: IpmiSimBmc) -> None:
    """A lost power-off request is resent only after the fixed first_timeout, once, and
    ipmi_sim powers off exactly once (its chassis log says so)."""
    async with trio.open_nursery() as nursery:
        relay = LossyRelay(sim.host, sim.port)
        await nursery.start(relay.run)
        sim.set_power(True)
        async with open_bmc(
            "127.0.0.1", relay.port, username="admin", password=PASSWORD, cipher_suites=(3,)
        ) as bmc:
            assert await bmc.get_power() is True
            # Counted from here: on a loaded machine the login or the read may miss the
            # 50 ms adaptive floor and be resent too; the control's fixed 1 s may not.
            before = bmc.statistics().retransmits
            sim.clear_calls()
            relay.drop_requests = 1
            await bmc.set_power("off")
            resent = bmc.statistics().retransmits - before
        nursery.cancel_scope.cancel()
    assert sim.power_on is False
    assert [call for call in sim.calls() if call.startswith("set power")] == ["set power 0"]
    assert resent == 1


async def test_simulator_with_random_loss_every_read_right() -> None:
    """Our simulator over real UDP, each read's datagrams lost with 10 % probability either
    way: every read is the power of that moment (the rare NoResponseError is allowed).

    The logins run loss-free: at this loss a login fails about one time in ten (at most 4
    handshake runs may open a session, and a run is 5 round trips), and the seed cannot
    make that deterministic once a loaded machine resends a datagram early."""
    async with open_fleet(4, password=PASSWORD, seed=5) as fleet:
        retransmits = answered = 0
        for sim in fleet.bmcs:
            fleet.set_faults(loss=0.0, answer_loss=0.0)
            async with open_bmc(sim.address, sim.port, username="admin", password=PASSWORD) as s:
                fleet.set_faults(loss=0.1, answer_loss=0.1)
                for read in range(10):
                    on = read % 3 == 0
                    sim.set_power(on)
                    try:
                        assert await s.get_power() is on
                        answered += 1
                    except NoResponseError:
                        pass
                retransmits += s.statistics().retransmits
    assert answered >= 36
    assert retransmits > 0
