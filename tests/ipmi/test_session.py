"""Scripted ClientSession tests against a tiny in-test BMC (tests/ipmi/tinybmc.py)."""

from __future__ import annotations

import pytest

from ipmi.errors import AuthenticationError, IpmiError, NegotiationError, SessionLostError
from ipmi.proto import messages as m
from ipmi.proto import wire
from ipmi.proto.constants import Privilege
from ipmi.proto.events import LoginComplete, LoginStep, Response, State
from ipmi.proto.session import ClientSession
from tests.ipmi.tinybmc import TinyBmc, deterministic_entropy


def make_session(**overrides: object) -> ClientSession:
    options: dict[str, object] = {
        "username": b"admin",
        "password": b"password",
        "entropy": deterministic_entropy(b"client"),
    }
    options.update(overrides)
    return ClientSession(**options)  # type: ignore[arg-type]


def login(session: ClientSession, bmc: TinyBmc) -> tuple[LoginComplete, int]:
    """Run the handshake; the completion event and the number of round trips."""
    datagram = session.begin_login()
    for round_trips in range(1, 20):
        reply = bmc.handle(datagram)
        assert reply is not None
        event = session.receive(reply)
        if event is None:  # dropped: as a driver whose step wait then expires
            session.login_step_timed_out()
            raise AssertionError(f"login step dropped: {dict(session.drops)}")
        if isinstance(event, LoginComplete):
            return event, round_trips
        assert isinstance(event, LoginStep), event
        datagram = event.datagram
    raise AssertionError("login did not finish")


def call(session: ClientSession, bmc: TinyBmc, netfn: int, cmd: int, data: bytes = b"") -> Response:
    request_id, datagram = session.request(netfn, cmd, data)
    reply = bmc.handle(datagram)
    assert reply is not None
    event = session.receive(reply)
    assert isinstance(event, Response) and event.request_id == request_id
    return event


def test_login_suite_17_then_status_and_control() -> None:
    session, bmc = make_session(), TinyBmc()
    done, round_trips = login(session, bmc)
    assert done == LoginComplete(17, Privilege.ADMINISTRATOR)
    assert round_trips == 5  # capabilities, open, RAKP1/2, RAKP3/4, set privilege
    assert session.state is State.ESTABLISHED and bmc.privilege == 4
    assert bmc.open_requests[0].privilege == 4  # never "highest" (ipmi_sim quirk)
    status = call(session, bmc, 0x00, 0x01)
    assert (status.netfn, status.cmd, status.completion_code) == (0x01, 0x01, 0)
    assert not m.GetChassisStatusResponse.decode(status.data).power_on
    call(session, bmc, 0x00, 0x02, b"\x01")
    assert m.GetChassisStatusResponse.decode(call(session, bmc, 0x00, 0x01).data).power_on
    assert session.drops == {}


def test_login_without_probe_and_user_privilege_takes_three_round_trips() -> None:
    session = make_session(probe_auth_capabilities=False, privilege=Privilege.USER)
    bmc = TinyBmc()
    done, round_trips = login(session, bmc)
    assert done == LoginComplete(17, Privilege.USER) and round_trips == 3
    assert bmc.open_requests[0].privilege == 2
    assert not any(cmd == 0x3B for _, cmd, _ in bmc.commands)


def test_suite_fallback_17_to_3() -> None:
    session, bmc = make_session(), TinyBmc(suites=(3,))
    done, _ = login(session, bmc)
    assert done.suite == 3
    assert [(r.auth, r.integrity, r.confidentiality) for r in bmc.open_requests] == [
        (3, 4, 1),
        (1, 1, 1),
    ]
    call(session, bmc, 0x06, 0x01)


def test_algorithm_mismatch_is_never_accepted() -> None:
    # The stock pyghmi server answers suite 3 to any proposal.
    bmc = TinyBmc(answer_algorithms=(1, 1, 1))
    done, _ = login(make_session(), bmc)
    assert done.suite == 3 and len(bmc.open_requests) == 2
    with pytest.raises(NegotiationError, match="no acceptable cipher suite"):
        login(make_session(cipher_suites=(17,)), TinyBmc(answer_algorithms=(1, 1, 1)))


