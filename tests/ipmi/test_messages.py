"""Every message, both directions, against hand-written bytes."""

from __future__ import annotations

import pytest

from ipmi.errors import MalformedPacketError
from ipmi.proto import messages as m
from ipmi.proto.constants import ChassisAction, Privilege
from tests.ipmi import vectors as v

OPEN_REQUEST = m.OpenSessionRequest(
    tag=1,
    privilege=4,
    console_session_id=v.CONSOLE_SESSION_ID,
    auth=3,
    integrity=4,
    confidentiality=1,
)
OPEN_RESPONSE = m.OpenSessionResponse(
    tag=1,
    status=0,
    privilege=4,
    console_session_id=v.CONSOLE_SESSION_ID,
    bmc_session_id=v.BMC_SESSION_ID,
    auth=3,
    integrity=4,
    confidentiality=1,
)

CASES: list[tuple[object, bytes]] = [
    (OPEN_REQUEST, v.OPEN_SESSION_REQUEST_17),
    (OPEN_RESPONSE, v.OPEN_SESSION_RESPONSE_17),
    (m.OpenSessionResponse(1, 0x11, 0, v.CONSOLE_SESSION_ID), v.OPEN_SESSION_RESPONSE_NO_MATCH),
    (m.Rakp1(2, v.BMC_SESSION_ID, v.CONSOLE_RANDOM, 0x14, v.USERNAME), v.RAKP1),
    (m.Rakp2(2, 0, v.CONSOLE_SESSION_ID, v.BMC_RANDOM, v.BMC_GUID, v.RAKP2_SHA1_CODE), v.RAKP2),
    (m.Rakp2(2, 0x0D, v.CONSOLE_SESSION_ID), v.RAKP2_UNAUTHORIZED_NAME),
    (m.Rakp3(3, 0, v.BMC_SESSION_ID, b"\xbb" * 20), v.RAKP3),
    (m.Rakp4(3, 0, v.CONSOLE_SESSION_ID, b"\xcc" * 12), v.RAKP4),
    (m.GetChannelAuthCapabilitiesRequest(Privilege.ADMINISTRATOR), bytes.fromhex("8e04")),
    (m.GetChannelAuthCapabilitiesResponse(1, 0x95, 0x04, 0x03), v.AUTH_CAP_RESPONSE_DATA),
    (m.SetSessionPrivilegeLevelRequest(4), b"\x04"),
    (m.SetSessionPrivilegeLevelResponse(4), b"\x04"),
    (m.CloseSessionRequest(v.BMC_SESSION_ID), v.BMC_SID),
    (m.CloseSessionRequest(0, 7), b"\x00\x00\x00\x00\x07"),
    (m.CloseSessionResponse(), b""),
    (m.GetChassisStatusRequest(), b""),
    (m.GetChassisStatusResponse(0x41, 0x00, 0x40), b"\x41\x00\x40"),
    (m.GetChassisStatusResponse(0x00, 0x10, 0x00, 0xF0), b"\x00\x10\x00\xf0"),
    (m.ChassisControlRequest(ChassisAction.SOFT_SHUTDOWN), b"\x05"),
    (m.ChassisControlResponse(), b""),
    (m.GetDeviceIdRequest(), b""),
    (
        m.GetDeviceIdResponse(0x20, 0x81, 0x02, 0x15, 0x02, 0xBF, 0x001291, 0x0F02),
        bytes.fromhex("20810215" + "02bf" + "911200" + "020f"),
    ),
    (
        m.GetDeviceIdResponse(0x20, 0x01, 0x01, 0x00, 0x51, 0x00, 4542, 1, b"\x01\x02\x03\x04"),
        bytes.fromhex("20010100" + "5100" + "be1100" + "0100" + "01020304"),
    ),
]


@pytest.mark.parametrize(("message", "data"), CASES, ids=lambda x: type(x).__name__)
def test_encode_and_decode(message: object, data: bytes) -> None:
    assert message.encode() == data  # type: ignore[attr-defined]
    assert type(message).decode(data) == message  # type: ignore[attr-defined]


