"""The BMC side of IPMI v2.0 / RMCP+, sans-I/O: datagram in, answer datagram (or None) out.

One :class:`BmcProtocol` per simulated BMC holds its session table
(``ipmi.proto.server_sessions``, with the settings and one session's state; both names
are importable from here too). It answers
Get Channel Authentication Capabilities and Get Channel Cipher Suites without a session,
runs the login (Open Session, RAKP 1-4) with the real key exchange from ``crypto``, and
inside a session verifies every datagram's integrity code before decrypting or parsing it.
Commands it does not implement get completion code 0xC1 (invalid command).

Retransmissions are answered, not re-executed: a repeated Open Session, RAKP1 or RAKP3
gets the answer already sent, a repeated in-session request (same session sequence
number) gets its cached answer, and a Chassis Control repeated within 5 s with the same
rqSeq and data under a new sequence number gets the first answer again. So a client that
lost an answer can retry, as with real BMCs, and a lost answer never cycles a server twice.

The clock (``now``, seconds) and the entropy source are passed in; nothing here does I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol

from ipmi.errors import MalformedPacketError
from ipmi.proto import crypto, wire
from ipmi.proto.constants import (
    CC_INSUFFICIENT_PRIVILEGE,
    CC_INVALID_COMMAND,
    CC_INVALID_DATA_FIELD,
    CC_INVALID_SESSION_ID,
    CC_OK,
    CC_PRIVILEGE_EXCEEDS_LIMIT,
    CC_PRIVILEGE_NOT_AVAILABLE,
    CC_REQUEST_DATA_LENGTH_INVALID,
    CURRENT_CHANNEL,
    MAX_USERNAME_LENGTH,
    Command,
    NetFn,
    PayloadType,
    Privilege,
    RmcpPlusStatus,
)
from ipmi.proto.messages import (
    ChassisControlRequest,
    CloseSessionRequest,
    GetChannelAuthCapabilitiesResponse,
    GetChassisStatusResponse,
    GetDeviceIdResponse,
    OpenSessionRequest,
    OpenSessionResponse,
    Rakp1,
    Rakp2,
    Rakp3,
    Rakp4,
    SetSessionPrivilegeLevelRequest,
    SetSessionPrivilegeLevelResponse,
)
from ipmi.proto.server_sessions import (
    ACTIVE,
    OPENED,
    RAKP2_SENT,
    ServerPolicy,
    ServerSession,
    SessionTable,
)

__all__ = [
    "DUPLICATE_WINDOW",
    "BmcProtocol",
    "ManagedSystem",
    "ServerPolicy",
    "ServerSession",
    "is_session_packet",
]

GET_CHANNEL_CIPHER_SUITES = 0x54
LAN_CHANNEL = 1

REPLAY_CACHE = 8  # answers kept per session for retransmitted requests
SEQUENCE_WINDOW_BEHIND = 16  # older inbound sequence numbers are dropped
SEQUENCE_WINDOW_AHEAD = 32  # so are ones jumping this far ahead
DUPLICATE_WINDOW = 5.0  # seconds a Chassis Control is remembered by its rqSeq (as on IPMB)

# Privilege needed per (netfn, cmd); anything not listed is an invalid command.
_REQUIRED_PRIVILEGE: dict[tuple[int, int], int] = {
    (NetFn.APP, Command.GET_DEVICE_ID): Privilege.USER,
    (NetFn.APP, Command.GET_CHANNEL_AUTH_CAPABILITIES): Privilege.CALLBACK,
    (NetFn.APP, GET_CHANNEL_CIPHER_SUITES): Privilege.CALLBACK,
    (NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL): Privilege.CALLBACK,
    (NetFn.APP, Command.CLOSE_SESSION): Privilege.CALLBACK,
    (NetFn.CHASSIS, Command.GET_CHASSIS_STATUS): Privilege.USER,
    (NetFn.CHASSIS, Command.CHASSIS_CONTROL): Privilege.OPERATOR,
}
_U32 = struct.Struct("<I")


class ManagedSystem(Protocol):
    """What the BMC controls: the system's power (the simulator's SimBmc)."""

    def chassis_power(self, now: float) -> bool: ...

    def chassis_faults(self, now: float) -> int:
        """Get Chassis Status fault bits: 0x02 overload, 0x04 interlock, 0x08 main power
        fault, 0x10 power control fault."""
        ...

    def chassis_control(self, action: int, now: float) -> int: ...  # completion code


def is_session_packet(datagram: bytes) -> bool:
    """True for an RMCP+ datagram addressed to an established session (session id != 0)."""
    return wire.is_v2(datagram) and len(datagram) >= 10 and datagram[6:10] != b"\0\0\0\0"


class BmcProtocol:
    """The protocol machine of one BMC. Not thread-safe; cheap until the first login."""

    __slots__ = (
        "_credentials",
        "_guid",
        "_policy",
        "_random_bytes",
        "_system",
        "integrity_failures",
        "sessions",
    )

    def __init__(
        self,
        policy: ServerPolicy,
        *,
        guid: bytes,
        system: ManagedSystem,
        credentials: Callable[[bytes], bytes | None],
        random_bytes: Callable[[int], bytes],
    ) -> None:
        if len(guid) != 16:
            raise ValueError("a BMC GUID is 16 bytes")
        self._policy = policy
        self._guid = guid
        self._system = system
        self._credentials = credentials  # user name -> password, None for unknown users
        self._random_bytes = random_bytes
        self.sessions = SessionTable(policy)  # by the BMC's session id
        self.integrity_failures = 0

    def session_count(self, now: float) -> int:
        return self.sessions.count(now)

    # -- entry point ----------------------------------------------------------------------
    def receive(self, datagram: bytes, now: float) -> bytes | None:
        """Handle one datagram; the answer to send back, or None to stay silent."""
        try:
            if wire.is_v2(datagram):
                if is_session_packet(datagram):
                    return self._in_session(datagram, now)
                return self._pre_session(wire.decode_v2(datagram), now)
            message_class, _body = wire.split_rmcp(datagram)
            if message_class == wire.RMCP_CLASS_ASF:
                return wire.AsfPong(tag=wire.AsfPing.decode(datagram).tag).encode()
            return self._sessionless_v15(wire.V15Packet.decode(datagram))
        except MalformedPacketError:
            return None  # garbage, a forged or damaged datagram: real BMCs stay silent

    # -- without a session ------------------------------------------------------------------
    def _sessionless_v15(self, packet: wire.V15Packet) -> bytes | None:
        if packet.session_id != 0 or packet.auth_type != wire.AUTH_TYPE_NONE:
            return None  # IPMI 1.5 sessions are not offered
        request = wire.IpmiRequest.decode(packet.message)
        answer = self._sessionless_command(request)
        return None if answer is None else wire.V15Packet(answer).encode()

    def _sessionless_command(self, request: wire.IpmiRequest) -> bytes | None:
        if request.netfn != NetFn.APP:
            return None
        if request.cmd == Command.GET_CHANNEL_AUTH_CAPABILITIES:
            code, data = self._auth_capabilities(request.data)
        elif request.cmd == GET_CHANNEL_CIPHER_SUITES:
            code, data = self._cipher_suites(request.data)
        else:
            return None  # everything else needs a session
        return _response(request, code, data)

    def _auth_capabilities(self, data: bytes) -> tuple[int, bytes]:
        if len(data) < 2:
            return CC_REQUEST_DATA_LENGTH_INVALID, b""
        channel = data[0] & 0x0F
        if channel not in (CURRENT_CHANNEL, LAN_CHANNEL):
            return CC_INVALID_DATA_FIELD, b""
        kg_status = 0x20 if self._policy.kg else 0x00
        response = GetChannelAuthCapabilitiesResponse(
            channel=LAN_CHANNEL,
            auth_types=0x80,  # extended data present; no IPMI 1.5 authentication types
            auth_status=kg_status | 0x04,  # non-null user names enabled
            extended_capabilities=0x02,  # IPMI 2.0 connections only
        )
        return CC_OK, response.encode()

    def _cipher_suites(self, data: bytes) -> tuple[int, bytes]:
        if len(data) < 3:
            return CC_REQUEST_DATA_LENGTH_INVALID, b""
        channel = data[0] & 0x0F
        if channel not in (CURRENT_CHANNEL, LAN_CHANNEL) or data[1] & 0x3F != PayloadType.IPMI:
            return CC_INVALID_DATA_FIELD, b""
        index = data[2] & 0x3F
        records = self._policy.cipher_suite_records()
        return CC_OK, bytes((LAN_CHANNEL,)) + records[index * 16 : index * 16 + 16]

    def _pre_session(self, packet: wire.V2Packet, now: float) -> bytes | None:
        if packet.authenticated or packet.encrypted:
            return None  # nothing pre-session may claim keys that do not exist yet
        kind = packet.payload_type
        if kind == PayloadType.OPEN_SESSION_REQUEST:
            return self._open_session(OpenSessionRequest.decode(packet.payload), now)
        if kind == PayloadType.RAKP1:
            return self._rakp1(Rakp1.decode(packet.payload), now)
        if kind == PayloadType.RAKP3:
            return self._rakp3(Rakp3.decode(packet.payload), now)
        if kind == PayloadType.IPMI:
            answer = self._sessionless_command(wire.IpmiRequest.decode(packet.payload))
            return None if answer is None else wire.encode_v2(PayloadType.IPMI, answer)
        return None

    # -- login ----------------------------------------------------------------------------
    def _open_session(self, request: OpenSessionRequest, now: float) -> bytes | None:
        for session in self.sessions.values():  # a retransmitted request: same answer
            if (
                session.state == OPENED
                and session.console_session_id == request.console_session_id
                and session.open_tag == request.tag
            ):
                return session.open_answer

        def refuse(status: int) -> bytes:
            answer = OpenSessionResponse(request.tag, status, 0, request.console_session_id)
            return wire.encode_v2(PayloadType.OPEN_SESSION_RESPONSE, answer.encode())

        suite = crypto.suite_by_algorithms(request.auth, request.integrity, request.confidentiality)
        if suite is None or suite.id not in self._policy.cipher_suites:
            return refuse(RmcpPlusStatus.NO_CIPHER_SUITE_MATCH)
        if request.console_session_id == 0:
            return refuse(RmcpPlusStatus.INVALID_SESSION_ID)
        requested = request.privilege or self._policy.max_privilege
        if requested > Privilege.ADMINISTRATOR:
            return refuse(RmcpPlusStatus.INVALID_ROLE)
        if requested > self._policy.max_privilege:
            return refuse(RmcpPlusStatus.UNAUTHORIZED_ROLE)
        if self.session_count(now) >= self._policy.max_sessions:
            return refuse(RmcpPlusStatus.INSUFFICIENT_RESOURCES)
        session = ServerSession(self.sessions.new_id(self._random_bytes), request, suite, now)
        session.max_privilege = requested
        answer = OpenSessionResponse(
            request.tag,
            RmcpPlusStatus.NO_ERRORS,
            requested,
            request.console_session_id,
            session.bmc_session_id,
            *suite.algorithms,
        )
        session.open_answer = wire.encode_v2(PayloadType.OPEN_SESSION_RESPONSE, answer.encode())
        self.sessions[session.bmc_session_id] = session
        return session.open_answer

    def _rakp1(self, rakp1: Rakp1, now: float) -> bytes | None:
        session = self.sessions.live(rakp1.bmc_session_id, now)
        if session is None or session.state == ACTIVE:
            return _rakp2_error(rakp1.tag, RmcpPlusStatus.INVALID_SESSION_ID, 0)
        if (
            session.state == RAKP2_SENT
            and rakp1.console_random == session.console_random
            and rakp1.role == session.role
            and rakp1.username == session.username
        ):
            return session.rakp2_answer  # retransmitted RAKP1
        console_id = session.console_session_id
        privilege = rakp1.role & 0x0F
        if not Privilege.CALLBACK <= privilege <= Privilege.OEM:
            return self._fail_login(
                session, _rakp2_error(rakp1.tag, RmcpPlusStatus.INVALID_ROLE, console_id)
            )
        if privilege > session.max_privilege or privilege > self._policy.max_privilege:
            status = RmcpPlusStatus.UNAUTHORIZED_ROLE
            return self._fail_login(session, _rakp2_error(rakp1.tag, status, console_id))
        if not rakp1.username or len(rakp1.username) > MAX_USERNAME_LENGTH:
            status = RmcpPlusStatus.UNAUTHORIZED_NAME  # anonymous login is not offered
            return self._fail_login(session, _rakp2_error(rakp1.tag, status, console_id))
        password = self._credentials(rakp1.username)
        if password is None:
            status = RmcpPlusStatus.UNAUTHORIZED_NAME
            return self._fail_login(session, _rakp2_error(rakp1.tag, status, console_id))
        session.console_random = rakp1.console_random
        session.bmc_random = self._random_bytes(16)
        session.role = rakp1.role
        session.username = rakp1.username
        session.password = password
        session.last_activity = now
        code = crypto.rakp2_key_exchange_code(
            session.suite,
            password,
            console_session_id=console_id,
            bmc_session_id=session.bmc_session_id,
            console_random=session.console_random,
            bmc_random=session.bmc_random,
            bmc_guid=self._guid,
            role=rakp1.role,
            username=rakp1.username,
        )
        answer = Rakp2(
            rakp1.tag, RmcpPlusStatus.NO_ERRORS, console_id, session.bmc_random, self._guid, code
        )
        session.rakp2_answer = wire.encode_v2(PayloadType.RAKP2, answer.encode())
        session.state = RAKP2_SENT
        return session.rakp2_answer

    def _fail_login(self, session: ServerSession, answer: bytes) -> bytes:
        self.sessions.pop(session.bmc_session_id, None)
        return answer

    def _rakp3(self, rakp3: Rakp3, now: float) -> bytes | None:
        session = self.sessions.live(rakp3.bmc_session_id, now)
        if session is not None and session.state == ACTIVE:
            if rakp3.status == RmcpPlusStatus.NO_ERRORS and crypto.codes_match(
                session.rakp3_code, rakp3.key_exchange_code
            ):
                return session.rakp4_answer  # retransmitted RAKP3: RAKP4 was lost
            return None
        if session is None or session.state != RAKP2_SENT:
            return _rakp4_error(rakp3.tag, RmcpPlusStatus.INVALID_SESSION_ID, 0)
        console_id = session.console_session_id
        if rakp3.status != RmcpPlusStatus.NO_ERRORS:
            self.sessions.pop(session.bmc_session_id, None)  # the console gave up (bad RAKP2)
            return None
        suite = session.suite
        expected = crypto.rakp3_key_exchange_code(
            suite,
            session.password,
            bmc_random=session.bmc_random,
            console_session_id=console_id,
            role=session.role,
            username=session.username,
        )
        if not crypto.codes_match(expected, rakp3.key_exchange_code):
            status = RmcpPlusStatus.INVALID_INTEGRITY_CHECK_VALUE
            return self._fail_login(session, _rakp4_error(rakp3.tag, status, console_id))
        sik = crypto.session_integrity_key(
            suite,
            self._policy.kg or session.password,
            console_random=session.console_random,
            bmc_random=session.bmc_random,
            role=session.role,
            username=session.username,
        )
        icv = crypto.rakp4_integrity_check_value(
            suite,
            sik,
            console_random=session.console_random,
            bmc_session_id=session.bmc_session_id,
            bmc_guid=self._guid,
        )
        session.crypto = crypto.SessionCrypto(suite, sik, self._random_bytes)
        session.state = ACTIVE
        session.password = b""  # no longer needed once the keys exist
        session.rakp3_code = rakp3.key_exchange_code
        session.privilege = min(self._policy.initial_privilege, session.role & 0x0F)
        session.last_activity = now
        answer = Rakp4(rakp3.tag, RmcpPlusStatus.NO_ERRORS, console_id, icv)
        session.rakp4_answer = wire.encode_v2(PayloadType.RAKP4, answer.encode())
        return session.rakp4_answer

    # -- inside a session -------------------------------------------------------------------
    def _in_session(self, datagram: bytes, now: float) -> bytes | None:
        session_id: int = _U32.unpack_from(datagram, 6)[0]
        session = self.sessions.live(session_id, now)
        if session is None or session.state != ACTIVE or session.crypto is None:
            return None
        try:
            packet = session.crypto.verify(datagram)  # integrity first, before any parsing
        except MalformedPacketError:
            self.integrity_failures += 1
            return None
        if not packet.encrypted or packet.payload_type != PayloadType.IPMI:
            return None  # suites 3 and 17 negotiate AES: plaintext payloads are refused
        sequence = packet.sequence
        cached = session.answers.get(sequence)
        if cached is not None:
            session.last_activity = now
            return cached  # a retransmitted request: same answer, not executed twice
        highest = session.highest_sequence
        if sequence == 0 or (
            highest
            and not highest - SEQUENCE_WINDOW_BEHIND < sequence <= highest + SEQUENCE_WINDOW_AHEAD
        ):
            return None  # replayed or wildly out of order
        request = wire.IpmiRequest.decode(session.crypto.decrypt(packet.payload))
        session.last_activity = now
        session.highest_sequence = max(highest, sequence)
        is_control = (request.netfn, request.cmd) == (NetFn.CHASSIS, Command.CHASSIS_CONTROL)
        last = session.last_control
        if (
            is_control
            and last is not None
            and now - last[0] <= DUPLICATE_WINDOW
            and (last[1], last[2]) == (request.rq_seq, request.data)
        ):
            return last[3]  # the same power action again: answered, not repeated
        code, data, close = self._command(session, request, now)
        answer = session.crypto.seal(
            PayloadType.IPMI,
            session.console_session_id,
            session.next_outbound_sequence(),
            _response(request, code, data),
        )
        if close:
            self.sessions.pop(session.bmc_session_id, None)
            return answer
        if is_control:
            session.last_control = (now, request.rq_seq, request.data, answer)
        answers = session.answers
        answers[sequence] = answer
        if len(answers) > REPLAY_CACHE:
            del answers[next(iter(answers))]
        return answer

    def _command(
        self, session: ServerSession, request: wire.IpmiRequest, now: float
    ) -> tuple[int, bytes, bool]:
        """(completion code, response data, close the session afterwards)."""
        key = (request.netfn, request.cmd)
        needed = _REQUIRED_PRIVILEGE.get(key)
        if needed is None:
            return CC_INVALID_COMMAND, b"", False
        if session.privilege < needed:
            return CC_INSUFFICIENT_PRIVILEGE, b"", False
        try:
            if key == (NetFn.CHASSIS, Command.GET_CHASSIS_STATUS):
                on = self._system.chassis_power(now)
                faults = self._system.chassis_faults(now) & 0x1E
                status = GetChassisStatusResponse(power_state=(0x01 if on else 0x00) | faults)
                return CC_OK, status.encode(), False
            if key == (NetFn.CHASSIS, Command.CHASSIS_CONTROL):
                action = ChassisControlRequest.decode(request.data).action
                return self._system.chassis_control(action, now), b"", False
            if key == (NetFn.APP, Command.GET_DEVICE_ID):
                return CC_OK, self._device_id(), False
            if key == (NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL):
                return self._set_privilege(session, request.data)
            if key == (NetFn.APP, Command.CLOSE_SESSION):
                return self._close_session(session, request.data)
            if key == (NetFn.APP, Command.GET_CHANNEL_AUTH_CAPABILITIES):
                return (*self._auth_capabilities(request.data), False)
            if key == (NetFn.APP, GET_CHANNEL_CIPHER_SUITES):
                return (*self._cipher_suites(request.data), False)
        except MalformedPacketError:
            return CC_REQUEST_DATA_LENGTH_INVALID, b"", False
        return CC_INVALID_COMMAND, b"", False  # in the privilege table, but no handler

    def _device_id(self) -> bytes:
        return GetDeviceIdResponse(
            device_id=0x20,
            device_revision=0x01,
            firmware_major=0x01,
            firmware_minor=0x00,
            ipmi_version=0x02,
            additional_support=0x80,  # chassis device
            manufacturer_id=self._policy.manufacturer_id,
            product_id=self._policy.product_id,
        ).encode()

    def _set_privilege(self, session: ServerSession, data: bytes) -> tuple[int, bytes, bool]:
        wanted = SetSessionPrivilegeLevelRequest.decode(data).privilege
        if wanted == 0:  # "no change": report the present level
            return CC_OK, SetSessionPrivilegeLevelResponse(session.privilege).encode(), False
        if not Privilege.CALLBACK <= wanted <= Privilege.ADMINISTRATOR:
            return CC_INVALID_DATA_FIELD, b"", False
        if wanted > self._policy.max_privilege:
            return CC_PRIVILEGE_NOT_AVAILABLE, b"", False
        if wanted > session.role & 0x0F:
            return CC_PRIVILEGE_EXCEEDS_LIMIT, b"", False
        session.privilege = wanted
        return CC_OK, SetSessionPrivilegeLevelResponse(wanted).encode(), False

    def _close_session(self, session: ServerSession, data: bytes) -> tuple[int, bytes, bool]:
        target = CloseSessionRequest.decode(data).session_id
        if target == session.bmc_session_id:
            return CC_OK, b"", True
        if target not in self.sessions:
            return CC_INVALID_SESSION_ID, b"", False
        if session.privilege < Privilege.ADMINISTRATOR:
            return CC_INSUFFICIENT_PRIVILEGE, b"", False
        del self.sessions[target]
        return CC_OK, b"", False


def _response(request: wire.IpmiRequest, code: int, data: bytes) -> bytes:
    return wire.IpmiResponse(
        netfn=request.netfn | 1,
        cmd=request.cmd,
        rq_seq=request.rq_seq,
        completion_code=code,
        data=data if code == CC_OK else b"",
        rq_addr=request.rq_addr,
        rq_lun=request.rq_lun,
        rs_addr=request.rs_addr,
        rs_lun=request.rs_lun,
    ).encode()


def _rakp2_error(tag: int, status: int, console_session_id: int) -> bytes:
    return wire.encode_v2(PayloadType.RAKP2, Rakp2(tag, status, console_session_id).encode())


def _rakp4_error(tag: int, status: int, console_session_id: int) -> bytes:
    return wire.encode_v2(PayloadType.RAKP4, Rakp4(tag, status, console_session_id).encode())
