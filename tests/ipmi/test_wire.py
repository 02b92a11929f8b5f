"""Framing: RMCP, ASF, IPMI 1.5 and 2.0 session wrappers and LAN messages, against literals."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ipmi.errors import MalformedPacketError
from ipmi.proto import wire
from tests.ipmi import vectors as v


def test_asf_ping_and_pong_vectors() -> None:
    assert wire.AsfPing(tag=7).encode() == v.ASF_PING_TAG7
    assert wire.AsfPing.decode(v.ASF_PING_TAG7) == wire.AsfPing(tag=7)
    pong = wire.AsfPong.decode(v.ASF_PONG_TAG7)
    assert pong.tag == 7 and pong.oem_iana == 4542 and pong.ipmi_supported
    assert wire.AsfPong(tag=7, oem_iana=4542).encode() == v.ASF_PONG_TAG7
    with pytest.raises(MalformedPacketError):
        wire.AsfPong.decode(v.ASF_PING_TAG7)  # a ping is not a pong


def test_ipmi15_sessionless_packet_vector() -> None:
    packet = wire.V15Packet(v.AUTH_CAP_REQUEST_MESSAGE)
    assert packet.encode() == v.AUTH_CAP_REQUEST_DATAGRAM
    decoded = wire.V15Packet.decode(v.AUTH_CAP_REQUEST_DATAGRAM)
    assert decoded.message == v.AUTH_CAP_REQUEST_MESSAGE
    assert decoded.session_id == 0 and decoded.sequence == 0 and decoded.auth_type == 0


def test_ipmi15_with_auth_code_decodes() -> None:
    body = bytes.fromhex("02" + "01000000" + "02000000") + bytes(range(16)) + b"\x01\xaa"
    decoded = wire.V15Packet.decode(wire.IPMI_RMCP_HEADER + body)
    assert decoded.auth_type == 2 and decoded.auth_code == bytes(range(16))
    assert decoded.sequence == 1 and decoded.session_id == 2 and decoded.message == b"\xaa"


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\x06\x00\xff",
        b"\x05\x00\xff\x07\x00",  # RMCP version
        b"\x06\x00\xff\x08\x00",  # class
        v.AUTH_CAP_REQUEST_DATAGRAM[:-1],  # message shorter than length byte
        b"\x06\x00\xff\x07\x06" + bytes(12),  # a 2.0 packet
    ],
)
def test_ipmi15_malformed(datagram: bytes) -> None:
    with pytest.raises(MalformedPacketError):
        wire.V15Packet.decode(datagram)


def test_v2_unauthenticated_vector() -> None:
    payload = v.OPEN_SESSION_REQUEST_17
    expected = bytes.fromhex("0600ff07" + "06" + "10" + "00000000" + "00000000" + "2000") + payload
    assert wire.encode_v2(0x10, payload) == expected
    packet = wire.decode_v2(expected)
    assert packet.payload_type == 0x10 and packet.payload == payload
    assert not packet.authenticated and not packet.encrypted
    assert packet.session_id == 0 and packet.sequence == 0


@pytest.mark.parametrize("payload_length", [0, 1, 2, 3, 4, 5, 30, 32])
def test_v2_authenticated_trailer_layout(payload_length: int) -> None:
    key = b"k1" * 10
    payload = bytes(range(payload_length))

    def mac(data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha1).digest()[:12]

    datagram = wire.encode_v2(
        0x00, payload, session_id=0x11223344, sequence=7, encrypted=True, mac=mac
    )
    header = bytes.fromhex("06" + "c0" + "44332211" + "07000000") + payload_length.to_bytes(
        2, "little"
    )
    pad_count = (4 - (len(header) + payload_length + 2) % 4) % 4
    signed = header + payload + b"\xff" * pad_count + bytes((pad_count, 0x07))
    assert len(signed) % 4 == 0
    assert datagram == wire.IPMI_RMCP_HEADER + signed + mac(signed)

    packet = wire.decode_v2(datagram, 12)
    assert packet.authenticated and packet.encrypted
    assert packet.session_id == 0x11223344 and packet.sequence == 7
    assert packet.payload == payload and packet.signed == signed
    assert packet.auth_code == mac(signed)


def test_v2_authenticated_needs_integrity_length() -> None:
    datagram = wire.encode_v2(0, b"x", session_id=1, sequence=1, mac=lambda data: bytes(12))
    with pytest.raises(MalformedPacketError):
        wire.decode_v2(datagram)  # no keys yet
    with pytest.raises(MalformedPacketError):
        wire.decode_v2(datagram, 16)  # wrong code length
    with pytest.raises(MalformedPacketError):
        wire.decode_v2(datagram[:-1], 12)
    broken_next_header = bytearray(datagram)
    broken_next_header[-13] = 0x06
    with pytest.raises(MalformedPacketError):
        wire.decode_v2(bytes(broken_next_header), 12)


def test_v2_rejects_oem_explicit_and_short_payload() -> None:
    with pytest.raises(MalformedPacketError):
        wire.decode_v2(bytes.fromhex("0600ff070602") + bytes(16))
    with pytest.raises(MalformedPacketError):
        wire.decode_v2(
            bytes.fromhex("0600ff07" + "0600" + "00000000" + "00000000" + "0500") + b"abc"
        )
    with pytest.raises(MalformedPacketError):
        wire.decode_v2(
            bytes.fromhex("0600ff07" + "0600" + "00000000" + "00000000" + "0100") + b"ab"
        )


def test_is_v2() -> None:
    assert wire.is_v2(wire.encode_v2(0x10, b""))
    assert not wire.is_v2(v.AUTH_CAP_REQUEST_DATAGRAM)
    assert not wire.is_v2(v.ASF_PING_TAG7)
    assert not wire.is_v2(b"\x06")


def test_lan_request_vectors() -> None:
    request = wire.IpmiRequest(netfn=0x00, cmd=0x01, rq_seq=5)
    assert request.encode() == v.GET_CHASSIS_STATUS_REQUEST_SEQ5
    assert wire.IpmiRequest.decode(v.GET_CHASSIS_STATUS_REQUEST_SEQ5) == request
    assert wire.IpmiRequest(0x06, 0x01, 1).encode() == v.GET_DEVICE_ID_REQUEST_SEQ1
    control = wire.IpmiRequest(0x00, 0x02, 2, b"\x00")
    assert control.encode() == v.CHASSIS_CONTROL_OFF_REQUEST_SEQ2
    assert wire.IpmiRequest.decode(v.CHASSIS_CONTROL_OFF_REQUEST_SEQ2).data == b"\x00"


def test_lan_response_vector() -> None:
    response = wire.IpmiResponse(
        netfn=0x01, cmd=0x01, rq_seq=5, completion_code=0, data=b"\x01\x00\x40"
    )
    assert response.encode() == v.GET_CHASSIS_STATUS_RESPONSE_SEQ5_ON
    assert wire.IpmiResponse.decode(v.GET_CHASSIS_STATUS_RESPONSE_SEQ5_ON) == response


@pytest.mark.parametrize("index", range(7))
def test_lan_checksum_mismatch_detected(index: int) -> None:
    corrupted = bytearray(v.GET_CHASSIS_STATUS_REQUEST_SEQ5)
    corrupted[index] ^= 0x01
    with pytest.raises(MalformedPacketError):
        wire.IpmiRequest.decode(bytes(corrupted))


def test_lan_too_short() -> None:
    with pytest.raises(MalformedPacketError):
        wire.IpmiResponse.decode(v.GET_CHASSIS_STATUS_REQUEST_SEQ5)  # 7 bytes: no cc
    with pytest.raises(MalformedPacketError):
        wire.IpmiRequest.decode(b"\x20\x00\xe0")


def test_checksum() -> None:
    assert wire.checksum(b"\x20\x18") == 0xC8
    assert wire.checksum(b"") == 0
