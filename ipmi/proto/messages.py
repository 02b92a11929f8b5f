"""The IPMI and RMCP+ messages powersync speaks, both directions, as frozen classes.

RMCP+ session-setup payloads (Open Session, RAKP 1-4) encode the whole payload. IPMI
commands encode their request data, or their response data *after* the completion code
(the completion code belongs to :class:`ipmi.proto.wire.IpmiResponse`). ``decode`` raises
only MalformedPacketError; ``encode`` raises ValueError for values that cannot be encoded.
"""

from __future__ import annotations

import struct
from typing import ClassVar, Self

import attrs

from ipmi.errors import MalformedPacketError
from ipmi.proto.constants import (
    CURRENT_CHANNEL,
    MAX_USERNAME_LENGTH,
    Command,
    NetFn,
    Privilege,
    RmcpPlusStatus,
)

RANDOM_LENGTH = 16
GUID_LENGTH = 16
_U32 = struct.Struct("<I")


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) < length:
        raise MalformedPacketError(f"{what} too short ({len(data)} < {length} bytes)")


def _exact(value: bytes, length: int, what: str) -> bytes:
    if len(value) != length:
        raise ValueError(f"{what} must be {length} bytes")
    return value


def _u32(data: bytes, offset: int) -> int:
    value: int = _U32.unpack_from(data, offset)[0]
    return value


# --- RMCP+ Open Session ------------------------------------------------------------------------

_ALGORITHM_PAYLOAD_TYPES = (0x00, 0x01, 0x02)  # authentication, integrity, confidentiality


def _algorithm_records(auth: int, integrity: int, confidentiality: int) -> bytes:
    return b"".join(
        bytes((kind, 0, 0, 8, algorithm & 0x3F, 0, 0, 0))
        for kind, algorithm in zip(
            _ALGORITHM_PAYLOAD_TYPES, (auth, integrity, confidentiality), strict=True
        )
    )


def _parse_algorithm_records(data: bytes) -> tuple[int, int, int]:
    algorithms = []
    for index, kind in enumerate(_ALGORITHM_PAYLOAD_TYPES):
        record = data[index * 8 : index * 8 + 8]
        if len(record) != 8 or record[0] != kind or record[3] != 8:
            raise MalformedPacketError("bad algorithm record in Open Session message")
        algorithms.append(record[4] & 0x3F)
    return algorithms[0], algorithms[1], algorithms[2]


@attrs.frozen
class OpenSessionRequest:
    tag: int
    privilege: int  # requested maximum privilege; 0 = highest matching the algorithms
    console_session_id: int
    auth: int
    integrity: int
    confidentiality: int

    def encode(self) -> bytes:
        return (
            bytes((self.tag, self.privilege & 0x0F, 0, 0))
            + _U32.pack(self.console_session_id)
            + _algorithm_records(self.auth, self.integrity, self.confidentiality)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 32, "Open Session Request")
        return cls(data[0], data[1] & 0x0F, _u32(data, 4), *_parse_algorithm_records(data[8:32]))


@attrs.frozen
class OpenSessionResponse:
    tag: int
    status: int
    privilege: int = 0
    console_session_id: int = 0
    bmc_session_id: int = 0
    auth: int = 0
    integrity: int = 0
    confidentiality: int = 0

    def encode(self) -> bytes:
        head = bytes((self.tag, self.status, self.privilege & 0x0F, 0))
        head += _U32.pack(self.console_session_id)
        if self.status != RmcpPlusStatus.NO_ERRORS:
            return head  # an error response ends after the console session id
        return (
            head
            + _U32.pack(self.bmc_session_id)
            + _algorithm_records(self.auth, self.integrity, self.confidentiality)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 2, "Open Session Response")
        tag, status = data[0], data[1]
        if status != RmcpPlusStatus.NO_ERRORS:
            # BMCs differ in how much of an error response they send; keep what is there.
            privilege = data[2] & 0x0F if len(data) > 2 else 0
            console_session_id = _u32(data, 4) if len(data) >= 8 else 0
            return cls(tag, status, privilege, console_session_id)
        _need(data, 36, "Open Session Response")
        return cls(
            tag,
            status,
            data[2] & 0x0F,
            _u32(data, 4),
            _u32(data, 8),
            *_parse_algorithm_records(data[12:36]),
        )


