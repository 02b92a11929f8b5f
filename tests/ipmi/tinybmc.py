"""A tiny scriptable BMC for session-machine tests, built from the protocol core's messages
and crypto (not from ipmi/proto/server.py), with knobs for misbehaviour."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

from ipmi.proto import crypto, wire
from ipmi.proto import messages as m
from ipmi.proto.constants import PayloadType


def deterministic_entropy(label: bytes) -> Callable[[int], bytes]:
    counter = itertools.count()

    def entropy(count: int) -> bytes:
        return hashlib.shake_256(label + next(counter).to_bytes(8, "big")).digest(count)

    return entropy


class TinyBmc:
    def __init__(
        self,
        *,
        username: bytes = b"admin",
        password: bytes = b"password",
        kg: bytes | None = None,
        suites: tuple[int, ...] = (17, 3),
        answer_algorithms: tuple[int, int, int] | None = None,  # e.g. stock pyghmi: (1, 1, 1)
        forge_rakp2: bool = False,
        rakp2_status: int = 0,
        rakp4_status: int = 0,
        open_status: int = 0,
        privilege_cc: int = 0,
        ipmi20: bool = True,
        power_on: bool = False,
    ) -> None:
        self.username = username
        self.password = password
        self.kg = kg
        self.suites = suites
        self.answer_algorithms = answer_algorithms
        self.forge_rakp2 = forge_rakp2
        self.rakp2_status = rakp2_status
        self.rakp4_status = rakp4_status
        self.open_status = open_status
        self.privilege_cc = privilege_cc
        self.ipmi20 = ipmi20
        self.power_on = power_on
        self.entropy = deterministic_entropy(b"bmc")
        self.guid = bytes(range(0x40, 0x50))
        self.received: list[bytes] = []
        self.open_requests: list[m.OpenSessionRequest] = []
        self.commands: list[tuple[int, int, bytes]] = []
        self.closed_session_ids: list[int] = []
        self.session: crypto.SessionCrypto | None = None
        self.out_seq = 0
        self.privilege = 0

    # the datagram a well-behaved BMC answers with, or None
    def handle(self, datagram: bytes) -> bytes | None:
        self.received.append(datagram)
        if not wire.is_v2(datagram):
            return self._auth_capabilities(datagram)
        packet = wire.decode_v2(
            datagram, self.session.suite.integrity_length if self.session else 0
        )
        if packet.authenticated:
            return self._command(datagram)
        handler = {
            PayloadType.OPEN_SESSION_REQUEST: self._open,
            PayloadType.RAKP1: self._rakp1,
            PayloadType.RAKP3: self._rakp3,
        }[PayloadType(packet.payload_type)]
        return handler(packet.payload)

    def _auth_capabilities(self, datagram: bytes) -> bytes:
        request = wire.IpmiRequest.decode(wire.V15Packet.decode(datagram).message)
        assert (request.netfn, request.cmd) == (0x06, 0x38)
        data = m.GetChannelAuthCapabilitiesResponse(
            1, 0x80 | 0x14, 0x04, 0x03 if self.ipmi20 else 0x01
        )
        response = wire.IpmiResponse(0x07, 0x38, request.rq_seq, 0, data.encode())
        return wire.V15Packet(response.encode()).encode()

    def _open(self, payload: bytes) -> bytes:
        request = m.OpenSessionRequest.decode(payload)
        self.open_requests.append(request)
        self.console_session_id = request.console_session_id
        self.bmc_session_id = int.from_bytes(self.entropy(4), "little") | 1
        asked = (request.auth, request.integrity, request.confidentiality)
        if self.answer_algorithms is not None:
            answered = self.answer_algorithms
        else:
            suite = crypto.suite_by_algorithms(*asked)
            if suite is None or suite.id not in self.suites:
                response = m.OpenSessionResponse(request.tag, 0x11, 0, request.console_session_id)
                return wire.encode_v2(0x11, response.encode())
            answered = asked
        if self.open_status:
            response = m.OpenSessionResponse(
                request.tag, self.open_status, 0, request.console_session_id
            )
            return wire.encode_v2(0x11, response.encode())
        self.suite = crypto.suite_by_algorithms(*answered) or crypto.SUITE_3
        response = m.OpenSessionResponse(
            request.tag,
            0,
            request.privilege,
            request.console_session_id,
            self.bmc_session_id,
            *answered,
        )
        return wire.encode_v2(0x11, response.encode())

    def _rakp1(self, payload: bytes) -> bytes:
        rakp1 = m.Rakp1.decode(payload)
        assert rakp1.bmc_session_id == self.bmc_session_id
        self.console_random = rakp1.console_random
        self.role = rakp1.role
        self.bmc_random = self.entropy(16)
        status = self.rakp2_status
        if rakp1.username != self.username:
            status = 0x0D
        if status:
            return wire.encode_v2(
                0x13, m.Rakp2(rakp1.tag, status, self.console_session_id).encode()
            )
        if self.forge_rakp2:
            code = self.entropy(self.suite.digest_length)
        else:
            code = crypto.rakp2_key_exchange_code(
                self.suite,
                self.password,
                console_session_id=self.console_session_id,
                bmc_session_id=self.bmc_session_id,
                console_random=self.console_random,
                bmc_random=self.bmc_random,
                bmc_guid=self.guid,
                role=self.role,
                username=rakp1.username,
            )
        rakp2 = m.Rakp2(rakp1.tag, 0, self.console_session_id, self.bmc_random, self.guid, code)
        return wire.encode_v2(0x13, rakp2.encode())

    def _rakp3(self, payload: bytes) -> bytes:
        rakp3 = m.Rakp3.decode(payload)
        expected = crypto.rakp3_key_exchange_code(
            self.suite,
            self.password,
            bmc_random=self.bmc_random,
            console_session_id=self.console_session_id,
            role=self.role,
            username=self.username,
        )
        status = self.rakp4_status or (
            0 if crypto.codes_match(expected, rakp3.key_exchange_code) else 0x0F
        )
        if status:
            return wire.encode_v2(
                0x15, m.Rakp4(rakp3.tag, status, self.console_session_id).encode()
            )
        sik = crypto.session_integrity_key(
            self.suite,
            self.kg or self.password,
            console_random=self.console_random,
            bmc_random=self.bmc_random,
            role=self.role,
            username=self.username,
        )
        icv = crypto.rakp4_integrity_check_value(
            self.suite,
            sik,
            console_random=self.console_random,
            bmc_session_id=self.bmc_session_id,
            bmc_guid=self.guid,
        )
        self.session = crypto.SessionCrypto(self.suite, sik, self.entropy)
        self.out_seq = 0
        self.privilege = 2
        return wire.encode_v2(0x15, m.Rakp4(rakp3.tag, 0, self.console_session_id, icv).encode())

    def _command(self, datagram: bytes) -> bytes:
        assert self.session is not None
        packet, plaintext = self.session.open(datagram)
        assert packet.session_id == self.bmc_session_id
        request = wire.IpmiRequest.decode(plaintext)
        self.commands.append((request.netfn, request.cmd, request.data))
        cc, data = 0, b""
        key = (request.netfn, request.cmd)
        if key == (0x06, 0x3B):
            cc = self.privilege_cc
            if not cc:
                self.privilege = request.data[0] or self.privilege
                data = bytes((self.privilege,))
        elif key == (0x00, 0x01):
            data = m.GetChassisStatusResponse(int(self.power_on), 0, 0).encode()
        elif key == (0x00, 0x02):
            self.power_on = request.data[0] in (1, 2, 3)
        elif key == (0x06, 0x3C):
            self.closed_session_ids.append(m.CloseSessionRequest.decode(request.data).session_id)
        elif key == (0x06, 0x01):
            data = m.GetDeviceIdResponse(0x20, 1, 1, 0, 2, 0, 4542, 1).encode()
        else:
            cc = 0xC1
        return self.respond(request, cc, data)

    def respond(
        self, request: wire.IpmiRequest, cc: int, data: bytes, *, plaintext: bytes | None = None
    ) -> bytes:
        """Seal a response (or arbitrary plaintext) under the next BMC sequence number."""
        assert self.session is not None
        self.out_seq += 1
        message = wire.IpmiResponse(
            request.netfn | 1, request.cmd, request.rq_seq, cc, data
        ).encode()
        return self.session.seal(
            0,
            self.console_session_id,
            self.out_seq,
            plaintext if plaintext is not None else message,
        )
