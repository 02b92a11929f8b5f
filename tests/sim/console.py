"""A scripted remote console built from the core's messages and crypto (test helper).

It talks to anything with ``receive(datagram, now) -> answer | None``: a BmcProtocol
directly (sans-I/O tests) or a real UDP socket (:class:`UdpEndpoint`, run in a thread).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from ipmi.proto import crypto, wire
from ipmi.proto.constants import Command, NetFn, PayloadType
from ipmi.proto.messages import (
    OpenSessionRequest,
    OpenSessionResponse,
    Rakp1,
    Rakp2,
    Rakp3,
    Rakp4,
    SetSessionPrivilegeLevelRequest,
)
from ipmi.sim import Fleet, open_fleet

PASSWORD = b"s3cret-pass"
ADMIN_NAME_ONLY = 0x14


@asynccontextmanager
async def checked_fleet(*args: Any, **kwargs: Any) -> AsyncIterator[Fleet]:
    """open_fleet that also checks no datagram raised inside the simulator."""
    async with open_fleet(*args, **kwargs) as fleet:
        yield fleet
        assert fleet.errors == 0, "the simulator raised while handling a datagram"


class Endpoint(Protocol):
    def receive(self, datagram: bytes, now: float) -> bytes | None: ...


class UdpEndpoint:
    """A BMC behind a real socket; blocking, so use it from a worker thread."""

    def __init__(self, host: str, port: int, timeout: float = 1.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))

    def receive(self, datagram: bytes, now: float) -> bytes | None:
        self.sock.send(datagram)
        try:
            return self.sock.recv(4096)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


class Entropy:
    """Deterministic, never-repeating bytes (so session ids differ)."""

    def __init__(self) -> None:
        self.counter = itertools.count(1)

    def __call__(self, count: int) -> bytes:
        value = next(self.counter)
        return (value.to_bytes(4, "little") * ((count + 3) // 4))[:count]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Console:
    """A scripted remote console for one login and requests."""

    def __init__(
        self, bmc: Endpoint, clock: Clock, suite_id: int = 3, console_id: int = 0xA1B2C3D4
    ):
        self.bmc = bmc
        self.clock = clock
        self.suite = crypto.cipher_suite(suite_id)
        self.console_id = console_id
        self.bmc_session_id = 0
        self.session: crypto.SessionCrypto | None = None
        self.sequence = 0
        self.rq_seq = 0

    def send(self, datagram: bytes) -> bytes | None:
        return self.bmc.receive(datagram, self.clock.now)

    def open_session(
        self, privilege: int = 4, algorithms: tuple[int, int, int] | None = None
    ) -> OpenSessionResponse:
        request = OpenSessionRequest(
            0, privilege, self.console_id, *(algorithms or self.suite.algorithms)
        )
        answer = self.send(wire.encode_v2(PayloadType.OPEN_SESSION_REQUEST, request.encode()))
        assert answer is not None
        packet = wire.decode_v2(answer)
        assert packet.payload_type == PayloadType.OPEN_SESSION_RESPONSE
        response = OpenSessionResponse.decode(packet.payload)
        self.bmc_session_id = response.bmc_session_id
        return response

    def rakp1(self, username: bytes = b"admin", role: int = ADMIN_NAME_ONLY) -> Rakp2:
        self.console_random = b"R" * 16
        self.role = role
        self.username = username
        message = Rakp1(1, self.bmc_session_id, self.console_random, role, username)
        answer = self.send(wire.encode_v2(PayloadType.RAKP1, message.encode()))
        assert answer is not None
        return Rakp2.decode(wire.decode_v2(answer).payload)

    def rakp3(self, rakp2: Rakp2, password: bytes = PASSWORD) -> Rakp4:
        code = crypto.rakp3_key_exchange_code(
            self.suite,
            password,
            bmc_random=rakp2.bmc_random,
            console_session_id=self.console_id,
            role=self.role,
            username=self.username,
        )
        answer = self.send(
            wire.encode_v2(PayloadType.RAKP3, Rakp3(2, 0, self.bmc_session_id, code).encode())
        )
        assert answer is not None
        rakp4 = Rakp4.decode(wire.decode_v2(answer).payload)
        if rakp4.status == 0:
            sik = crypto.session_integrity_key(
                self.suite,
                password,
                console_random=self.console_random,
                bmc_random=rakp2.bmc_random,
                role=self.role,
                username=self.username,
            )
            expected_icv = crypto.rakp4_integrity_check_value(
                self.suite,
                sik,
                console_random=self.console_random,
                bmc_session_id=self.bmc_session_id,
                bmc_guid=rakp2.bmc_guid,
            )
            assert crypto.codes_match(expected_icv, rakp4.integrity_check_value)
            self.session = crypto.SessionCrypto(self.suite, sik, Entropy())
        return rakp4

    def login(self, privilege: int = 4) -> None:
        assert self.open_session().status == 0
        rakp2 = self.rakp1()
        assert rakp2.status == 0
        assert self.rakp3(rakp2).status == 0
        if privilege > 2:
            code, _ = self.request(
                NetFn.APP,
                Command.SET_SESSION_PRIVILEGE_LEVEL,
                SetSessionPrivilegeLevelRequest(privilege).encode(),
            )
            assert code == 0

    def seal(self, netfn: int, cmd: int, data: bytes = b"", sequence: int | None = None) -> bytes:
        assert self.session is not None
        self.rq_seq = (self.rq_seq + 1) % 64
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        message = wire.IpmiRequest(netfn, cmd, self.rq_seq, data).encode()
        return self.session.seal(PayloadType.IPMI, self.bmc_session_id, sequence, message)

    def open_answer(self, answer: bytes | None) -> wire.IpmiResponse:
        assert answer is not None and self.session is not None
        packet, plaintext = self.session.open(answer)
        assert packet.session_id == self.console_id
        return wire.IpmiResponse.decode(plaintext)

    def request(self, netfn: int, cmd: int, data: bytes = b"") -> tuple[int, bytes]:
        response = self.open_answer(self.send(self.seal(netfn, cmd, data)))
        assert response.netfn == netfn | 1 and response.cmd == cmd
        return response.completion_code, response.data
