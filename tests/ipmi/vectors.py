"""Shared byte vectors for the protocol core, written out by hand from the IPMI v2.0 layouts.

Nothing here is produced by the code under test: every datagram is a literal, so a symmetric
encode/decode bug cannot hide.
"""

from __future__ import annotations

USERNAME = b"admin"
PASSWORD = b"password"
KG = b"0123456789abcdefghij"  # a 20-byte BMC key for two-key login tests
CONSOLE_SESSION_ID = 0xA0A1A2A3
BMC_SESSION_ID = 0x01020304
CONSOLE_RANDOM = bytes(range(0x00, 0x10))
BMC_RANDOM = bytes(range(0x10, 0x20))
BMC_GUID = bytes(range(0x20, 0x30))
ROLE_ADMIN_NAME_ONLY = 0x14  # administrator | name-only lookup

CONSOLE_SID = bytes.fromhex("a3a2a1a0")
BMC_SID = bytes.fromhex("04030201")

AUTH_SUITE_17 = bytes.fromhex("0000000803000000")
INTEGRITY_SUITE_17 = bytes.fromhex("0100000804000000")
AUTH_SUITE_3 = bytes.fromhex("0000000801000000")
INTEGRITY_SUITE_3 = bytes.fromhex("0100000801000000")
CONF_AES = bytes.fromhex("0200000801000000")

OPEN_SESSION_REQUEST_17 = (
    bytes.fromhex("01040000") + CONSOLE_SID + AUTH_SUITE_17 + INTEGRITY_SUITE_17 + CONF_AES
)
OPEN_SESSION_RESPONSE_17 = (
    bytes.fromhex("01000400")
    + CONSOLE_SID
    + BMC_SID
    + AUTH_SUITE_17
    + INTEGRITY_SUITE_17
    + CONF_AES
)
OPEN_SESSION_RESPONSE_NO_MATCH = bytes.fromhex("01110000") + CONSOLE_SID
RAKP1 = bytes.fromhex("02000000") + BMC_SID + CONSOLE_RANDOM + bytes.fromhex("14000005") + USERNAME
RAKP2_SHA1_CODE = bytes([0xAA]) * 20
RAKP2 = bytes.fromhex("02000000") + CONSOLE_SID + BMC_RANDOM + BMC_GUID + RAKP2_SHA1_CODE
RAKP2_UNAUTHORIZED_NAME = bytes.fromhex("020d0000") + CONSOLE_SID
RAKP3 = bytes.fromhex("03000000") + BMC_SID + bytes([0xBB]) * 20
RAKP4 = bytes.fromhex("03000000") + CONSOLE_SID + bytes([0xCC]) * 12

# LAN messages: rsAddr, netFn/LUN, chk1, rqAddr, rqSeq/LUN, cmd, data, chk2
GET_CHASSIS_STATUS_REQUEST_SEQ5 = bytes.fromhex("2000e08114016a")
GET_DEVICE_ID_REQUEST_SEQ1 = bytes.fromhex("2018c88104017a")
GET_CHASSIS_STATUS_RESPONSE_SEQ5_ON = bytes.fromhex("81047b20140100010040" + "8a")
CHASSIS_CONTROL_OFF_REQUEST_SEQ2 = bytes.fromhex("2000e0810802" + "00" + "75")

# Sessionless IPMI 1.5 Get Channel Authentication Capabilities, administrator, rqSeq 0
AUTH_CAP_REQUEST_MESSAGE = bytes.fromhex("2018c8810038" + "8e04" + "b5")
AUTH_CAP_REQUEST_DATAGRAM = (
    bytes.fromhex("0600ff07" + "00" + "00000000" + "00000000" + "09") + AUTH_CAP_REQUEST_MESSAGE
)
# Response data: channel 1, auth types ext|MD5|none... , status non-null names, IPMI 1.5+2.0
AUTH_CAP_RESPONSE_DATA = bytes.fromhex("01" + "95" + "04" + "03" + "000000" + "00")

ASF_PING_TAG7 = bytes.fromhex("0600ff06" + "000011be" + "80" + "07" + "00" + "00")
ASF_PONG_TAG7 = bytes.fromhex(
    "0600ff06" + "000011be" + "40" + "07" + "00" + "10"
    "000011be" + "00000000" + "81" + "00" + "000000000000"
)