@pytest.mark.parametrize("answer", [(0, 0, 0), (3, 0, 0), (3, 4, 0), (1, 1, 0)])
def test_none_algorithms_are_refused(answer: tuple[int, int, int]) -> None:
    with pytest.raises(NegotiationError):
        login(make_session(), TinyBmc(answer_algorithms=answer))


def test_suite_0_is_never_offered() -> None:
    with pytest.raises(NegotiationError):
        make_session(cipher_suites=(0,))
    with pytest.raises(NegotiationError):
        make_session(cipher_suites=(17, 3, 0))
    bmc = TinyBmc(suites=())
    with pytest.raises(NegotiationError, match="tried 17, 3"):
        login(make_session(), bmc)
    offered = {(r.auth, r.integrity, r.confidentiality) for r in bmc.open_requests}
    assert offered == {(3, 4, 1), (1, 1, 1)}


def test_wrong_password() -> None:
    session = make_session(password=b"S3cr3t-Pw")
    with pytest.raises(AuthenticationError, match="RAKP2") as raised:
        login(session, TinyBmc())
    assert "S3cr3t" not in str(raised.value)
    assert "S3cr3t" not in repr(session)


def test_failed_login_leaves_a_dead_session() -> None:
    session = make_session(password=b"other")
    with pytest.raises(AuthenticationError):
        login(session, TinyBmc())
    assert session.state is State.POISONED
    assert session.receive(b"\x06\x00\xff\x07") is None
    assert session.drops == {"forged": 1, "closed": 1}
    with pytest.raises(SessionLostError):
        session.request(0x00, 0x01)
    with pytest.raises(SessionLostError):
        session.close()  # no keys were agreed: nothing to close


def test_privilege_refused_after_keys_exist_can_still_close() -> None:
    session, bmc = make_session(), TinyBmc(privilege_cc=0x81)
    with pytest.raises(NegotiationError, match="administrator"):
        login(session, bmc)
    assert session.state is State.POISONED
    bmc.handle(session.close())
    assert bmc.closed_session_ids == [bmc.bmc_session_id]


def test_forged_rakp2_is_rejected() -> None:
    with pytest.raises(AuthenticationError, match="RAKP2"):
        login(make_session(), TinyBmc(forge_rakp2=True))


def test_a_forged_rakp2_is_dropped_and_the_real_one_still_accepted() -> None:
    session, bmc = make_session(probe_auth_capabilities=False), TinyBmc()
    rakp1 = session.receive(bmc.handle(session.begin_login()))  # type: ignore[arg-type]
    assert isinstance(rakp1, LoginStep)
    real = bmc.handle(rakp1.datagram)
    assert real is not None
    bmc.forge_rakp2 = True
    forged = bmc.handle(rakp1.datagram)
    assert forged is not None
    assert session.receive(forged) is None and session.drops == {"forged": 1}
    assert isinstance(session.receive(real), LoginStep)  # the real one, after the forgery
    session.login_step_timed_out()  # a valid answer came: no verdict to give
    assert session.state is State.AWAIT_RAKP4


def test_a_step_with_nothing_but_unverified_answers_is_a_wrong_password() -> None:
    session, bmc = make_session(probe_auth_capabilities=False), TinyBmc(password=b"other")
    rakp1 = session.receive(bmc.handle(session.begin_login()))  # type: ignore[arg-type]
    assert isinstance(rakp1, LoginStep)
    session.login_step_timed_out()  # nothing came yet: the driver restarts, no verdict
    assert session.state is State.AWAIT_RAKP2
    assert session.receive(bmc.handle(rakp1.datagram)) is None  # type: ignore[arg-type]
    with pytest.raises(AuthenticationError, match="wrong password"):
        session.login_step_timed_out()
    assert session.state is State.POISONED


