"""The BMC-side protocol machine (ipmi.proto.server), driven without sockets.

A small scripted console built from the core's messages and crypto logs in, so every
check is on bytes the machine really produced; clocks and entropy are deterministic.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipmi.errors import MalformedPacketError
from ipmi.proto import crypto, server, wire
from ipmi.proto.constants import (
    CC_INVALID_COMMAND,
    CC_NOT_IN_PRESENT_STATE,
    ChassisAction,
    Command,
    NetFn,
    PayloadType,
    RmcpPlusStatus,
)
from ipmi.proto.messages import (
    ChassisControlRequest,
    CloseSessionRequest,
    GetChannelAuthCapabilitiesRequest,
    GetChannelAuthCapabilitiesResponse,
    GetChassisStatusResponse,
    OpenSessionRequest,
    OpenSessionResponse,
    SetSessionPrivilegeLevelRequest,
)
from ipmi.proto.server import (
    BmcProtocol,
    ServerPolicy,
    is_session_packet,
)
from ipmi.sim.bmc import PowerTiming, SimBmc
from tests.sim.console import PASSWORD, Clock, Console, Entropy

GUID = bytes(range(16))


def make_bmc(clock: Clock, **policy: object) -> tuple[BmcProtocol, SimBmc]:
    system = SimBmc(
        0,
        "127.0.0.1",
        623,
        clock=clock,
        timing=PowerTiming(),
        ignore_soft_off=lambda index: False,
    )
    users = {b"admin": PASSWORD}
    protocol = BmcProtocol(
        ServerPolicy(**policy),  # type: ignore[arg-type]
        guid=GUID,
        system=system,
        credentials=users.get,
        random_bytes=Entropy(),
    )
    return protocol, system


@pytest.mark.parametrize("suite_id", [3, 17])
def test_login_and_power_commands(suite_id: int) -> None:
    clock = Clock()
    bmc, system = make_bmc(clock)
    console = Console(bmc, clock, suite_id)
    console.login()
    code, data = console.request(NetFn.CHASSIS, Command.GET_CHASSIS_STATUS)
    assert code == 0 and not GetChassisStatusResponse.decode(data).power_on
    on = ChassisControlRequest(ChassisAction.POWER_UP).encode()
    assert console.request(NetFn.CHASSIS, Command.CHASSIS_CONTROL, on)[0] == 0
    assert system.power_on
    code, data = console.request(NetFn.CHASSIS, Command.GET_CHASSIS_STATUS)
    assert GetChassisStatusResponse.decode(data).power_on
    assert bmc.session_count(clock.now) == 1
    close = CloseSessionRequest(console.bmc_session_id).encode()
    assert console.request(NetFn.APP, Command.CLOSE_SESSION, close)[0] == 0
    assert bmc.session_count(clock.now) == 0


def test_auth_capabilities_sessionless_v15_and_v2() -> None:
    bmc, _ = make_bmc(Clock())
    request = wire.IpmiRequest(
        NetFn.APP,
        Command.GET_CHANNEL_AUTH_CAPABILITIES,
        1,
        GetChannelAuthCapabilitiesRequest().encode(),
    )
    answer = bmc.receive(wire.V15Packet(request.encode()).encode(), 0.0)
    assert answer is not None
    response = wire.IpmiResponse.decode(wire.V15Packet.decode(answer).message)
    assert response.completion_code == 0 and response.rq_seq == 1
    capabilities = GetChannelAuthCapabilitiesResponse.decode(response.data)
    assert capabilities.supports_ipmi20 and not capabilities.kg_set
    assert capabilities.auth_types & 0x3F == 0  # no IPMI 1.5 authentication offered
    answer = bmc.receive(wire.encode_v2(PayloadType.IPMI, request.encode()), 0.0)
    assert answer is not None and wire.is_v2(answer)


def test_cipher_suite_list_offers_only_the_configured_suites() -> None:
    bmc, _ = make_bmc(Clock(), cipher_suites=(17,))
    request = wire.IpmiRequest(NetFn.APP, 0x54, 2, bytes((0x0E, 0x00, 0x80)))
    answer = bmc.receive(wire.encode_v2(PayloadType.IPMI, request.encode()), 0.0)
    assert answer is not None
    response = wire.IpmiResponse.decode(wire.decode_v2(answer).payload)
    assert response.completion_code == 0
    assert response.data == bytes((1, 0xC0, 17, 0x03, 0x44, 0x81))


@pytest.mark.parametrize(
    "algorithms",
    [(0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 2, 1), (3, 1, 1)],
    ids=["suite0", "no-integrity", "no-encryption", "md5", "mixed"],
)
def test_open_session_refuses_weak_or_unknown_algorithms(algorithms: tuple[int, int, int]) -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    response = Console(bmc, clock).open_session(algorithms=algorithms)
    assert response.status == RmcpPlusStatus.NO_CIPHER_SUITE_MATCH
    assert bmc.session_count(clock.now) == 0


def test_suite_not_enabled_is_refused() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock, cipher_suites=(3,))
    assert Console(bmc, clock, 17).open_session().status == RmcpPlusStatus.NO_CIPHER_SUITE_MATCH
    assert Console(bmc, clock, 3).open_session().status == 0


def test_cipher_suite_zero_cannot_even_be_configured() -> None:
    with pytest.raises(Exception, match="not supported"):
        ServerPolicy(cipher_suites=(0, 3))


def test_max_sessions_is_enforced_with_insufficient_resources() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock, max_sessions=2)
    for number in range(2):
        Console(bmc, clock, console_id=100 + number).login()
    refused = Console(bmc, clock, console_id=200).open_session()
    assert refused.status == RmcpPlusStatus.INSUFFICIENT_RESOURCES
    assert bmc.session_count(clock.now) == 2


def test_idle_sessions_expire_and_free_their_slot() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock, max_sessions=1, idle_timeout=60.0)
    console = Console(bmc, clock)
    console.login()
    clock.now += 30
    assert console.request(NetFn.APP, Command.GET_DEVICE_ID)[0] == 0  # activity renews it
    clock.now += 59
    assert console.request(NetFn.APP, Command.GET_DEVICE_ID)[0] == 0
    clock.now += 61
    assert console.send(console.seal(NetFn.APP, Command.GET_DEVICE_ID)) is None  # gone
    assert Console(bmc, clock, console_id=7).open_session().status == 0


def test_unfinished_login_expires() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock, max_sessions=1, login_timeout=10.0)
    assert Console(bmc, clock, console_id=1).open_session().status == 0
    assert (
        Console(bmc, clock, console_id=2).open_session().status
        == RmcpPlusStatus.INSUFFICIENT_RESOURCES
    )
    clock.now += 11
    assert Console(bmc, clock, console_id=2).open_session().status == 0


def test_unknown_user_is_refused_in_rakp2() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    console.open_session()
    assert console.rakp1(username=b"nobody").status == RmcpPlusStatus.UNAUTHORIZED_NAME
    assert bmc.session_count(clock.now) == 0


def test_wrong_password_console_detects_bad_rakp2_and_bmc_refuses_rakp3() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    console.open_session()
    rakp2 = console.rakp1()
    # the console's own expectation, computed with the password it believes in
    expected = crypto.rakp2_key_exchange_code(
        console.suite,
        b"wrong-password",
        console_session_id=console.console_id,
        bmc_session_id=console.bmc_session_id,
        console_random=console.console_random,
        bmc_random=rakp2.bmc_random,
        bmc_guid=rakp2.bmc_guid,
        role=console.role,
        username=b"admin",
    )
    assert not crypto.codes_match(expected, rakp2.key_exchange_code)
    rakp4 = console.rakp3(rakp2, password=b"wrong-password")
    assert rakp4.status == RmcpPlusStatus.INVALID_INTEGRITY_CHECK_VALUE
    assert bmc.session_count(clock.now) == 0


def test_role_above_the_negotiated_maximum_is_refused() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    assert console.open_session(privilege=2).privilege == 2
    assert console.rakp1(role=0x14).status == RmcpPlusStatus.UNAUTHORIZED_ROLE


def test_session_starts_at_user_and_control_needs_operator() -> None:
    clock = Clock()
    bmc, system = make_bmc(clock)
    console = Console(bmc, clock)
    console.login(privilege=2)
    on = ChassisControlRequest(ChassisAction.POWER_UP).encode()
    assert console.request(NetFn.CHASSIS, Command.CHASSIS_CONTROL, on)[0] == 0xD4
    assert not system.power_on
    raise_to = SetSessionPrivilegeLevelRequest(3).encode()
    assert console.request(NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL, raise_to) == (0, b"\x03")
    assert console.request(NetFn.CHASSIS, Command.CHASSIS_CONTROL, on)[0] == 0
    assert system.power_on


def test_unknown_command_gets_invalid_command() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    console.login()
    assert console.request(0x2C, 0x00, b"\x03")[0] == CC_INVALID_COMMAND
    assert console.request(NetFn.APP, 0x59)[0] == CC_INVALID_COMMAND


def test_in_session_channel_queries_are_answered_and_a_command_without_handler_is_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    console.login()
    code, data = console.request(NetFn.APP, Command.GET_CHANNEL_AUTH_CAPABILITIES, b"\x8e\x04")
    assert code == 0 and len(data) == 8
    code, data = console.request(NetFn.APP, 0x54, b"\x0e\x00\x80")
    assert code == 0 and data[0] == 0x01  # the channel number, then the suite records
    # A command someone adds to the privilege table but forgets to handle is refused,
    # never answered with another command's data.
    table = dict(server._REQUIRED_PRIVILEGE)
    table[(NetFn.APP, 0x59)] = 1
    monkeypatch.setattr(server, "_REQUIRED_PRIVILEGE", table)
    assert console.request(NetFn.APP, 0x59)[0] == CC_INVALID_COMMAND


def test_cycle_of_a_powered_off_system_is_not_in_present_state() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    console.login()
    cycle = ChassisControlRequest(ChassisAction.POWER_CYCLE).encode()
    assert (
        console.request(NetFn.CHASSIS, Command.CHASSIS_CONTROL, cycle)[0] == CC_NOT_IN_PRESENT_STATE
    )


def test_retransmitted_request_gets_the_same_answer_and_runs_once() -> None:
    clock = Clock()
    bmc, system = make_bmc(clock)
    console = Console(bmc, clock)
    console.login()
    system.set_power(True)
    cycle = console.seal(
        NetFn.CHASSIS,
        Command.CHASSIS_CONTROL,
        ChassisControlRequest(ChassisAction.POWER_CYCLE).encode(),
    )
    first = console.send(cycle)
    system.set_power(False)  # if the retransmit ran again it would answer 0xD5
    second = console.send(cycle)
    assert first is not None and first == second
    assert console.open_answer(second).completion_code == 0
    assert not system.power_on


def test_old_sequence_numbers_are_dropped() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    console.login()
    for _ in range(20):
        console.request(NetFn.APP, Command.GET_DEVICE_ID)
    assert console.send(console.seal(NetFn.APP, Command.GET_DEVICE_ID, sequence=2)) is None
    assert console.send(console.seal(NetFn.APP, Command.GET_DEVICE_ID, sequence=0)) is None
    far = console.sequence + 1000
    assert console.send(console.seal(NetFn.APP, Command.GET_DEVICE_ID, sequence=far)) is None


def test_tampered_or_unauthenticated_session_packets_are_dropped_unparsed() -> None:
    clock = Clock()
    bmc, system = make_bmc(clock)
    console = Console(bmc, clock)
    console.login()
    datagram = bytearray(console.seal(NetFn.CHASSIS, Command.CHASSIS_CONTROL, b"\x01"))
    datagram[-1] ^= 0x01
    assert console.send(bytes(datagram)) is None
    assert bmc.integrity_failures == 1
    datagram = bytearray(console.seal(NetFn.CHASSIS, Command.CHASSIS_CONTROL, b"\x01"))
    datagram[30] ^= 0x80  # inside the encrypted payload
    assert console.send(bytes(datagram)) is None
    plain = wire.encode_v2(
        PayloadType.IPMI,
        wire.IpmiRequest(NetFn.CHASSIS, Command.CHASSIS_CONTROL, 1, b"\x01").encode(),
        session_id=console.bmc_session_id,
        sequence=99,
    )
    assert console.send(plain) is None
    assert not system.power_on


def test_retransmitted_login_messages_get_the_same_answers() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    request = OpenSessionRequest(0, 4, console.console_id, *console.suite.algorithms)
    datagram = wire.encode_v2(PayloadType.OPEN_SESSION_REQUEST, request.encode())
    first, second = console.send(datagram), console.send(datagram)
    assert first is not None and first == second
    assert bmc.session_count(clock.now) == 1  # not two half-open sessions
    console.bmc_session_id = OpenSessionResponse.decode(
        wire.decode_v2(first).payload
    ).bmc_session_id
    rakp2 = console.rakp1()
    assert console.rakp1() == rakp2  # retransmitted RAKP1
    rakp4 = console.rakp3(rakp2)
    assert console.rakp3(rakp2) == rakp4  # RAKP4 lost, RAKP3 retransmitted
    assert rakp4.status == 0


def test_rakp_for_unknown_session_is_refused() -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    console.bmc_session_id = 0x12345678
    assert console.rakp1().status == RmcpPlusStatus.INVALID_SESSION_ID


def test_asf_ping_is_answered_with_pong() -> None:
    bmc, _ = make_bmc(Clock())
    answer = bmc.receive(wire.AsfPing(tag=7).encode(), 0.0)
    assert answer is not None
    pong = wire.AsfPong.decode(answer)
    assert pong.tag == 7 and pong.ipmi_supported


def test_is_session_packet() -> None:
    assert is_session_packet(wire.encode_v2(0, b"x", session_id=5))
    assert not is_session_packet(wire.encode_v2(0x10, b"x"))
    assert not is_session_packet(wire.V15Packet(b"abcdefg").encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_datagrams_never_raise(data: bytes) -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    for prefix in (b"", b"\x06\x00\xff\x07\x06", b"\x06\x00\xff\x07\x00"):
        answer = bmc.receive(prefix + data, clock.now)
        assert answer is None or isinstance(answer, bytes)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=80), st.integers(min_value=0, max_value=60))
def test_random_payloads_inside_an_established_session_never_raise(
    payload: bytes, cut: int
) -> None:
    clock = Clock()
    bmc, _ = make_bmc(clock)
    console = Console(bmc, clock)
    console.login()
    assert console.session is not None
    console.sequence += 1
    sealed = console.session.seal(
        PayloadType.IPMI, console.bmc_session_id, console.sequence, payload
    )
    for datagram in (sealed, sealed[:cut], sealed + payload):
        try:
            answer = bmc.receive(datagram, clock.now)
        except MalformedPacketError:  # pragma: no cover - would be a bug
            pytest.fail("receive raised")
        assert answer is None or isinstance(answer, bytes)