def test_command_numbers() -> None:
    assert (m.GetChassisStatusRequest.NETFN, m.GetChassisStatusRequest.CMD) == (0x00, 0x01)
    assert (m.ChassisControlRequest.NETFN, m.ChassisControlRequest.CMD) == (0x00, 0x02)
    assert (m.GetDeviceIdRequest.NETFN, m.GetDeviceIdRequest.CMD) == (0x06, 0x01)
    assert (m.GetChannelAuthCapabilitiesRequest.CMD, m.SetSessionPrivilegeLevelRequest.CMD) == (
        0x38,
        0x3B,
    )
    assert m.CloseSessionRequest.CMD == 0x3C
    assert m.GetDeviceIdResponse.NETFN == 0x07 and m.GetChassisStatusResponse.NETFN == 0x01


def test_chassis_status_flags() -> None:
    status = m.GetChassisStatusResponse.decode(bytes((0b0111_1111, 0, 0)))
    assert status.power_on and status.power_overload and status.interlock
    assert status.power_fault and status.power_control_fault and status.restore_policy == 3
    off = m.GetChassisStatusResponse.decode(b"\x20\x00\x00")
    assert not off.power_on and off.restore_policy == 1


def test_auth_capabilities_flags() -> None:
    response = m.GetChannelAuthCapabilitiesResponse.decode(v.AUTH_CAP_RESPONSE_DATA)
    assert response.supports_ipmi20 and not response.kg_set
    assert not m.GetChannelAuthCapabilitiesResponse(1, 0x15, 0x24, 0x01).supports_ipmi20
    assert m.GetChannelAuthCapabilitiesResponse(1, 0x95, 0x24, 0x03).kg_set


def test_error_responses_may_be_short() -> None:
    assert m.OpenSessionResponse.decode(b"\x05\x12") == m.OpenSessionResponse(5, 0x12)
    assert m.Rakp2.decode(b"\x05\x0d") == m.Rakp2(5, 0x0D, 0)
    assert m.Rakp4.decode(b"\x05\x0f") == m.Rakp4(5, 0x0F, 0)


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (m.OpenSessionResponse, v.OPEN_SESSION_RESPONSE_17[:35]),
        (m.OpenSessionResponse, v.OPEN_SESSION_RESPONSE_17[:12] + bytes(24)),  # bad records
        (m.OpenSessionRequest, v.OPEN_SESSION_REQUEST_17[:31]),
        (m.Rakp1, v.RAKP1[:-1]),
        (m.Rakp1, v.RAKP1[:27] + b"\x11" + b"a" * 17),  # name over 16 bytes
        (m.Rakp2, v.RAKP2[:39]),
        (m.Rakp3, v.RAKP3[:7]),
        (m.Rakp4, v.RAKP4[:1]),
        (m.GetChannelAuthCapabilitiesResponse, v.AUTH_CAP_RESPONSE_DATA[:7]),
        (m.GetChassisStatusResponse, b"\x01\x00"),
        (m.GetDeviceIdResponse, bytes(10)),
        (m.CloseSessionRequest, bytes(4)),  # id 0 needs a handle
        (m.SetSessionPrivilegeLevelResponse, b""),
        (m.ChassisControlRequest, b""),
    ],
)
def test_truncated_messages_are_malformed(cls: type, data: bytes) -> None:
    with pytest.raises(MalformedPacketError):
        cls.decode(data)


def test_encode_refuses_unencodable_values() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        m.Rakp1(1, 1, v.CONSOLE_RANDOM, 4, b"x" * 17).encode()
    with pytest.raises(ValueError, match="16 bytes"):
        m.Rakp1(1, 1, b"short", 4, b"x").encode()
    with pytest.raises(ValueError, match="16 bytes"):
        m.Rakp2(1, 0, 1, b"short", v.BMC_GUID, b"").encode()