def test_wrong_kg_fails_rakp4() -> None:
    with pytest.raises(AuthenticationError, match="RAKP4"):
        login(make_session(), TinyBmc(kg=b"k" * 20))
    done, _ = login(make_session(kg=b"k" * 20), TinyBmc(kg=b"k" * 20))
    assert done.suite == 17


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        ({"username": b"root"}, AuthenticationError),  # BMC answers unauthorized name
        ({"rakp2_status": 0x09}, NegotiationError),  # invalid role
        ({"rakp4_status": 0x0F}, AuthenticationError),
        ({"rakp4_status": 0x01}, NegotiationError),
        ({"open_status": 0x0A}, NegotiationError),
        ({"open_status": 0x01}, NegotiationError),
        ({"privilege_cc": 0x80}, NegotiationError),
        ({"ipmi20": False}, NegotiationError),
    ],
)
def test_refusals(knobs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        login(make_session(), TinyBmc(**knobs))  # type: ignore[arg-type]


def established(**bmc_knobs: object) -> tuple[ClientSession, TinyBmc]:
    session, bmc = make_session(), TinyBmc(**bmc_knobs)  # type: ignore[arg-type]
    login(session, bmc)
    return session, bmc


def test_bad_integrity_is_dropped() -> None:
    session, bmc = established()
    request_id, datagram = session.request(0x00, 0x01)
    reply = bmc.handle(datagram)
    assert reply is not None
    for index in (5, 16, len(reply) // 2, len(reply) - 1):
        tampered = bytearray(reply)
        tampered[index] ^= 0x04
        assert session.receive(bytes(tampered)) is None
    assert (
        session.drops["integrity"] + session.drops["malformed"] + session.drops["wrong-session"]
        == 4
    )
    assert session.drops["integrity"] >= 2
    event = session.receive(reply)
    assert isinstance(event, Response) and event.request_id == request_id


def test_replayed_packet_is_dropped() -> None:
    session, bmc = established()
    _, datagram = session.request(0x00, 0x01)
    reply = bmc.handle(datagram)
    assert reply is not None
    assert isinstance(session.receive(reply), Response)
    assert session.receive(reply) is None
    assert session.drops["replay"] == 1


def test_stale_reply_after_retransmit() -> None:
    session, bmc = established()
    request_id, first = session.request(0x00, 0x01)
    second = session.retransmit(request_id)
    assert first != second
    a, b = wire.decode_v2(first, 16), wire.decode_v2(second, 16)
    assert b.sequence == a.sequence + 1  # new session sequence number
    plain_a = wire.IpmiRequest.decode(bmc.session.decrypt(a.payload))  # type: ignore[union-attr]
    plain_b = wire.IpmiRequest.decode(bmc.session.decrypt(b.payload))  # type: ignore[union-attr]
    assert plain_a.rq_seq == plain_b.rq_seq  # same rqSeq
    reply_1, reply_2 = bmc.handle(first), bmc.handle(second)
    assert reply_1 is not None and reply_2 is not None
    assert isinstance(session.receive(reply_2), Response)
    assert session.receive(reply_1) is None
    assert session.drops == {"stale": 1}


def test_forget_turns_a_late_answer_stale() -> None:
    session, bmc = established()
    request_id, datagram = session.request(0x00, 0x01)
    session.forget(request_id)
    with pytest.raises(IpmiError):
        session.retransmit(request_id)
    reply = bmc.handle(datagram)
    assert reply is not None and session.receive(reply) is None
    assert session.drops["stale"] == 1


def test_unauthenticated_packets_after_login_are_dropped() -> None:
    session, bmc = established()
    fake_status = wire.IpmiResponse(0x01, 0x01, 1, 0, b"\x01\x00\x00").encode()
    for datagram in (
        wire.encode_v2(0x00, fake_status, session_id=session.console_session_id, sequence=99),
        wire.V15Packet(fake_status).encode(),
        wire.encode_v2(0x15, m.Rakp4(1, 0, session.console_session_id, bytes(16)).encode()),
        wire.AsfPong(tag=1).encode(),
    ):
        assert session.receive(datagram) is None
    assert session.drops == {"unauthenticated": 4}
    assert session.state is State.ESTABLISHED
    call(session, bmc, 0x00, 0x01)


def test_wrong_session_id_is_dropped() -> None:
    session, bmc = established()
    _, datagram = session.request(0x00, 0x01)
    bmc.handle(datagram)
    assert bmc.session is not None
    foreign = bmc.session.seal(0, session.console_session_id ^ 1, 50, b"x")
    assert session.receive(foreign) is None and session.drops == {"wrong-session": 1}


def test_replay_window_accepts_reordered_once() -> None:
    session, bmc = established()
    requests = [session.request(0x00, 0x01) for _ in range(5)]
    replies = [bmc.handle(datagram) for _, datagram in requests]
    order = [4, 0, 2, 1, 3]
    events = [session.receive(replies[i]) for i in order]  # type: ignore[arg-type]
    assert [e.request_id for e in events] == [requests[i][0] for i in order]  # type: ignore[union-attr]
    assert all(session.receive(reply) is None for reply in replies)  # type: ignore[arg-type]
    assert session.drops == {"replay": 5}


def test_replay_window_drops_too_old() -> None:
    session, bmc = established()
    request_id, datagram = session.request(0x00, 0x01)
    old_reply = bmc.handle(datagram)
    bmc.out_seq += 40  # the BMC has moved far ahead
    call(session, bmc, 0x00, 0x01)
    assert session.receive(old_reply) is None  # type: ignore[arg-type]
    assert session.drops == {"replay": 1}
    assert session.outstanding == 1 and request_id


def test_huge_forward_sequence_jump_is_cheap_and_accepted() -> None:
    session, bmc = established()
    bmc.out_seq = 0xFFFFFFF0
    call(session, bmc, 0x00, 0x01)
    call(session, bmc, 0x00, 0x01)


def test_outbound_sequence_never_wraps() -> None:
    session, bmc = established()
    session._out_seq = 0xFFFFFFFF  # test hook: jump to the last sequence number
    _, datagram = session.request(0x00, 0x01)
    assert wire.decode_v2(datagram, 16).sequence == 0xFFFFFFFF
    with pytest.raises(SessionLostError, match="exhausted"):
        session.request(0x00, 0x01)
    assert session.state is State.POISONED
    with pytest.raises(SessionLostError):
        session.request(0x00, 0x01)
    assert bmc.handle(datagram) is not None


def test_rq_seq_wraps_and_matching_stays_correct() -> None:
    session, bmc = established()
    seen = set()
    for _ in range(70):
        request_id, datagram = session.request(0x00, 0x01)
        packet = wire.decode_v2(datagram, 16)
        seen.add(wire.IpmiRequest.decode(bmc.session.decrypt(packet.payload)).rq_seq)  # type: ignore[union-attr]
        reply = bmc.handle(datagram)
        event = session.receive(reply)  # type: ignore[arg-type]
        assert isinstance(event, Response) and event.request_id == request_id
    assert seen == set(range(64))


def test_outstanding_requests_never_share_an_rq_seq() -> None:
    session, _ = established()
    for _ in range(64):
        session.request(0x00, 0x01)
    with pytest.raises(IpmiError, match="64 requests"):
        session.request(0x00, 0x01)


def test_matching_checks_netfn_and_cmd() -> None:
    session, bmc = established()
    _, datagram = session.request(0x00, 0x01)
    assert bmc.session is not None
    packet = wire.decode_v2(datagram, 16)
    request = wire.IpmiRequest.decode(bmc.session.decrypt(packet.payload))
    wrong_cmd = wire.IpmiRequest(request.netfn, 0x02, request.rq_seq)
    wrong_netfn = wire.IpmiRequest(0x06, 0x01, request.rq_seq)
    assert session.receive(bmc.respond(wrong_cmd, 0, b"")) is None
    assert session.receive(bmc.respond(wrong_netfn, 0, b"")) is None
    assert session.drops == {"stale": 2}
    assert isinstance(session.receive(bmc.respond(request, 0, b"\x00\x00\x00")), Response)


def test_authenticated_garbage_poisons() -> None:
    session, bmc = established()
    _, datagram = session.request(0x00, 0x01)
    bmc.handle(datagram)
    request = wire.IpmiRequest(0x00, 0x01, 1)
    with pytest.raises(SessionLostError):
        session.receive(bmc.respond(request, 0, b"", plaintext=b"\x81\x04\x00"))
    assert session.state is State.POISONED
    with pytest.raises(SessionLostError):
        session.request(0x00, 0x01)
    assert session.receive(b"anything") is None


def test_unencrypted_authenticated_payload_poisons() -> None:
    session, bmc = established()
    assert bmc.session is not None
    message = wire.IpmiResponse(0x01, 0x01, 1, 0, b"\x01\x00\x00").encode()
    datagram = wire.encode_v2(
        0, message, session_id=session.console_session_id, sequence=9, mac=bmc.session.mac
    )
    with pytest.raises(SessionLostError, match="unencrypted"):
        session.receive(datagram)


def test_begin_login_restarts_and_drops_the_old_handshake() -> None:
    session, bmc = make_session(probe_auth_capabilities=False), TinyBmc()
    first_open = session.begin_login()
    first_id = session.console_session_id
    open_reply = bmc.handle(first_open)
    rakp1 = session.receive(open_reply)  # type: ignore[arg-type]
    assert isinstance(rakp1, LoginStep) and session.state is State.AWAIT_RAKP2
    late_rakp2 = bmc.handle(rakp1.datagram)  # pretend it was lost... and arrives late
    session.begin_login()
    assert session.console_session_id != first_id and session.state is State.AWAIT_OPEN
    assert session.receive(open_reply) is None  # old tag
    assert session.receive(late_rakp2) is None  # type: ignore[arg-type]
    assert session.drops == {"stale": 1, "unexpected": 1}
    done, _ = login(session, bmc)
    assert done.suite == 17


def test_close() -> None:
    session, bmc = established()
    datagram = session.close()
    assert session.state is State.CLOSED
    reply = bmc.handle(datagram)
    assert bmc.closed_session_ids == [bmc.bmc_session_id]
    assert session.receive(reply) is None  # type: ignore[arg-type]
    assert session.drops == {"closed": 1}
    with pytest.raises(SessionLostError):
        session.request(0x00, 0x01)
    with pytest.raises(SessionLostError):
        session.close()


def test_close_after_poisoning_still_frees_the_bmc_slot() -> None:
    session, bmc = established()
    with pytest.raises(SessionLostError):
        session.receive(bmc.respond(wire.IpmiRequest(0, 1, 1), 0, b"", plaintext=b"junk"))
    bmc.handle(session.close())
    assert bmc.closed_session_ids == [bmc.bmc_session_id]


def test_close_without_session() -> None:
    with pytest.raises(SessionLostError):
        make_session().close()


def test_request_before_login() -> None:
    session = make_session()
    with pytest.raises(SessionLostError):
        session.request(0x00, 0x01)
    session.begin_login()
    with pytest.raises(SessionLostError):
        session.request(0x00, 0x01)


def test_relogin_after_established() -> None:
    session, bmc = established()
    first = session.console_session_id
    login(session, bmc)
    assert session.console_session_id != first
    call(session, bmc, 0x00, 0x01)


@pytest.mark.parametrize(
    "overrides",
    [
        {"username": b"u" * 17},
        {"password": b"p" * 21},
        {"kg": b""},
        {"privilege": Privilege.CALLBACK},
        {"privilege": Privilege.HIGHEST},
        {"replay_window": 0},
    ],
)
def test_invalid_arguments(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_session(**overrides)


def test_privilege_names() -> None:
    assert Privilege.from_name("Administrator") is Privilege.ADMINISTRATOR
    assert Privilege.from_name("operator") is Privilege.OPERATOR
    for bad in ("callback", "oem", "highest", "root"):
        with pytest.raises(ValueError):
            Privilege.from_name(bad)


def test_login_step_repr_hides_bytes() -> None:
    assert "bytes" in repr(LoginStep(b"\x01\x02"))


def test_an_abandoned_session_is_no_longer_established_but_still_closes() -> None:
    session, bmc = established()
    assert session.established and not session.probing
    session.request(0x00, 0x01)  # never answered
    session.abandon()
    assert not session.established and session.state is State.POISONED
    assert session.outstanding == 0
    with pytest.raises(SessionLostError):
        session.request(0x00, 0x01)
    bmc.handle(session.close())  # the keys still free the BMC's slot
    assert bmc.closed_session_ids == [bmc.bmc_session_id]


def test_probing_is_true_only_while_the_probe_is_unanswered() -> None:
    session, bmc = make_session(), TinyBmc()
    assert not session.probing
    datagram = session.begin_login()
    assert session.probing
    session.receive(bmc.handle(datagram))  # type: ignore[arg-type]
    assert not session.probing and not session.established
