"""A forged RAKP2 or RAKP4 racing the BMC's real answer must not end a good login.

The login's RAKP2 and RAKP4 are unauthenticated datagrams: anyone who saw the Open Session
exchange can send one with our tag and console session id ahead of the BMC. One whose code
does not verify is dropped and counted; the client keeps waiting for the real one, and
reports a wrong password only when the step's wait ends with nothing but such answers.
Everything runs on ipmi.testing's fake network on MockClock.
"""

from __future__ import annotations

import os

import pytest
import trio

from ipmi import AuthenticationError, MalformedPacketError, RetryPolicy, open_bmc
from ipmi.proto import messages as msg
from ipmi.proto import wire
from ipmi.proto.constants import PayloadType
from ipmi.testing import FakeEndpoint, FakeNetwork, open_fake_network

HOST, PORT, PASSWORD = "192.0.2.20", 623, "a-good-password"


class Forger:
    """A tap that answers RAKP1 (or RAKP3) with a forged RAKP2 (or RAKP4) at once, ahead
    of the BMC: right tag, right console session id, random code."""

    def __init__(self, payload: int) -> None:
        self.payload = payload  # PayloadType.RAKP1 or RAKP3: what to race
        self.console_session_id = 0
        self.forged = 0

    def __call__(self, direction: str, datagram: bytes, endpoint: FakeEndpoint) -> None:
        if direction != "to_bmc" or not wire.is_v2(datagram):
            return
        try:
            packet = wire.decode_v2(datagram)
        except MalformedPacketError:
            return  # in-session (authenticated): not the forger's business
        if packet.payload_type == PayloadType.OPEN_SESSION_REQUEST:
            request = msg.OpenSessionRequest.decode(packet.payload)
            self.console_session_id = request.console_session_id
        elif packet.payload_type == self.payload == PayloadType.RAKP1:
            tag = msg.Rakp1.decode(packet.payload).tag
            forged = msg.Rakp2(tag, 0, self.console_session_id, os.urandom(16), os.urandom(16),
                               os.urandom(32))  # fmt: skip
            endpoint.deliver(wire.encode_v2(PayloadType.RAKP2, forged.encode()))
            self.forged += 1
        elif packet.payload_type == self.payload == PayloadType.RAKP3:
            tag = msg.Rakp3.decode(packet.payload).tag
            forged4 = msg.Rakp4(tag, 0, self.console_session_id, os.urandom(16))
            endpoint.deliver(wire.encode_v2(PayloadType.RAKP4, forged4.encode()))
            self.forged += 1


def login(network: FakeNetwork, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return open_bmc(HOST, PORT, username="admin", password=password, connect=network.connect)


@pytest.mark.parametrize("racing", [PayloadType.RAKP1, PayloadType.RAKP3])
async def test_a_forged_answer_ahead_of_the_real_one_never_fails_the_login(
    autojump_clock: object, racing: int
) -> None:
    forger = Forger(racing)
    async with open_fake_network(tap=forger) as network:
        bmc = network.add_bmc(HOST, PORT, password=PASSWORD, power_on=True)
        for attempt in range(1, 6):
            async with login(network) as session:
                assert await session.get_power() is True
            stats = session.statistics()
            assert stats.logins == 1 and stats.retransmits == 0
            assert stats.forged_dropped == 1 and stats.drops >= 1
            assert forger.forged == attempt
        assert bmc.protocol.session_count(trio.current_time()) == 0


async def test_a_wrong_password_is_still_an_authentication_error_and_never_retried(
    autojump_clock: object,
) -> None:
    async with open_fake_network() as network:
        network.add_bmc(HOST, PORT, password="the-real-one")
        started = trio.current_time()
        with pytest.raises(AuthenticationError, match="wrong password") as caught:
            async with login(network):
                pytest.fail("logged in with a wrong password")
        waited = trio.current_time() - started
    assert 0 < waited <= RetryPolicy().first_timeout  # one step's wait, no retry
    assert network.labels().count("rakp1") == 1 and network.labels().count("open") == 1
    assert "the-real-one" not in str(caught.value) and PASSWORD not in str(caught.value)
    assert f"{HOST}:{PORT}" in str(caught.value)


async def test_a_forgery_with_a_wrong_password_is_still_a_wrong_password(
    autojump_clock: object,
) -> None:
    async with open_fake_network(tap=Forger(PayloadType.RAKP1)) as network:
        network.add_bmc(HOST, PORT, password="the-real-one")
        with pytest.raises(AuthenticationError, match="RAKP2"):
            async with login(network):
                pass
    assert network.labels().count("rakp1") == 1
