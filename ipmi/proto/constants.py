"""Numbers from the IPMI v2.0 specification, named."""

from __future__ import annotations

import enum
from typing import Final


class Privilege(enum.IntEnum):
    """Session privilege levels (the low nibble of the role / privilege bytes)."""

    HIGHEST = 0  # "highest level matching the proposed algorithms" in Open Session only
    CALLBACK = 1
    USER = 2
    OPERATOR = 3
    ADMINISTRATOR = 4
    OEM = 5

    @classmethod
    def from_name(cls, name: str) -> Privilege:
        """``"administrator"`` -> ADMINISTRATOR; only user, operator and administrator are
        accepted (ValueError otherwise)."""
        try:
            level = cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown privilege level {name!r}") from None
        if level not in (cls.USER, cls.OPERATOR, cls.ADMINISTRATOR):
            raise ValueError(f"privilege level {name!r} cannot be requested")
        return level


class PayloadType(enum.IntEnum):
    IPMI = 0x00
    SOL = 0x01
    OEM_EXPLICIT = 0x02
    OPEN_SESSION_REQUEST = 0x10
    OPEN_SESSION_RESPONSE = 0x11
    RAKP1 = 0x12
    RAKP2 = 0x13
    RAKP3 = 0x14
    RAKP4 = 0x15


class AuthAlgorithm(enum.IntEnum):
    RAKP_NONE = 0x00
    RAKP_HMAC_SHA1 = 0x01
    RAKP_HMAC_MD5 = 0x02
    RAKP_HMAC_SHA256 = 0x03


class IntegrityAlgorithm(enum.IntEnum):
    NONE = 0x00
    HMAC_SHA1_96 = 0x01
    HMAC_MD5_128 = 0x02
    MD5_128 = 0x03
    HMAC_SHA256_128 = 0x04


class ConfidentialityAlgorithm(enum.IntEnum):
    NONE = 0x00
    AES_CBC_128 = 0x01
    XRC4_128 = 0x02
    XRC4_40 = 0x03


class RmcpPlusStatus(enum.IntEnum):
    """Status codes of the Open Session Response and RAKP messages 2-4."""

    NO_ERRORS = 0x00
    INSUFFICIENT_RESOURCES = 0x01
    INVALID_SESSION_ID = 0x02
    INVALID_PAYLOAD_TYPE = 0x03
    INVALID_AUTH_ALGORITHM = 0x04
    INVALID_INTEGRITY_ALGORITHM = 0x05
    NO_MATCHING_AUTH_PAYLOAD = 0x06
    NO_MATCHING_INTEGRITY_PAYLOAD = 0x07
    INACTIVE_SESSION_ID = 0x08
    INVALID_ROLE = 0x09
    UNAUTHORIZED_ROLE = 0x0A
    INSUFFICIENT_RESOURCES_FOR_ROLE = 0x0B
    INVALID_NAME_LENGTH = 0x0C
    UNAUTHORIZED_NAME = 0x0D
    UNAUTHORIZED_GUID = 0x0E
    INVALID_INTEGRITY_CHECK_VALUE = 0x0F
    INVALID_CONFIDENTIALITY_ALGORITHM = 0x10
    NO_CIPHER_SUITE_MATCH = 0x11
    ILLEGAL_PARAMETER = 0x12


# RMCP+ statuses meaning "not this suite" (the client tries its next one).
SUITE_REFUSED = frozenset(
    {
        RmcpPlusStatus.INVALID_PAYLOAD_TYPE,
        RmcpPlusStatus.INVALID_AUTH_ALGORITHM,
        RmcpPlusStatus.INVALID_INTEGRITY_ALGORITHM,
        RmcpPlusStatus.NO_MATCHING_AUTH_PAYLOAD,
        RmcpPlusStatus.NO_MATCHING_INTEGRITY_PAYLOAD,
        RmcpPlusStatus.INVALID_CONFIDENTIALITY_ALGORITHM,
        RmcpPlusStatus.NO_CIPHER_SUITE_MATCH,
    }
)
PRIVILEGE_REFUSED = frozenset(
    {
        RmcpPlusStatus.INVALID_ROLE,
        RmcpPlusStatus.UNAUTHORIZED_ROLE,
        RmcpPlusStatus.INSUFFICIENT_RESOURCES_FOR_ROLE,
    }
)
CREDENTIALS_REFUSED = frozenset(
    {
        RmcpPlusStatus.INVALID_NAME_LENGTH,
        RmcpPlusStatus.UNAUTHORIZED_NAME,
        RmcpPlusStatus.UNAUTHORIZED_GUID,
        RmcpPlusStatus.INVALID_INTEGRITY_CHECK_VALUE,
    }
)
# RAKP statuses meaning the BMC dropped the half-made session (its login timeout passed).
SESSION_FORGOTTEN = frozenset(
    {RmcpPlusStatus.INVALID_SESSION_ID, RmcpPlusStatus.INACTIVE_SESSION_ID}
)


def status_name(code: int) -> str:
    """Readable name of an RMCP+ status code, for one-line error messages."""
    try:
        return RmcpPlusStatus(code).name.lower().replace("_", " ")
    except ValueError:
        return f"status 0x{code:02x}"


class NetFn(enum.IntEnum):
    """Network function codes of requests (responses are the request code + 1)."""

    CHASSIS = 0x00
    APP = 0x06


class Command:
    """Command codes (plain ints: the same number means different things per NetFn)."""

    GET_CHASSIS_STATUS: Final = 0x01  # NetFn CHASSIS
    CHASSIS_CONTROL: Final = 0x02  # NetFn CHASSIS
    GET_DEVICE_ID: Final = 0x01  # NetFn APP
    GET_CHANNEL_AUTH_CAPABILITIES: Final = 0x38  # NetFn APP
    SET_SESSION_PRIVILEGE_LEVEL: Final = 0x3B  # NetFn APP
    CLOSE_SESSION: Final = 0x3C  # NetFn APP


class ChassisAction(enum.IntEnum):
    """Chassis Control request byte."""

    POWER_DOWN = 0x00
    POWER_UP = 0x01
    POWER_CYCLE = 0x02
    HARD_RESET = 0x03
    DIAGNOSTIC_INTERRUPT = 0x04
    SOFT_SHUTDOWN = 0x05


BMC_ADDRESS = 0x20  # IPMB slave address of the BMC (rsAddr)
REMOTE_CONSOLE_ADDRESS = 0x81  # software ID of a remote console (rqAddr)
CURRENT_CHANNEL = 0x0E  # "this channel" in Get Channel Authentication Capabilities

# Completion codes (IPMI v2.0 table 5-2, and the command-specific ones noted).
CC_OK = 0x00
CC_INVALID_COMMAND = 0xC1
CC_REQUEST_DATA_LENGTH_INVALID = 0xC7
CC_PARAMETER_OUT_OF_RANGE = 0xC9
CC_INVALID_DATA_FIELD = 0xCC
CC_INSUFFICIENT_PRIVILEGE = 0xD4
CC_NOT_IN_PRESENT_STATE = 0xD5
CC_INVALID_SESSION_ID = 0x87  # Close Session: invalid session ID in request
CC_PRIVILEGE_NOT_AVAILABLE = 0x80  # Set Session Privilege Level
CC_PRIVILEGE_EXCEEDS_LIMIT = 0x81  # Set Session Privilege Level

MAX_USERNAME_LENGTH = 16
MAX_PASSWORD_LENGTH = 20
