"""``ClientSession``: the client side of an RMCP+ session as a pure state machine.

Bytes in, events and bytes out; no sockets, no clocks. The transport sends what this returns,
feeds every received datagram to :meth:`ClientSession.receive`, and owns all timing: on a
timeout during login it calls :meth:`begin_login` again (a lost RAKP exchange restarts the
handshake from scratch, never resends RAKP1/3); on a timeout of an established request it
calls :meth:`retransmit` (same rqSeq, new session sequence number) or :meth:`forget`.

Login flow (round trips)::

    [Get Channel Auth Capabilities]   IPMI 1.5 sessionless probe (probe_auth_capabilities)
    Open Session Request/Response     suite fallback: next suite on refusal or mismatch
    RAKP1 / RAKP2                     BMC's key exchange code verified (password)
    RAKP3 / RAKP4                     BMC's integrity check value verified (SIK)
    [Set Session Privilege Level]     when the privilege is above USER
    -> LoginComplete

Rules (details and reasons in docs/ipmi-protocol.md): only suites 3 and 17, and the Open
Session answer must name exactly the requested algorithms (else the next suite); the Open
Session Request asks for the configured privilege, never "highest"; RAKP2's code and RAKP4's
value are verified; after login a datagram must be authenticated, for our session id, and
pass its integrity check before its payload is parsed or its sequence number recorded, else
it is dropped and counted in :attr:`ClientSession.drops`; an inbound replay window; outbound
sequence numbers never repeat (exhaustion poisons); responses match on (NetFn | 1, cmd,
rqSeq), anything else is a stale drop. An authenticated packet that is unencrypted or not a
valid IPMI message comes from a key holder breaking the protocol: it poisons the session.

Forged answers: an RAKP2 whose key exchange code, or an RAKP4 whose integrity check value,
does not verify is dropped (``drops["forged"]``), not believed: the step is unauthenticated,
so anyone who saw our Open Session could have sent it ahead of the BMC's real answer. The
machine keeps waiting; only when the driver reports the step's wait expired with nothing
but such answers (:meth:`ClientSession.login_step_timed_out`) is it the BMC's verdict, a
wrong password or K_G, and AuthenticationError.

Exceptions from :meth:`receive`: AuthenticationError (unauthorized name), NegotiationError
(every suite refused, privilege refused, session refused), SessionLostError (poisoned).
Malformed datagrams never raise: they are drops.
Invalid constructor arguments (user name over 16 bytes, password over 20) raise ValueError.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Never

from ipmi.errors import (
    AuthenticationError,
    IpmiError,
    MalformedPacketError,
    NegotiationError,
    SessionLostError,
)
from ipmi.proto import messages as msg
from ipmi.proto import wire
from ipmi.proto.constants import (
    CREDENTIALS_REFUSED,
    MAX_PASSWORD_LENGTH,
    MAX_USERNAME_LENGTH,
    PRIVILEGE_REFUSED,
    SESSION_FORGOTTEN,
    SUITE_REFUSED,
    PayloadType,
    Privilege,
    RmcpPlusStatus,
    status_name,
)
from ipmi.proto.crypto import CipherSuite, SessionCrypto
from ipmi.proto.crypto import cipher_suites as validated_suites
from ipmi.proto.events import (
    Event,
    LoginComplete,
    LoginLost,
    LoginStep,
    Response,
    State,
    Transition,
    next_state,
)
from ipmi.proto.handshake import Handshake
from ipmi.proto.requests import ReplayWindow, RequestTable

MAX_SEQUENCE = 0xFFFFFFFF


class ClientSession:
    """One RMCP+ session with one BMC, client side. See the module docstring.

    Slotted, and the login's nonces, GUID and SIK are dropped as soon as the keys exist:
    an agent holds one of these per node for days."""

    __slots__ = (
        "_crypto",
        "_entropy",
        "_handshake",
        "_kg",
        "_out_seq",
        "_password",
        "_priv_request_id",
        "_probe",
        "_probe_rq_seq",
        "_refusal",
        "_replay",
        "_requests",
        "_suite_index",
        "_suites",
        "_tag",
        "_username",
        "_window",
        "bmc_kg_set",
        "bmc_session_id",
        "console_session_id",
        "drops",
        "privilege",
        "state",
        "suite",
    )

    def __init__(
        self,
        *,
        username: bytes,
        password: bytes,
        privilege: Privilege = Privilege.ADMINISTRATOR,
        cipher_suites: Sequence[int] = (17, 3),
        entropy: Callable[[int], bytes],
        kg: bytes | None = None,
        probe_auth_capabilities: bool = True,
        replay_window: int = 32,
    ) -> None:
        if len(username) > MAX_USERNAME_LENGTH:
            raise ValueError("IPMI user names are at most 16 bytes")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise ValueError("IPMI 2.0 passwords are at most 20 bytes")
        if kg is not None and not 0 < len(kg) <= 32:
            raise ValueError("K_G must be 1 to 32 bytes")
        privilege = Privilege(privilege)
        if privilege not in (Privilege.USER, Privilege.OPERATOR, Privilege.ADMINISTRATOR):
            raise ValueError("privilege must be user, operator or administrator")
        ReplayWindow(replay_window)  # validates the size
        self._suites: tuple[CipherSuite, ...] = validated_suites(cipher_suites)
        self._username = bytes(username)
        self._password = bytes(password)
        self._kg = bytes(kg) if kg is not None else None
        self._entropy = entropy
        self._probe = probe_auth_capabilities
        self._window = replay_window
        self.privilege = privilege
        self.drops: Counter[str] = Counter()
        self.state = State.IDLE
        self.suite: CipherSuite | None = None
        self.console_session_id = 0
        self.bmc_session_id = 0
        self.bmc_kg_set = False  # from the capabilities probe, for a clearer error message
        self._tag = 0
        self._requests = RequestTable()  # its rqSeq counter runs on across re-logins
        self._reset_login_state()

    def __repr__(self) -> str:
        suite = self.suite.id if self.suite else None
        return f"<ClientSession {self.state.value} suite={suite} user={self._username!r}>"

    def _reset_login_state(self) -> None:
        self._suite_index = 0
        self._handshake: Handshake | None = None
        self._crypto: SessionCrypto | None = None
        self._out_seq = 1
        self._replay = ReplayWindow(self._window)
        self._requests.clear()
        self._probe_rq_seq = -1
        self._priv_request_id = 0
        self._refusal: str | None = None  # why the step's answers so far did not verify

    # --- public API ----------------------------------------------------------------------

    @property
    def role(self) -> int:
        """The RAKP role byte: privilege with name-only lookup."""
        return int(self.privilege) | msg.NAME_ONLY_LOOKUP

    @property
    def outstanding(self) -> int:
        return len(self._requests)

    @property
    def established(self) -> bool:
        """True when requests can be sent: logged in, not closed, poisoned or abandoned."""
        return self.state is State.ESTABLISHED

    @property
    def probing(self) -> bool:
        """True while the sessionless capabilities probe awaits its answer: no step so far
        has opened or used a session on the BMC."""
        return self.state is State.AWAIT_AUTH_CAP

    def abandon(self) -> None:
        """The driver gave up on the established session (no answer after every
        retransmission): it is presumed gone, so :attr:`established` turns False and the
        next use logs in again. :meth:`close` still works, with the keys it has."""
        self._requests.clear()
        self._move(Transition.ABANDONED)

    def begin_login(self) -> bytes:
        """(Re)start the handshake from scratch and return the first datagram."""
        self._reset_login_state()
        self.suite = None
        self.bmc_session_id = 0
        self.console_session_id = self._new_console_session_id()
        self._handshake = Handshake(
            username=self._username,
            password=self._password,
            kg=self._kg,
            role=self.role,
            console_random=self._random(16),
        )
        if self._probe:
            self._move(Transition.BEGIN_WITH_PROBE)
            self._probe_rq_seq = self._requests.take_rq_seq()
            request = msg.GetChannelAuthCapabilitiesRequest(int(self.privilege))
            message = wire.IpmiRequest(
                request.NETFN, request.CMD, self._probe_rq_seq, request.encode()
            ).encode()
            return wire.V15Packet(message).encode()
        return self._open_session_request(Transition.BEGIN)

    def receive(self, datagram: bytes) -> Event | None:
        """Feed one received datagram; an event, or None when it was dropped (counted)."""
        if self.state is State.ESTABLISHED:  # the hot path: no table lookup, no try
            return self._receive_in_session(datagram)
        receiver = _RECEIVERS.get(self.state)
        if receiver is None:
            return self._drop("closed")
        try:
            return receiver(self, datagram)
        except (AuthenticationError, NegotiationError):
            # A failed login cannot continue; close() still frees a half-open BMC session.
            self._move(Transition.LOGIN_FAILED)
            raise

    def login_step_timed_out(self) -> None:
        """The driver's wait for the current login step expired without a valid answer.

        If the only answers were an RAKP2 or RAKP4 whose code did not verify, no forger
        raced the BMC (its real answer would have verified): that is the BMC's own answer
        to a wrong password or K_G. Raises AuthenticationError then (the state becomes
        POISONED; never retry it, BMCs lock users out). Otherwise returns, and the driver
        begins the login again."""
        if self._refusal is not None and self.state in (State.AWAIT_RAKP2, State.AWAIT_RAKP4):
            reason, self._refusal = self._refusal, None
            self._move(Transition.LOGIN_FAILED)
            raise AuthenticationError(reason)

    def request(self, netfn: int, cmd: int, data: bytes = b"") -> tuple[int, bytes]:
        """Queue a request: (request_id, datagram to send)."""
        if self.state is not State.ESTABLISHED:
            raise SessionLostError(f"no established session (state {self.state.value})")
        return self._request(netfn, cmd, data)

    def retransmit(self, request_id: int) -> bytes:
        """The same request (same rqSeq) under a new session sequence number."""
        if self.state not in (State.ESTABLISHED, State.AWAIT_PRIV):
            raise SessionLostError(f"no established session (state {self.state.value})")
        pending = self._requests.get(request_id)
        if pending is None:
            raise IpmiError(f"request {request_id} is not outstanding")
        return self._seal(pending.message)

    def forget(self, request_id: int) -> None:
        """Stop waiting for a request; a late answer is then dropped as stale."""
        self._requests.forget(request_id)

    def close(self) -> bytes:
        """The Close Session datagram (no answer is needed); the state becomes CLOSED."""
        if self._crypto is None or self.state in (State.CLOSED, State.IDLE):
            self._move(Transition.CLOSE)
            raise SessionLostError("no session to close")
        # Also from POISONED: the keys still work, and it frees the BMC's session slot.
        request = msg.CloseSessionRequest(self.bmc_session_id)
        try:
            _, datagram = self._request(request.NETFN, request.CMD, request.encode())
        finally:
            self._requests.clear()
            self._move(Transition.CLOSE)
        return datagram

    # --- login ---------------------------------------------------------------------------

    def _receive_auth_cap(self, datagram: bytes) -> Event | None:
        try:
            packet = wire.V15Packet.decode(datagram)
            response = wire.IpmiResponse.decode(packet.message)
        except MalformedPacketError:
            return self._drop("malformed")
        if (response.netfn, response.cmd, response.rq_seq) != (
            msg.GetChannelAuthCapabilitiesResponse.NETFN,
            msg.GetChannelAuthCapabilitiesResponse.CMD,
            self._probe_rq_seq,
        ):
            return self._drop("stale")
        if response.completion_code == 0:
            try:
                caps = msg.GetChannelAuthCapabilitiesResponse.decode(response.data)
            except MalformedPacketError:
                return self._drop("malformed")
            if caps.auth_types & 0x80 and not caps.extended_capabilities & 0x02:
                raise NegotiationError("BMC does not support IPMI 2.0 (RMCP+) on this channel")
            self.bmc_kg_set = caps.kg_set
        # A refused probe is only advisory: RMCP+ login is attempted anyway.
        return LoginStep(self._open_session_request(Transition.CAPABILITIES_ANSWERED))

    def _open_session_request(self, transition: Transition) -> bytes:
        suite = self._suites[self._suite_index]
        self._move(transition)
        request = msg.OpenSessionRequest(
            tag=self._next_tag(),
            privilege=int(self.privilege),
            console_session_id=self.console_session_id,
            auth=suite.auth,
            integrity=suite.integrity,
            confidentiality=suite.confidentiality,
        )
        return wire.encode_v2(PayloadType.OPEN_SESSION_REQUEST, request.encode())

    def _receive_setup(self, datagram: bytes) -> Event | None:
        try:
            packet = wire.decode_v2(datagram)
        except MalformedPacketError:
            return self._drop("malformed")
        if packet.authenticated or packet.encrypted or packet.session_id != 0:
            return self._drop("unexpected")
        expected, handle = _SETUP_STEPS[self.state]
        if packet.payload_type != expected:
            return self._drop("unexpected")
        try:
            return handle(self, packet.payload)
        except MalformedPacketError:
            return self._drop("malformed")

    def _is_ours(self, tag: int, console_session_id: int, status: int) -> bool:
        if tag != self._tag:
            return False
        # Error answers may carry no session id; a successful one must carry ours.
        return console_session_id == self.console_session_id or (
            status != 0 and console_session_id == 0
        )

    def _receive_open(self, response: msg.OpenSessionResponse) -> Event | None:
        if not self._is_ours(response.tag, response.console_session_id, response.status):
            return self._drop("stale")
        suite = self._suites[self._suite_index]
        if response.status in SUITE_REFUSED:
            return self._next_suite(f"BMC refused cipher suite {suite.id}")
        if response.status in PRIVILEGE_REFUSED:
            raise NegotiationError(
                f"BMC refused privilege {self.privilege.name.lower()}: "
                f"{status_name(response.status)}"
            )
        if response.status != RmcpPlusStatus.NO_ERRORS:
            raise NegotiationError(f"BMC refused the session: {status_name(response.status)}")
        answered = (response.auth, response.integrity, response.confidentiality)
        if answered != suite.algorithms:
            # e.g. a BMC that answers suite 3 whatever was asked: never take what was not
            # requested (it could be a "none" algorithm).
            return self._next_suite(
                f"BMC answered algorithms {answered} to a request for cipher suite {suite.id}"
            )
        if response.bmc_session_id == 0:
            return self._drop("malformed")
        self.suite = suite
        self.bmc_session_id = response.bmc_session_id
        self._move(Transition.OPEN_ACCEPTED)
        rakp1 = self._require_handshake().rakp1(self._next_tag(), self.bmc_session_id)
        return LoginStep(wire.encode_v2(PayloadType.RAKP1, rakp1.encode()))

    def _next_suite(self, reason: str) -> Event:
        self._suite_index += 1
        if self._suite_index >= len(self._suites):
            tried = ", ".join(str(suite.id) for suite in self._suites)
            raise NegotiationError(f"no acceptable cipher suite (tried {tried}): {reason}")
        return LoginStep(self._open_session_request(Transition.SUITE_REFUSED))

    def _receive_rakp2(self, rakp2: msg.Rakp2) -> Event | None:
        if not self._is_ours(rakp2.tag, rakp2.console_session_id, rakp2.status):
            return self._drop("stale")
        if rakp2.status in SESSION_FORGOTTEN:
            return LoginLost(f"BMC answered RAKP2 with {status_name(rakp2.status)}")
        if rakp2.status != RmcpPlusStatus.NO_ERRORS:
            raise self._status_error("RAKP2", rakp2.status)
        suite = self._require_suite()
        handshake = self._require_handshake()
        if not handshake.rakp2_verifies(
            suite,
            rakp2,
            console_session_id=self.console_session_id,
            bmc_session_id=self.bmc_session_id,
        ):
            # Forged, or the BMC's answer to a wrong password: the step's end tells which.
            self._refusal = (
                "BMC's RAKP2 key exchange code does not verify: wrong password for this user"
            )
            return self._drop("forged")
        self._refusal = None
        code = handshake.accept_rakp2(suite, rakp2, console_session_id=self.console_session_id)
        rakp3 = msg.Rakp3(self._next_tag(), 0, self.bmc_session_id, code)
        self._move(Transition.RAKP2_VERIFIED)
        return LoginStep(wire.encode_v2(PayloadType.RAKP3, rakp3.encode()))

    def _receive_rakp4(self, rakp4: msg.Rakp4) -> Event | None:
        if not self._is_ours(rakp4.tag, rakp4.console_session_id, rakp4.status):
            return self._drop("stale")
        if rakp4.status in SESSION_FORGOTTEN:
            return LoginLost(f"BMC answered RAKP4 with {status_name(rakp4.status)}")
        if rakp4.status != RmcpPlusStatus.NO_ERRORS:
            raise self._status_error("RAKP4", rakp4.status)
        suite = self._require_suite()
        handshake = self._require_handshake()
        if not handshake.rakp4_verifies(suite, rakp4, bmc_session_id=self.bmc_session_id):
            hint = "" if self._kg is not None or not self.bmc_kg_set else " (the BMC has a K_G)"
            self._refusal = f"BMC's RAKP4 integrity check value does not verify: wrong K_G{hint}"
            return self._drop("forged")
        self._refusal = None
        self._crypto = handshake.session_crypto(suite, self._entropy)
        # The nonces, GUID and SIK go with it (a re-login draws new ones); the password
        # stays, for a transparent re-login.
        self._handshake = None
        if self.privilege <= Privilege.USER:
            self._move(Transition.LOGIN_COMPLETE)
            return LoginComplete(suite.id, self.privilege)
        # RMCP+ sessions start at USER level; raise to the requested one.
        self._move(Transition.RAKP4_VERIFIED)
        request = msg.SetSessionPrivilegeLevelRequest(int(self.privilege))
        self._priv_request_id, datagram = self._request(
            request.NETFN, request.CMD, request.encode()
        )
        return LoginStep(datagram)

    def _require_handshake(self) -> Handshake:
        if self._handshake is None:  # unreachable by construction; keeps the types honest
            raise SessionLostError("login state lost its handshake")
        return self._handshake

    def _status_error(self, message: str, status: int) -> IpmiError:
        text = f"BMC answered {message} with {status_name(status)}"
        if status in CREDENTIALS_REFUSED:
            return AuthenticationError(text)
        return NegotiationError(text)

    def _require_suite(self) -> CipherSuite:
        if self.suite is None:  # unreachable by construction; keeps the types honest
            raise SessionLostError("login state lost its cipher suite")
        return self.suite

    # --- established session -------------------------------------------------------------

    def _receive_in_session(self, datagram: bytes) -> Event | None:
        crypto = self._crypto
        if crypto is None:
            return self._drop("unexpected")
        if not wire.is_v2(datagram):
            return self._drop("unauthenticated")  # IPMI 1.5 or ASF: never part of a session
        try:
            flags, session_id, sequence, payload, signed, auth_code = wire.split_v2(
                datagram, crypto.suite.integrity_length
            )
        except MalformedPacketError:
            return self._drop("malformed")
        if not flags & wire.PAYLOAD_AUTHENTICATED:
            return self._drop("unauthenticated")
        if session_id != self.console_session_id:
            return self._drop("wrong-session")
        if not crypto.authentic(signed, auth_code):
            return self._drop("integrity")
        if not self._replay.accept(sequence):
            return self._drop("replay")
        if flags & wire.PAYLOAD_TYPE_MASK != PayloadType.IPMI:
            return self._drop("unexpected")
        # From here on the packet provably comes from the BMC: a violation poisons.
        if not flags & wire.PAYLOAD_ENCRYPTED:
            self._poison("BMC sent an unencrypted payload in an encrypted session")
        try:
            netfn, cmd, rq_seq, completion_code, data = wire.split_response(crypto.decrypt(payload))
        except MalformedPacketError as error:
            self._poison(f"BMC sent an authenticated but invalid message ({error})")
        request_id = self._requests.match(netfn, cmd, rq_seq)
        if request_id is None:
            return self._drop("stale")
        if request_id == self._priv_request_id and self.state is State.AWAIT_PRIV:
            return self._receive_privilege(completion_code, data)
        return Response(request_id, netfn, cmd, completion_code, data)

    def _receive_privilege(self, completion_code: int, data: bytes) -> Event:
        if completion_code != 0:
            raise NegotiationError(
                f"BMC refused privilege {self.privilege.name.lower()} "
                f"(completion code 0x{completion_code:02x})"
            )
        try:
            granted = msg.SetSessionPrivilegeLevelResponse.decode(data).privilege
        except MalformedPacketError:
            granted = -1
        if granted != self.privilege:
            raise NegotiationError(
                f"BMC granted privilege {granted} instead of {self.privilege.name.lower()}"
            )
        self._move(Transition.LOGIN_COMPLETE)
        return LoginComplete(self._require_suite().id, self.privilege)

    def _request(self, netfn: int, cmd: int, data: bytes) -> tuple[int, bytes]:
        request_id, message = self._requests.add(
            netfn, cmd, lambda rq_seq: wire.request_message(netfn, cmd, rq_seq, data)
        )
        try:
            return request_id, self._seal(message)
        except SessionLostError:
            self._requests.forget(request_id)
            raise

    def _seal(self, message: bytes) -> bytes:
        if self._crypto is None:
            raise SessionLostError(f"no established session (state {self.state.value})")
        sequence = self._out_seq
        if sequence > MAX_SEQUENCE:
            self._poison("outbound session sequence numbers exhausted; log in again")
        self._out_seq = sequence + 1
        return self._crypto.seal(PayloadType.IPMI, self.bmc_session_id, sequence, message)

    # --- helpers -------------------------------------------------------------------------

    def _move(self, transition: Transition) -> None:
        """The only place the state changes: checked against ``TRANSITIONS``."""
        self.state = next_state(self.state, transition)

    def _poison(self, reason: str) -> Never:
        self._move(Transition.VIOLATION)
        self._requests.clear()
        raise SessionLostError(reason)

    def _drop(self, reason: str) -> Event | None:
        """Count a dropped datagram; returns None so callers can `return self._drop(...)`."""
        self.drops[reason] += 1
        return None

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) & 0xFF
        return self._tag

    def _random(self, count: int) -> bytes:
        value = self._entropy(count)
        if len(value) != count:
            raise ValueError("entropy source returned the wrong number of bytes")
        return value

    def _new_console_session_id(self) -> int:
        for _ in range(8):
            session_id = int.from_bytes(self._random(4), "little")
            if session_id not in (0, self.console_session_id):
                return session_id
        raise ValueError("entropy source keeps returning the same session id")


# How receive() handles a datagram in each login state (ESTABLISHED is special-cased, and a
# state not listed drops every datagram as "closed").
_RECEIVERS: dict[State, Callable[[ClientSession, bytes], Event | None]] = {
    State.AWAIT_AUTH_CAP: ClientSession._receive_auth_cap,
    State.AWAIT_OPEN: ClientSession._receive_setup,
    State.AWAIT_RAKP2: ClientSession._receive_setup,
    State.AWAIT_RAKP4: ClientSession._receive_setup,
    State.AWAIT_PRIV: ClientSession._receive_in_session,
}

# The pre-session login answers: the payload each state waits for, and its handler.
_SETUP_STEPS: dict[State, tuple[PayloadType, Callable[[ClientSession, bytes], Event | None]]] = {
    State.AWAIT_OPEN: (
        PayloadType.OPEN_SESSION_RESPONSE,
        lambda machine, payload: machine._receive_open(msg.OpenSessionResponse.decode(payload)),
    ),
    State.AWAIT_RAKP2: (
        PayloadType.RAKP2,
        lambda machine, payload: machine._receive_rakp2(msg.Rakp2.decode(payload)),
    ),
    State.AWAIT_RAKP4: (
        PayloadType.RAKP4,
        lambda machine, payload: machine._receive_rakp4(msg.Rakp4.decode(payload)),
    ),
}
