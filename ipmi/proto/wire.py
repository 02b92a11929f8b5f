"""Framing: RMCP, ASF presence ping/pong, IPMI 1.5 and 2.0 session wrappers, LAN messages.

Pure functions and frozen classes over bytes. Every decoder raises only
:class:`ipmi.errors.MalformedPacketError`. Integrity and encryption live in ``crypto``; here
the integrity code is an opaque trailer computed by a callable the caller passes in.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Self

import attrs

from ipmi.errors import MalformedPacketError
from ipmi.proto.constants import BMC_ADDRESS, REMOTE_CONSOLE_ADDRESS

RMCP_VERSION = 0x06
RMCP_NO_ACK = 0xFF  # sequence number 255: "no RMCP ACK wanted"
RMCP_CLASS_ASF = 0x06
RMCP_CLASS_IPMI = 0x07
ASF_IANA = 4542
ASF_PING = 0x80
ASF_PONG = 0x40

AUTH_TYPE_NONE = 0x00
AUTH_TYPE_RMCP_PLUS = 0x06
NEXT_HEADER = 0x07

PAYLOAD_ENCRYPTED = 0x80
PAYLOAD_AUTHENTICATED = 0x40
PAYLOAD_TYPE_MASK = 0x3F
PAYLOAD_TYPE_OEM_EXPLICIT = 0x02

IPMI_RMCP_HEADER = bytes((RMCP_VERSION, 0x00, RMCP_NO_ACK, RMCP_CLASS_IPMI))
ASF_RMCP_HEADER = bytes((RMCP_VERSION, 0x00, RMCP_NO_ACK, RMCP_CLASS_ASF))

_V2_HEADER = struct.Struct("<BBIIH")  # auth type, payload type, session id, sequence, length
_V15_HEADER = struct.Struct("<BII")  # auth type, sequence, session id
_ASF_HEADER = struct.Struct(">IBBBB")  # IANA, message type, tag, reserved, data length
_ASF_PONG_DATA = struct.Struct(">IIBB6x")


def _u8(value: int, what: str) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} out of range: {value}")
    return value


def split_rmcp(datagram: bytes) -> tuple[int, bytes]:
    """(message class, body) of an RMCP datagram. ACK-requesting sequences are accepted."""
    if len(datagram) < 4:
        raise MalformedPacketError("datagram shorter than an RMCP header")
    if datagram[0] != RMCP_VERSION:
        raise MalformedPacketError(f"not RMCP version 1.0 (0x{datagram[0]:02x})")
    message_class = datagram[3] & 0x1F
    if message_class not in (RMCP_CLASS_ASF, RMCP_CLASS_IPMI):
        raise MalformedPacketError(f"unknown RMCP message class 0x{message_class:02x}")
    return message_class, datagram[4:]


# --- ASF presence ping / pong ---------------------------------------------------------------


@attrs.frozen
class AsfPing:
    tag: int = 0

    def encode(self) -> bytes:
        return ASF_RMCP_HEADER + _ASF_HEADER.pack(ASF_IANA, ASF_PING, _u8(self.tag, "tag"), 0, 0)

    @classmethod
    def decode(cls, datagram: bytes) -> Self:
        tag, _ = _decode_asf(datagram, ASF_PING)
        return cls(tag=tag)


@attrs.frozen
class AsfPong:
    tag: int = 0
    oem_iana: int = 0
    oem_defined: int = 0
    supported_entities: int = 0x81  # IPMI supported, ASF version 1.0
    supported_interactions: int = 0x00

    @property
    def ipmi_supported(self) -> bool:
        return bool(self.supported_entities & 0x80)

    def encode(self) -> bytes:
        data = _ASF_PONG_DATA.pack(
            self.oem_iana & 0xFFFFFFFF,
            self.oem_defined & 0xFFFFFFFF,
            _u8(self.supported_entities, "entities"),
            _u8(self.supported_interactions, "interactions"),
        )
        header = _ASF_HEADER.pack(ASF_IANA, ASF_PONG, _u8(self.tag, "tag"), 0, len(data))
        return ASF_RMCP_HEADER + header + data

    @classmethod
    def decode(cls, datagram: bytes) -> Self:
        tag, data = _decode_asf(datagram, ASF_PONG)
        if len(data) < _ASF_PONG_DATA.size:
            raise MalformedPacketError("ASF pong data too short")
        iana, oem, entities, interactions = _ASF_PONG_DATA.unpack_from(data)
        return cls(tag, iana, oem, entities, interactions)


def _decode_asf(datagram: bytes, message_type: int) -> tuple[int, bytes]:
    message_class, body = split_rmcp(datagram)
    if message_class != RMCP_CLASS_ASF:
        raise MalformedPacketError("not an ASF message")
    if len(body) < _ASF_HEADER.size:
        raise MalformedPacketError("ASF message too short")
    iana, kind, tag, _, length = _ASF_HEADER.unpack_from(body)
    if iana != ASF_IANA or kind != message_type:
        raise MalformedPacketError(f"unexpected ASF message 0x{kind:02x}")
    data = body[_ASF_HEADER.size :]
    if len(data) < length:
        raise MalformedPacketError("ASF data shorter than its length field")
    return tag, data[:length]


# --- IPMI 1.5 session wrapper (sessionless Get Channel Authentication Capabilities) ----------


@attrs.frozen
class V15Packet:
    """An IPMI 1.5 session wrapper; only auth type NONE is produced (used sessionless)."""

    message: bytes
    sequence: int = 0
    session_id: int = 0
    auth_type: int = AUTH_TYPE_NONE
    auth_code: bytes = b""

    def encode(self) -> bytes:
        if self.auth_type != AUTH_TYPE_NONE or self.auth_code:
            raise ValueError("only unauthenticated IPMI 1.5 packets are produced")
        if len(self.message) > 0xFF:
            raise ValueError("IPMI 1.5 message longer than 255 bytes")
        header = _V15_HEADER.pack(AUTH_TYPE_NONE, self.sequence, self.session_id)
        return IPMI_RMCP_HEADER + header + bytes((len(self.message),)) + self.message

    @classmethod
    def decode(cls, datagram: bytes) -> Self:
        message_class, body = split_rmcp(datagram)
        if message_class != RMCP_CLASS_IPMI:
            raise MalformedPacketError("not an IPMI message")
        if len(body) < _V15_HEADER.size + 1:
            raise MalformedPacketError("IPMI 1.5 session header too short")
        auth_type, sequence, session_id = _V15_HEADER.unpack_from(body)
        if auth_type == AUTH_TYPE_RMCP_PLUS:
            raise MalformedPacketError("IPMI 2.0 packet where IPMI 1.5 was expected")
        if auth_type not in (0x00, 0x01, 0x02, 0x04, 0x05):
            raise MalformedPacketError(f"unknown IPMI 1.5 auth type 0x{auth_type:02x}")
        offset = _V15_HEADER.size
        auth_code = b""
        if auth_type != AUTH_TYPE_NONE:
            auth_code = body[offset : offset + 16]
            offset += 16
        if len(body) < offset + 1:
            raise MalformedPacketError("IPMI 1.5 session header too short")
        length = body[offset]
        message = body[offset + 1 : offset + 1 + length]
        if len(message) != length:
            raise MalformedPacketError("IPMI 1.5 message shorter than its length field")
        return cls(message, sequence, session_id, auth_type, auth_code)


# --- IPMI 2.0 / RMCP+ session wrapper --------------------------------------------------------


def integrity_pad_length(payload_length: int) -> int:
    """0xFF bytes that make auth type .. next header a multiple of 4 bytes."""
    return -(_V2_HEADER.size + payload_length + 2) % 4


@attrs.frozen
class V2Packet:
    """A decoded RMCP+ datagram. ``signed`` is the byte range the integrity code covers."""

    payload_type: int
    session_id: int
    sequence: int
    payload: bytes
    encrypted: bool = False
    authenticated: bool = False
    auth_code: bytes = b""
    signed: bytes = attrs.field(default=b"", repr=False)


def encode_v2(
    payload_type: int,
    payload: bytes,
    *,
    session_id: int = 0,
    sequence: int = 0,
    encrypted: bool = False,
    mac: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """An RMCP+ datagram. With ``mac``, the authenticated bit is set and the trailer appended:
    integrity pad, pad length, next header, then ``mac(auth type .. next header)``."""
    if len(payload) > 0xFFFF:
        raise ValueError("payload longer than 65535 bytes")
    flags = payload_type & PAYLOAD_TYPE_MASK
    if encrypted:
        flags |= PAYLOAD_ENCRYPTED
    if mac is None:
        header = _V2_HEADER.pack(AUTH_TYPE_RMCP_PLUS, flags, session_id, sequence, len(payload))
        return IPMI_RMCP_HEADER + header + payload
    flags |= PAYLOAD_AUTHENTICATED
    header = _V2_HEADER.pack(AUTH_TYPE_RMCP_PLUS, flags, session_id, sequence, len(payload))
    pad = integrity_pad_length(len(payload))
    signed = header + payload + b"\xff" * pad + bytes((pad, NEXT_HEADER))
    return IPMI_RMCP_HEADER + signed + mac(signed)


def is_v2(datagram: bytes) -> bool:
    """True for an RMCP IPMI-class datagram in the RMCP+ (IPMI 2.0) format."""
    return (
        len(datagram) > 4
        and datagram[0] == RMCP_VERSION
        and datagram[3] & 0x1F == RMCP_CLASS_IPMI
        and datagram[4] == AUTH_TYPE_RMCP_PLUS
    )


def decode_v2(datagram: bytes, auth_code_length: int = 0) -> V2Packet:
    """Split an RMCP+ datagram. An authenticated one needs ``auth_code_length`` (the
    session's integrity code length); its code is returned unverified in ``auth_code``."""
    flags, session_id, sequence, payload, signed, auth_code = split_v2(datagram, auth_code_length)
    return V2Packet(
        flags & PAYLOAD_TYPE_MASK,
        session_id,
        sequence,
        payload,
        bool(flags & PAYLOAD_ENCRYPTED),
        bool(flags & PAYLOAD_AUTHENTICATED),
        auth_code,
        signed,
    )


def split_v2(
    datagram: bytes, auth_code_length: int = 0
) -> tuple[int, int, int, bytes, bytes, bytes]:
    """:func:`decode_v2` without building a :class:`V2Packet`, for the per-packet path:
    (payload type byte with the encrypted/authenticated bits, session id, sequence,
    payload, signed range, auth code); the last two are empty when unauthenticated."""
    if len(datagram) < 4:
        raise MalformedPacketError("datagram shorter than an RMCP header")
    if datagram[0] != RMCP_VERSION:
        raise MalformedPacketError(f"not RMCP version 1.0 (0x{datagram[0]:02x})")
    if datagram[3] & 0x1F != RMCP_CLASS_IPMI:
        split_rmcp(datagram)  # raises for an unknown class
        raise MalformedPacketError("not an IPMI message")
    if len(datagram) < 4 + _V2_HEADER.size:
        raise MalformedPacketError("RMCP+ session header too short")
    auth_type, flags, session_id, sequence, length = _V2_HEADER.unpack_from(datagram, 4)
    if auth_type != AUTH_TYPE_RMCP_PLUS:
        raise MalformedPacketError("not an RMCP+ (IPMI 2.0) packet")
    if flags & PAYLOAD_TYPE_MASK == PAYLOAD_TYPE_OEM_EXPLICIT:
        raise MalformedPacketError("OEM explicit payloads are not supported")
    start = 4 + _V2_HEADER.size
    end = start + length
    payload = datagram[start:end]
    if len(payload) != length:
        raise MalformedPacketError("RMCP+ payload shorter than its length field")
    if not flags & PAYLOAD_AUTHENTICATED:
        if len(datagram) != end:
            raise MalformedPacketError("trailing bytes after an unauthenticated payload")
        return flags, session_id, sequence, payload, b"", b""
    if auth_code_length <= 0:
        raise MalformedPacketError("authenticated packet before integrity keys exist")
    pad = -(_V2_HEADER.size + length + 2) % 4  # integrity_pad_length, inlined
    signed_end = end + pad + 2
    if len(datagram) != signed_end + auth_code_length:
        raise MalformedPacketError("RMCP+ trailer has the wrong length")
    if datagram[signed_end - 2] != pad or datagram[signed_end - 1] != NEXT_HEADER:
        raise MalformedPacketError("bad RMCP+ integrity pad or next header")
    return flags, session_id, sequence, payload, datagram[4:signed_end], datagram[signed_end:]


# --- IPMI LAN messages -------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """Two's complement checksum: the byte that makes ``sum(data) + it`` zero mod 256."""
    return -sum(data) & 0xFF


@attrs.frozen
class IpmiRequest:
    """An IPMI request message as carried in a LAN payload."""

    netfn: int
    cmd: int
    rq_seq: int
    data: bytes = b""
    rs_addr: int = BMC_ADDRESS
    rs_lun: int = 0
    rq_addr: int = REMOTE_CONSOLE_ADDRESS
    rq_lun: int = 0

    def encode(self) -> bytes:
        return request_message(
            self.netfn,
            self.cmd,
            self.rq_seq,
            self.data,
            rs_addr=self.rs_addr,
            rs_lun=self.rs_lun,
            rq_addr=self.rq_addr,
            rq_lun=self.rq_lun,
        )

    @classmethod
    def decode(cls, message: bytes) -> Self:
        rs_addr, netfn_lun, rq_addr, seq_lun, cmd, data = _split_lan(message, 7)
        return cls(
            netfn_lun >> 2, cmd, seq_lun >> 2, data, rs_addr, netfn_lun & 3, rq_addr, seq_lun & 3
        )


@attrs.frozen
class IpmiResponse:
    """An IPMI response message; ``netfn`` is the response NetFn (request NetFn + 1)."""

    netfn: int
    cmd: int
    rq_seq: int
    completion_code: int
    data: bytes = b""
    rq_addr: int = REMOTE_CONSOLE_ADDRESS
    rq_lun: int = 0
    rs_addr: int = BMC_ADDRESS
    rs_lun: int = 0

    def encode(self) -> bytes:
        head = bytes((self.rq_addr, (self.netfn << 2 | self.rq_lun) & 0xFF))
        body = bytes((self.rs_addr, (self.rq_seq << 2 | self.rs_lun) & 0xFF, self.cmd))
        body += bytes((self.completion_code,)) + self.data
        return head + bytes((checksum(head),)) + body + bytes((checksum(body),))

    @classmethod
    def decode(cls, message: bytes) -> Self:
        rq_addr, netfn_lun, rs_addr, seq_lun, cmd, rest = _split_lan(message, 8)
        return cls(
            netfn_lun >> 2,
            cmd,
            seq_lun >> 2,
            rest[0],
            rest[1:],
            rq_addr,
            netfn_lun & 3,
            rs_addr,
            seq_lun & 3,
        )


def request_message(
    netfn: int,
    cmd: int,
    rq_seq: int,
    data: bytes = b"",
    *,
    rs_addr: int = BMC_ADDRESS,
    rs_lun: int = 0,
    rq_addr: int = REMOTE_CONSOLE_ADDRESS,
    rq_lun: int = 0,
) -> bytes:
    """The bytes of an :class:`IpmiRequest`, without building one (per-packet path)."""
    head = bytes((rs_addr, (netfn << 2 | rs_lun) & 0xFF))
    body = bytes((rq_addr, (rq_seq << 2 | rq_lun) & 0xFF, cmd)) + data
    return head + bytes((-sum(head) & 0xFF,)) + body + bytes((-sum(body) & 0xFF,))


def split_response(message: bytes) -> tuple[int, int, int, int, bytes]:
    """(response NetFn, cmd, rqSeq, completion code, data) of an IPMI response message, with
    the same checks as :meth:`IpmiResponse.decode` but no object (per-packet path)."""
    _, netfn_lun, _, seq_lun, cmd, rest = _split_lan(message, 8)
    return netfn_lun >> 2, cmd, seq_lun >> 2, rest[0], rest[1:]


def _split_lan(message: bytes, minimum: int) -> tuple[int, int, int, int, int, bytes]:
    if len(message) < minimum:
        raise MalformedPacketError("IPMI message too short")
    if sum(message[:3]) & 0xFF:
        raise MalformedPacketError("IPMI message header checksum mismatch")
    if sum(message[3:]) & 0xFF:
        raise MalformedPacketError("IPMI message data checksum mismatch")
    return message[0], message[1], message[3], message[4], message[5], message[6:-1]
