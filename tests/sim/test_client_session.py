"""The core's ClientSession (client side) against our BMC side, both sans-I/O.

Symmetric bugs cancel out here, so this is only the last link of the chain: the peer
tests prove the BMC side against ipmitool/ipmipower/pyghmi, and the client engineer
proves the client against ipmi_sim and pyghmi's BMC.
"""

from __future__ import annotations

import pytest

from ipmi.errors import AuthenticationError, NegotiationError
from ipmi.proto.constants import ChassisAction, Command, NetFn, Privilege
from ipmi.proto.events import LoginComplete, LoginStep, Response, State
from ipmi.proto.messages import ChassisControlRequest, GetChassisStatusResponse
from ipmi.proto.server import BmcProtocol, ServerPolicy
from ipmi.proto.session import ClientSession
from ipmi.sim.bmc import PowerTiming, SimBmc
from tests.sim.console import PASSWORD, Clock, Entropy


def make_bmc(
    clock: Clock, password: bytes = PASSWORD, **policy: object
) -> tuple[BmcProtocol, SimBmc]:
    system = SimBmc(
        0, "127.0.0.1", 623, clock=clock, timing=PowerTiming(), ignore_soft_off=lambda index: False
    )
    users = {b"admin": password}
    bmc = BmcProtocol(
        ServerPolicy(**policy),
        guid=b"G" * 16,
        system=system,  # type: ignore[arg-type]
        credentials=users.get,
        random_bytes=Entropy(),
    )
    return bmc, system


def login(client: ClientSession, bmc: BmcProtocol, clock: Clock) -> LoginComplete:
    datagram = client.begin_login()
    for _ in range(10):
        answer = bmc.receive(datagram, clock.now)
        assert answer is not None
        event = client.receive(answer)
        if event is None:  # dropped: as a driver whose step wait then expires
            client.login_step_timed_out()
            raise AssertionError(f"login step dropped: {dict(client.drops)}")
        if isinstance(event, LoginComplete):
            return event
        assert isinstance(event, LoginStep), event
        datagram = event.datagram
    raise AssertionError("login did not finish")


def call(
    client: ClientSession, bmc: BmcProtocol, clock: Clock, netfn: int, cmd: int, data: bytes = b""
) -> Response:
    request_id, datagram = client.request(netfn, cmd, data)
    answer = bmc.receive(datagram, clock.now)
    assert answer is not None
    event = client.receive(answer)
    assert isinstance(event, Response) and event.request_id == request_id
    return event


@pytest.mark.parametrize(
    ("client_suites", "bmc_suites", "expected"),
    [((17, 3), (17, 3), 17), ((3,), (17, 3), 3), ((17, 3), (3,), 3)],
)
def test_client_session_logs_in_and_controls_power(
    client_suites: tuple[int, ...], bmc_suites: tuple[int, ...], expected: int
) -> None:
    clock = Clock()
    bmc, system = make_bmc(clock, cipher_suites=bmc_suites)
    client = ClientSession(
        username=b"admin", password=PASSWORD, cipher_suites=client_suites, entropy=Entropy()
    )
    done = login(client, bmc, clock)
    assert done.suite == expected and done.privilege == Privilege.ADMINISTRATOR
    status = call(client, bmc, clock, NetFn.CHASSIS, Command.GET_CHASSIS_STATUS)
    assert status.completion_code == 0
    assert not GetChassisStatusResponse.decode(status.data).power_on
    on = ChassisControlRequest(ChassisAction.POWER_UP).encode()
    assert call(client, bmc, clock, NetFn.CHASSIS, Command.CHASSIS_CONTROL, on).completion_code == 0
    assert system.power_on
    assert bmc.session_count(clock.now) == 1
    assert bmc.receive(client.close(), clock.now) is not None
    assert bmc.session_count(clock.now) == 0


def test_client_retransmit_of_a_power_action_is_not_repeated() -> None:
    clock = Clock()
    bmc, system = make_bmc(clock)
    client = ClientSession(username=b"admin", password=PASSWORD, entropy=Entropy())
    login(client, bmc, clock)
    system.set_power(True)
    cycle = ChassisControlRequest(ChassisAction.POWER_CYCLE).encode()
    request_id, datagram = client.request(NetFn.CHASSIS, Command.CHASSIS_CONTROL, cycle)
    assert bmc.receive(datagram, clock.now) is not None  # the answer is "lost"
    system.set_power(False)  # a second cycle would now fail with 0xD5
    answer = bmc.receive(client.retransmit(request_id), clock.now + 1)
    assert answer is not None
    event = client.receive(answer)
    assert isinstance(event, Response) and event.completion_code == 0
    assert not system.power_on


def test_wrong_password_is_an_authentication_error() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock, password=b"the-real-one")
    client = ClientSession(username=b"admin", password=PASSWORD, entropy=Entropy())
    with pytest.raises(AuthenticationError):
        login(client, bmc, clock)
    assert client.state is State.POISONED


def test_no_common_suite_is_a_negotiation_error() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock, cipher_suites=(3,))
    client = ClientSession(
        username=b"admin", password=PASSWORD, cipher_suites=(17,), entropy=Entropy()
    )
    with pytest.raises(NegotiationError):
        login(client, bmc, clock)
