"""The BMC side's sessions: settings, one session's state, and the per-BMC session table.

:class:`BmcProtocol` (``ipmi.proto.server``) handles the messages; this module holds what
it keeps between them. A session is OPENED by Open Session, RAKP2_SENT after RAKP1, ACTIVE
once RAKP3 verified and the keys exist. The table forgets a session that idled past
``idle_timeout`` (ACTIVE) or ``login_timeout`` (a login in progress), lazily, whenever it
is looked at: a BMC without traffic costs no timer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs

from ipmi.errors import MalformedPacketError
from ipmi.proto import crypto
from ipmi.proto.constants import Privilege
from ipmi.proto.messages import OpenSessionRequest

_U32 = struct.Struct("<I")


def _suite_ids(value: object) -> tuple[int, ...]:
    suites = crypto.cipher_suites(value)  # type: ignore[arg-type]  # NegotiationError on 0 etc.
    return tuple(suite.id for suite in suites)


@attrs.frozen
class ServerPolicy:
    """Settings shared by every BMC of a fleet."""

    cipher_suites: tuple[int, ...] = attrs.field(default=(17, 3), converter=_suite_ids)
    max_sessions: int = 4  # pending logins count too, as on real BMCs
    idle_timeout: float = 60.0
    login_timeout: float = 3.0  # an unfinished login is forgotten after this (OpenBMC: 3 s)
    max_privilege: int = Privilege.ADMINISTRATOR  # of the one configured user
    initial_privilege: int = Privilege.USER  # where a new session starts (IPMI v2.0 rule)
    kg: bytes | None = attrs.field(default=None, repr=False)
    manufacturer_id: int = 0x00C0DE  # not a real vendor: no client applies OEM quirks
    product_id: int = 0x5051

    def cipher_suite_records(self) -> bytes:
        """Get Channel Cipher Suites record data: one 5-byte record per suite."""
        records = b""
        for suite_id in self.cipher_suites:
            suite = crypto.cipher_suite(suite_id)
            auth, integrity, confidentiality = suite.algorithms
            records += bytes((0xC0, suite.id, auth, 0x40 | integrity, 0x80 | confidentiality))
        return records


OPENED, RAKP2_SENT, ACTIVE = 1, 2, 3  # ServerSession.state


class ServerSession:
    """One session (or login in progress) on the BMC side."""

    __slots__ = (
        "answers",
        "bmc_random",
        "bmc_session_id",
        "console_random",
        "console_session_id",
        "crypto",
        "highest_sequence",
        "last_activity",
        "last_control",
        "max_privilege",
        "open_answer",
        "open_tag",
        "outbound_sequence",
        "password",
        "privilege",
        "rakp2_answer",
        "rakp3_code",
        "rakp4_answer",
        "role",
        "state",
        "suite",
        "username",
    )

    def __init__(
        self,
        bmc_session_id: int,
        request: OpenSessionRequest,
        suite: crypto.CipherSuite,
        now: float,
    ) -> None:
        self.bmc_session_id = bmc_session_id
        self.console_session_id = request.console_session_id
        self.open_tag = request.tag
        self.suite = suite
        self.state = OPENED
        self.max_privilege = 0
        self.last_activity = now
        self.open_answer = b""
        self.console_random = b""
        self.bmc_random = b""
        self.role = 0
        self.username = b""
        self.password = b""
        self.rakp2_answer = b""
        self.rakp3_code = b""
        self.rakp4_answer = b""
        self.crypto: crypto.SessionCrypto | None = None
        self.privilege = 0
        self.highest_sequence = 0
        self.outbound_sequence = 0
        self.answers: dict[int, bytes] = {}
        # (time, rqSeq, data, answer) of the last Chassis Control, for retransmissions
        # that come under a new session sequence number with the same rqSeq
        self.last_control: tuple[float, int, bytes, bytes] | None = None

    def __repr__(self) -> str:  # never the password or keys
        return f"<ServerSession 0x{self.bmc_session_id:08x} state={self.state}>"

    def next_outbound_sequence(self) -> int:
        self.outbound_sequence = (self.outbound_sequence + 1) & 0xFFFFFFFF or 1
        return self.outbound_sequence


class SessionTable(dict[int, ServerSession]):
    """One BMC's sessions by its session id (pending logins count too, as on real BMCs)."""

    __slots__ = ("_policy",)

    def __init__(self, policy: ServerPolicy) -> None:
        super().__init__()
        self._policy = policy

    def expired(self, session: ServerSession, now: float) -> bool:
        policy = self._policy
        limit = policy.idle_timeout if session.state == ACTIVE else policy.login_timeout
        return now - session.last_activity > limit

    def count(self, now: float) -> int:
        """Live sessions at ``now``; the expired ones are forgotten."""
        for session_id in [sid for sid, s in self.items() if self.expired(s, now)]:
            del self[session_id]
        return len(self)

    def live(self, session_id: int, now: float) -> ServerSession | None:
        """The session, unless it is unknown or has expired (then it is forgotten)."""
        session = self.get(session_id)
        if session is not None and self.expired(session, now):
            del self[session_id]
            return None
        return session

    def new_id(self, random_bytes: Callable[[int], bytes]) -> int:
        """A fresh, non-zero session id not in use."""
        for _ in range(64):
            session_id: int = _U32.unpack(random_bytes(4))[0]
            if session_id and session_id not in self:
                return session_id
        raise MalformedPacketError("entropy source keeps repeating session ids")