# --- RAKP messages 1-4 -------------------------------------------------------------------------

NAME_ONLY_LOOKUP = 0x10  # RAKP1 role bit 4: look the user up by name only


@attrs.frozen
class Rakp1:
    tag: int
    bmc_session_id: int
    console_random: bytes
    role: int  # requested maximum privilege | NAME_ONLY_LOOKUP; enters the RAKP HMACs as is
    username: bytes

    def encode(self) -> bytes:
        if len(self.username) > MAX_USERNAME_LENGTH:
            raise ValueError("user name longer than 16 bytes")
        return (
            bytes((self.tag, 0, 0, 0))
            + _U32.pack(self.bmc_session_id)
            + _exact(self.console_random, RANDOM_LENGTH, "console random number")
            + bytes((self.role, 0, 0, len(self.username)))
            + self.username
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 28, "RAKP1")
        name_length = data[27]
        if name_length > MAX_USERNAME_LENGTH or len(data) != 28 + name_length:
            raise MalformedPacketError("RAKP1 user name length is invalid")
        return cls(data[0], _u32(data, 4), data[8:24], data[24], data[28:])


@attrs.frozen
class Rakp2:
    tag: int
    status: int
    console_session_id: int
    bmc_random: bytes = bytes(RANDOM_LENGTH)
    bmc_guid: bytes = bytes(GUID_LENGTH)
    key_exchange_code: bytes = b""

    def encode(self) -> bytes:
        head = bytes((self.tag, self.status, 0, 0)) + _U32.pack(self.console_session_id)
        if self.status != RmcpPlusStatus.NO_ERRORS:
            return head
        return (
            head
            + _exact(self.bmc_random, RANDOM_LENGTH, "BMC random number")
            + _exact(self.bmc_guid, GUID_LENGTH, "BMC GUID")
            + self.key_exchange_code
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 2, "RAKP2")
        if data[1] != RmcpPlusStatus.NO_ERRORS:
            return cls(data[0], data[1], _u32(data, 4) if len(data) >= 8 else 0)
        _need(data, 40, "RAKP2")
        return cls(data[0], data[1], _u32(data, 4), data[8:24], data[24:40], data[40:])


@attrs.frozen
class Rakp3:
    tag: int
    status: int
    bmc_session_id: int
    key_exchange_code: bytes = b""

    def encode(self) -> bytes:
        head = bytes((self.tag, self.status, 0, 0)) + _U32.pack(self.bmc_session_id)
        return head + self.key_exchange_code

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 8, "RAKP3")
        return cls(data[0], data[1], _u32(data, 4), data[8:])


@attrs.frozen
class Rakp4:
    tag: int
    status: int
    console_session_id: int
    integrity_check_value: bytes = b""

    def encode(self) -> bytes:
        head = bytes((self.tag, self.status, 0, 0)) + _U32.pack(self.console_session_id)
        if self.status != RmcpPlusStatus.NO_ERRORS:
            return head
        return head + self.integrity_check_value

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 2, "RAKP4")
        console_session_id = _u32(data, 4) if len(data) >= 8 else 0
        if data[1] == RmcpPlusStatus.NO_ERRORS:
            _need(data, 8, "RAKP4")
        return cls(data[0], data[1], console_session_id, data[8:])


# --- IPMI commands -----------------------------------------------------------------------------


