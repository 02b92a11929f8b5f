"""Hypothesis: arbitrary bytes into every decoder give a value or MalformedPacketError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipmi.errors import (
    AuthenticationError,
    MalformedPacketError,
    NegotiationError,
    SessionLostError,
)
from ipmi.proto import crypto, messages, wire
from ipmi.proto.events import LoginComplete, LoginStep, Response
from ipmi.proto.session import ClientSession
from tests.ipmi import vectors as v
from tests.ipmi.tinybmc import TinyBmc, deterministic_entropy

DECODERS: list[Callable[[bytes], object]] = [
    wire.AsfPing.decode,
    wire.AsfPong.decode,
    wire.V15Packet.decode,
    wire.decode_v2,
    lambda data: wire.decode_v2(data, 12),
    lambda data: wire.decode_v2(data, 16),
    wire.IpmiRequest.decode,
    wire.IpmiResponse.decode,
    wire.split_rmcp,
    messages.OpenSessionRequest.decode,
    messages.OpenSessionResponse.decode,
    messages.Rakp1.decode,
    messages.Rakp2.decode,
    messages.Rakp3.decode,
    messages.Rakp4.decode,
    messages.GetChannelAuthCapabilitiesRequest.decode,
    messages.GetChannelAuthCapabilitiesResponse.decode,
    messages.SetSessionPrivilegeLevelRequest.decode,
    messages.SetSessionPrivilegeLevelResponse.decode,
    messages.CloseSessionRequest.decode,
    messages.CloseSessionResponse.decode,
    messages.GetChassisStatusRequest.decode,
    messages.GetChassisStatusResponse.decode,
    messages.ChassisControlRequest.decode,
    messages.ChassisControlResponse.decode,
    messages.GetDeviceIdRequest.decode,
    messages.GetDeviceIdResponse.decode,
    lambda data: crypto.aes_cbc_decrypt(bytes(16), data),
    crypto.SessionCrypto(crypto.SUITE_3, b"s" * 20, lambda n: bytes(n)).open,
    crypto.SessionCrypto(crypto.SUITE_17, b"s" * 32, lambda n: bytes(n)).open,
]

# Seeds near the real shapes so mutations reach deep into the decoders.
SEEDS = [
    v.ASF_PONG_TAG7,
    v.AUTH_CAP_REQUEST_DATAGRAM,
    wire.encode_v2(0x11, v.OPEN_SESSION_RESPONSE_17),
    v.OPEN_SESSION_RESPONSE_17,
    v.RAKP1,
    v.RAKP2,
    v.GET_CHASSIS_STATUS_RESPONSE_SEQ5_ON,
    crypto.SessionCrypto(crypto.SUITE_3, b"s" * 20, lambda n: bytes(n)).seal(0, 1, 1, b"abc"),
]


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=120))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        index = draw(st.integers(0, len(data) - 1))
        data[index] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


@pytest.mark.parametrize("decoder", DECODERS)
@settings(max_examples=150, deadline=None)
@given(data=datagrams())
def test_decoders_raise_only_malformed(decoder: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(MalformedPacketError):
        decoder(data)


# --- the session machine ------------------------------------------------------------------------

SESSION_STATES = ["auth-cap", "open", "rakp2", "rakp4", "priv", "established", "closed", "poisoned"]


def session_in(state: str) -> tuple[ClientSession, list[bytes]]:
    """A session driven by the tiny BMC to ``state``; plus real BMC datagrams to mutate."""
    bmc = TinyBmc()
    session = ClientSession(
        username=b"admin", password=b"password", entropy=deterministic_entropy(b"fuzz")
    )
    replies: list[bytes] = []
    datagram = session.begin_login()
    steps = SESSION_STATES.index(state)
    for _ in range(min(steps, 5)):
        reply = bmc.handle(datagram)
        assert reply is not None
        replies.append(reply)
        event = session.receive(reply)
        if isinstance(event, LoginStep):
            datagram = event.datagram
    if state in ("established", "closed", "poisoned"):
        _, datagram = session.request(0x00, 0x01)
        replies.append(bmc.handle(datagram) or b"")
    if state == "closed":
        session.close()
    if state == "poisoned":
        with contextlib.suppress(SessionLostError):
            session.receive(bmc.respond(wire.IpmiRequest(0, 1, 1), 0, b"", plaintext=b"junk"))
    expected = {"auth-cap": "await-auth-cap", "priv": "await-priv"}.get(state, state)
    assert session.state.value in (expected, f"await-{expected}")
    return session, replies


@pytest.mark.parametrize("state", SESSION_STATES)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_session_receive_never_raises_unexpectedly(state: str, data: st.DataObject) -> None:
    session, replies = session_in(state)
    for _ in range(data.draw(st.integers(1, 3))):
        if replies and data.draw(st.booleans()):
            raw = bytearray(data.draw(st.sampled_from(replies)))
            for _ in range(data.draw(st.integers(0, 3))):
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            datagram = bytes(raw[: data.draw(st.integers(0, len(raw)))])
        else:
            datagram = data.draw(st.binary(max_size=120))
        try:
            event = session.receive(datagram)
        except (AuthenticationError, NegotiationError, SessionLostError):
            return  # documented outcomes that end the session
        assert event is None or isinstance(event, LoginStep | LoginComplete | Response)


# --- round trips of structured values -----------------------------------------------------------

u8, u32 = st.integers(0, 255), st.integers(0, 0xFFFFFFFF)
nibble = st.integers(0, 15)
algorithm = st.integers(0, 0x3F)
random16 = st.binary(min_size=16, max_size=16)
MESSAGES = [
    st.builds(messages.OpenSessionRequest, u8, nibble, u32, algorithm, algorithm, algorithm),
    st.builds(
        messages.OpenSessionResponse,
        u8,
        st.just(0),
        nibble,
        u32,
        u32,
        algorithm,
        algorithm,
        algorithm,
    ),
    st.builds(messages.OpenSessionResponse, u8, st.integers(1, 255), nibble, u32),
    st.builds(messages.Rakp1, u8, u32, random16, u8, st.binary(max_size=16)),
    st.builds(messages.Rakp2, u8, st.just(0), u32, random16, random16, st.binary(max_size=32)),
    st.builds(messages.Rakp3, u8, u8, u32, st.binary(max_size=32)),
    st.builds(messages.Rakp4, u8, st.just(0), u32, st.binary(max_size=16)),
    st.builds(messages.GetChassisStatusResponse, u8, u8, u8, st.none() | u8),
    st.builds(
        messages.GetDeviceIdResponse,
        u8,
        u8,
        u8,
        u8,
        u8,
        u8,
        st.integers(0, 0xFFFFF),
        st.integers(0, 0xFFFF),
        st.none() | st.binary(min_size=4, max_size=4),
    ),
    st.builds(
        messages.GetChannelAuthCapabilitiesResponse, u8, u8, u8, u8, st.integers(0, 0xFFFFFF), u8
    ),
    st.builds(messages.CloseSessionRequest, st.integers(1, 0xFFFFFFFF)),
    st.builds(
        wire.IpmiRequest,
        st.integers(0, 63),
        u8,
        st.integers(0, 63),
        st.binary(max_size=40),
        u8,
        st.integers(0, 3),
        u8,
        st.integers(0, 3),
    ),
    st.builds(
        wire.IpmiResponse,
        st.integers(0, 63),
        u8,
        st.integers(0, 63),
        u8,
        st.binary(max_size=40),
        u8,
        st.integers(0, 3),
        u8,
        st.integers(0, 3),
    ),
]


@pytest.mark.parametrize("strategy", MESSAGES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_decode_inverts_encode(strategy: st.SearchStrategy[object], data: st.DataObject) -> None:
    message = data.draw(strategy)
    encoded = message.encode()  # type: ignore[attr-defined]
    assert type(message).decode(encoded) == message  # type: ignore[attr-defined]
