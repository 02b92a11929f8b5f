"""The per-packet fast paths and per-session memory trims of the protocol core.

``wire.split_v2``, ``wire.split_response`` and ``wire.request_message`` skip building
objects on every packet: they must agree exactly with the full decoders/encoders (same
values, same refusals). A logged-in ClientSession must not keep login-only secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipmi.errors import MalformedPacketError
from ipmi.proto import crypto, wire
from ipmi.proto.constants import Command, NetFn
from ipmi.proto.events import State
from tests.ipmi import vectors as v
from tests.ipmi.test_session import login, make_session
from tests.ipmi.tinybmc import TinyBmc

SEALER = crypto.SessionCrypto(crypto.SUITE_17, b"s" * 32, lambda n: bytes(range(n)))
SEEDS = [
    SEALER.seal(0, 7, 9, v.GET_CHASSIS_STATUS_REQUEST_SEQ5),
    wire.encode_v2(0x11, v.OPEN_SESSION_RESPONSE_17),
    wire.encode_v2(0x00, b"abc", session_id=3, sequence=4, mac=lambda signed: b"\x00" * 16),
    v.AUTH_CAP_REQUEST_DATAGRAM,
    v.ASF_PONG_TAG7,
]


def outcome(function: object, *args: object) -> object:
    try:
        return function(*args)  # type: ignore[operator]
    except MalformedPacketError as error:
        return ("refused", str(error))


def as_split(packet: object) -> object:
    if not isinstance(packet, wire.V2Packet):
        return packet
    flags = packet.payload_type
    flags |= wire.PAYLOAD_ENCRYPTED if packet.encrypted else 0
    flags |= wire.PAYLOAD_AUTHENTICATED if packet.authenticated else 0
    return (
        flags,
        packet.session_id,
        packet.sequence,
        packet.payload,
        packet.signed,
        packet.auth_code,
    )


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 90),
    auth_length=st.sampled_from([0, 12, 16]),
)
def test_split_v2_agrees_with_decode_v2(
    seed: bytes, edits: list[tuple[int, int]], cut: int, auth_length: int
) -> None:
    datagram = bytearray(seed)
    for index, value in edits:
        if index < len(datagram):
            datagram[index] = value
    data = bytes(datagram[: max(cut, len(datagram) - cut)])
    full = outcome(wire.decode_v2, data, auth_length)
    fast = outcome(wire.split_v2, data, auth_length)
    assert as_split(full) == fast


@given(st.binary(max_size=40))
def test_split_response_agrees_with_ipmi_response_decode(message: bytes) -> None:
    full = outcome(wire.IpmiResponse.decode, message)
    fast = outcome(wire.split_response, message)
    if isinstance(full, wire.IpmiResponse):
        assert fast == (full.netfn, full.cmd, full.rq_seq, full.completion_code, full.data)
    else:
        assert fast == full


@given(
    netfn=st.integers(0, 63),
    cmd=st.integers(0, 255),
    rq_seq=st.integers(0, 63),
    data=st.binary(max_size=20),
)
def test_request_message_is_ipmi_request_encode(
    netfn: int, cmd: int, rq_seq: int, data: bytes
) -> None:
    expected = wire.IpmiRequest(netfn, cmd, rq_seq, data).encode()
    assert wire.request_message(netfn, cmd, rq_seq, data) == expected
    assert wire.IpmiRequest.decode(expected) == wire.IpmiRequest(netfn, cmd, rq_seq, data)


def test_request_message_pinned_bytes() -> None:
    # Get Chassis Status, rqSeq 5: the vector computed from the spec in tests/ipmi/vectors.py
    message = wire.request_message(NetFn.CHASSIS, Command.GET_CHASSIS_STATUS, 5)
    assert message == v.GET_CHASSIS_STATUS_REQUEST_SEQ5


@pytest.mark.parametrize(
    ("suite", "hash_fn"), [(crypto.SUITE_3, "sha1"), (crypto.SUITE_17, "sha256")]
)
def test_session_crypto_keeps_only_k1_and_checks_codes_in_constant_time(
    suite: crypto.CipherSuite, hash_fn: str
) -> None:
    sik = b"k" * suite.digest_length
    session = crypto.SessionCrypto(suite, sik, lambda n: bytes(n))
    k1 = hmac.new(sik, b"\x01" * 20, getattr(hashlib, hash_fn)).digest()
    signed = b"signed range"
    code = hmac.new(k1, signed, getattr(hashlib, hash_fn)).digest()[: suite.integrity_length]
    assert session.mac(signed) == code
    assert session.authentic(signed, code)
    assert not session.authentic(signed, bytes(len(code)))
    assert not session.authentic(signed, code[:-1])
    assert not hasattr(session, "__dict__")
    assert sik not in repr(session).encode()


def test_a_logged_in_session_forgets_the_login_secrets_but_keeps_the_password() -> None:
    session = make_session(password=b"password")
    bmc = TinyBmc()
    login(session, bmc)
    assert session.state is State.ESTABLISHED
    assert not hasattr(session, "__dict__")
    assert session._handshake is None  # nonces, GUID and SIK went with it
    assert session._password == b"password"  # needed for a transparent re-login

    for _ in range(3):
        request_id, datagram = session.request(NetFn.CHASSIS, Command.GET_CHASSIS_STATUS)
        assert session.outstanding == 1
        answer = session.receive(bmc.handle(datagram))  # type: ignore[arg-type]
        assert answer is not None and answer.request_id == request_id  # type: ignore[union-attr]
        assert session.outstanding == 0
        assert sys.getsizeof(session._requests._pending) == sys.getsizeof({})  # freed too
    # A later re-login draws fresh nonces and still works with the kept password.
    session.begin_login()
    assert session._handshake is not None and len(session._handshake.console_random) == 16
    assert "password" not in repr(session._handshake)
    login(session, bmc)  # begins once more: the handshake from the start
    assert session.state is State.ESTABLISHED and session._handshake is None