@attrs.frozen
class GetChannelAuthCapabilitiesRequest:
    NETFN: ClassVar[int] = NetFn.APP
    CMD: ClassVar[int] = Command.GET_CHANNEL_AUTH_CAPABILITIES

    privilege: int = Privilege.ADMINISTRATOR
    channel: int = CURRENT_CHANNEL
    extended: bool = True  # ask for the IPMI v2.0 extended data

    def encode(self) -> bytes:
        return bytes(((0x80 if self.extended else 0) | (self.channel & 0x0F), self.privilege))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 2, "Get Channel Authentication Capabilities request")
        return cls(data[1] & 0x0F, data[0] & 0x0F, bool(data[0] & 0x80))


@attrs.frozen
class GetChannelAuthCapabilitiesResponse:
    NETFN: ClassVar[int] = NetFn.APP | 1
    CMD: ClassVar[int] = Command.GET_CHANNEL_AUTH_CAPABILITIES

    channel: int
    auth_types: int  # byte 2: bit 7 = extended data present; bits 5:0 IPMI 1.5 auth types
    auth_status: int  # byte 3: K_G status, per-message auth, user level auth, login kinds
    extended_capabilities: int  # byte 4: bit 1 = IPMI 2.0 connections, bit 0 = IPMI 1.5
    oem_iana: int = 0
    oem_aux: int = 0

    @property
    def supports_ipmi20(self) -> bool:
        return bool(self.auth_types & 0x80 and self.extended_capabilities & 0x02)

    @property
    def kg_set(self) -> bool:
        """True when the BMC uses a non-default K_G (two-key login)."""
        return bool(self.auth_status & 0x20)

    def encode(self) -> bytes:
        return (
            bytes((self.channel, self.auth_types, self.auth_status, self.extended_capabilities))
            + (self.oem_iana & 0xFFFFFF).to_bytes(3, "little")
            + bytes((self.oem_aux,))
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 8, "Get Channel Authentication Capabilities response")
        return cls(data[0], data[1], data[2], data[3], int.from_bytes(data[4:7], "little"), data[7])


@attrs.frozen
class SetSessionPrivilegeLevelRequest:
    NETFN: ClassVar[int] = NetFn.APP
    CMD: ClassVar[int] = Command.SET_SESSION_PRIVILEGE_LEVEL

    privilege: int  # 0 = no change, just report the present level

    def encode(self) -> bytes:
        return bytes((self.privilege & 0x0F,))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 1, "Set Session Privilege Level request")
        return cls(data[0] & 0x0F)


@attrs.frozen
class SetSessionPrivilegeLevelResponse:
    NETFN: ClassVar[int] = NetFn.APP | 1
    CMD: ClassVar[int] = Command.SET_SESSION_PRIVILEGE_LEVEL

    privilege: int

    def encode(self) -> bytes:
        return bytes((self.privilege & 0x0F,))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 1, "Set Session Privilege Level response")
        return cls(data[0] & 0x0F)


@attrs.frozen
class CloseSessionRequest:
    NETFN: ClassVar[int] = NetFn.APP
    CMD: ClassVar[int] = Command.CLOSE_SESSION

    session_id: int  # the BMC's session id
    session_handle: int | None = None  # only sent when session_id is 0

    def encode(self) -> bytes:
        data = _U32.pack(self.session_id)
        if self.session_id == 0:
            data += bytes((self.session_handle or 0,))
        return data

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 4, "Close Session request")
        session_id = _u32(data, 0)
        if session_id == 0:
            _need(data, 5, "Close Session request by handle")
            return cls(0, data[4])
        return cls(session_id)


@attrs.frozen
class _EmptyMessage:
    """A message without data (a request that only names a command, or a bare response)."""

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, data: bytes) -> Self:
        # Trailing bytes are tolerated: some BMCs append OEM data.
        return cls()


@attrs.frozen
class CloseSessionResponse(_EmptyMessage):
    NETFN: ClassVar[int] = NetFn.APP | 1
    CMD: ClassVar[int] = Command.CLOSE_SESSION


