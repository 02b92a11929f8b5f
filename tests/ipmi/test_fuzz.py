"""Hypothesis: arbitrary bytes into every decoder give a value or MalformedPacketError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipmi.errors import MalformedPacketError
from ipmi.proto import crypto, messages, wire
from tests.ipmi import vectors as v

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