@attrs.frozen
class GetChassisStatusRequest(_EmptyMessage):
    NETFN: ClassVar[int] = NetFn.CHASSIS
    CMD: ClassVar[int] = Command.GET_CHASSIS_STATUS


@attrs.frozen
class GetChassisStatusResponse:
    NETFN: ClassVar[int] = NetFn.CHASSIS | 1
    CMD: ClassVar[int] = Command.GET_CHASSIS_STATUS

    power_state: int  # bit 0 power on, 1 overload, 2 interlock, 3 fault, 4 control fault
    last_power_event: int = 0
    misc_state: int = 0
    front_panel: int | None = None

    @property
    def power_on(self) -> bool:
        return bool(self.power_state & 0x01)

    @property
    def power_overload(self) -> bool:
        return bool(self.power_state & 0x02)

    @property
    def interlock(self) -> bool:
        return bool(self.power_state & 0x04)

    @property
    def power_fault(self) -> bool:
        return bool(self.power_state & 0x08)

    @property
    def power_control_fault(self) -> bool:
        return bool(self.power_state & 0x10)

    @property
    def restore_policy(self) -> int:
        """0 stay off, 1 restore previous state, 2 always on, 3 unknown."""
        return (self.power_state >> 5) & 0x03

    def encode(self) -> bytes:
        data = bytes((self.power_state, self.last_power_event, self.misc_state))
        if self.front_panel is not None:
            data += bytes((self.front_panel,))
        return data

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 3, "Get Chassis Status response")
        return cls(data[0], data[1], data[2], data[3] if len(data) > 3 else None)


@attrs.frozen
class ChassisControlRequest:
    NETFN: ClassVar[int] = NetFn.CHASSIS
    CMD: ClassVar[int] = Command.CHASSIS_CONTROL

    action: int  # a ChassisAction

    def encode(self) -> bytes:
        return bytes((self.action & 0x0F,))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 1, "Chassis Control request")
        return cls(data[0] & 0x0F)


@attrs.frozen
class ChassisControlResponse(_EmptyMessage):
    NETFN: ClassVar[int] = NetFn.CHASSIS | 1
    CMD: ClassVar[int] = Command.CHASSIS_CONTROL


@attrs.frozen
class GetDeviceIdRequest(_EmptyMessage):
    NETFN: ClassVar[int] = NetFn.APP
    CMD: ClassVar[int] = Command.GET_DEVICE_ID


@attrs.frozen
class GetDeviceIdResponse:
    NETFN: ClassVar[int] = NetFn.APP | 1
    CMD: ClassVar[int] = Command.GET_DEVICE_ID

    device_id: int
    device_revision: int
    firmware_major: int  # bit 7 set = device busy (firmware update in progress)
    firmware_minor: int  # BCD
    ipmi_version: int  # BCD, 0x02 = IPMI 2.0 (low nibble major)
    additional_support: int
    manufacturer_id: int
    product_id: int
    aux_firmware: bytes | None = None

    def encode(self) -> bytes:
        data = bytes(
            (
                self.device_id,
                self.device_revision,
                self.firmware_major,
                self.firmware_minor,
                self.ipmi_version,
                self.additional_support,
            )
        )
        data += (self.manufacturer_id & 0xFFFFF).to_bytes(3, "little")
        data += (self.product_id & 0xFFFF).to_bytes(2, "little")
        if self.aux_firmware is not None:
            data += _exact(self.aux_firmware, 4, "auxiliary firmware revision")
        return data

    @classmethod
    def decode(cls, data: bytes) -> Self:
        _need(data, 11, "Get Device ID response")
        aux = data[11:15] if len(data) >= 15 else None
        return cls(
            data[0],
            data[1],
            data[2],
            data[3],
            data[4],
            data[5],
            int.from_bytes(data[6:9], "little") & 0xFFFFF,
            int.from_bytes(data[9:11], "little"),
            aux,
        )
