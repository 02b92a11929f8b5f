"""What the sans-I/O :class:`ipmi.proto.session.ClientSession` tells its driver.

``receive()`` returns one of these events (or None for a datagram it dropped); ``State`` is
where the machine is. Like h11's events: the driver (``ipmi.client``) decides what to do
with each, and does the I/O.

Every legal move of the machine is one row of :data:`TRANSITIONS`, (state, transition) ->
next state, and the machine moves only through :func:`next_state`, which raises
:class:`ipmi.errors.ProtocolStateError` for anything not listed (as h11 does).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ipmi.errors import ProtocolStateError
from ipmi.proto.constants import Privilege


class State(enum.Enum):
    IDLE = "idle"
    AWAIT_AUTH_CAP = "await-auth-cap"
    AWAIT_OPEN = "await-open"
    AWAIT_RAKP2 = "await-rakp2"
    AWAIT_RAKP4 = "await-rakp4"
    AWAIT_PRIV = "await-priv"
    ESTABLISHED = "established"
    CLOSED = "closed"
    POISONED = "poisoned"


class Transition(enum.Enum):
    """What moved the machine: one of its own decisions, or a call of its driver."""

    BEGIN_WITH_PROBE = "begin-with-probe"  # begin_login(): capabilities probe first
    BEGIN = "begin"  # begin_login() without the probe: straight to Open Session
    CAPABILITIES_ANSWERED = "capabilities-answered"  # probe answered (or refused): open
    SUITE_REFUSED = "suite-refused"  # Open Session again, with the next suite
    OPEN_ACCEPTED = "open-accepted"  # RAKP1 sent
    RAKP2_VERIFIED = "rakp2-verified"  # the BMC knows the password; RAKP3 sent
    RAKP4_VERIFIED = "rakp4-verified"  # keys agreed; Set Session Privilege Level sent
    LOGIN_COMPLETE = "login-complete"  # at the requested privilege
    LOGIN_FAILED = "login-failed"  # AuthenticationError or NegotiationError
    VIOLATION = "violation"  # a key holder broke the protocol, or sequence numbers ran out
    ABANDONED = "abandoned"  # the driver gave up: no answer after every retransmission
    CLOSE = "close"  # close(), with or without a Close Session to send


_LOGIN_STEPS: Final = (
    State.AWAIT_AUTH_CAP,
    State.AWAIT_OPEN,
    State.AWAIT_RAKP2,
    State.AWAIT_RAKP4,
    State.AWAIT_PRIV,
)
_KEYED: Final = (State.AWAIT_PRIV, State.ESTABLISHED, State.POISONED)

TRANSITIONS: Final[Mapping[tuple[State, Transition], State]] = MappingProxyType(
    {
        # A login (re)starts from anywhere: a new console session id makes the old one's
        # late answers stale.
        **{(state, Transition.BEGIN_WITH_PROBE): State.AWAIT_AUTH_CAP for state in State},
        # (A machine that probes never begins without it: no AWAIT_AUTH_CAP row.)
        **{
            (state, Transition.BEGIN): State.AWAIT_OPEN
            for state in State
            if state is not State.AWAIT_AUTH_CAP
        },
        (State.AWAIT_AUTH_CAP, Transition.CAPABILITIES_ANSWERED): State.AWAIT_OPEN,
        (State.AWAIT_OPEN, Transition.SUITE_REFUSED): State.AWAIT_OPEN,
        (State.AWAIT_OPEN, Transition.OPEN_ACCEPTED): State.AWAIT_RAKP2,
        (State.AWAIT_RAKP2, Transition.RAKP2_VERIFIED): State.AWAIT_RAKP4,
        (State.AWAIT_RAKP4, Transition.RAKP4_VERIFIED): State.AWAIT_PRIV,
        (State.AWAIT_RAKP4, Transition.LOGIN_COMPLETE): State.ESTABLISHED,  # USER: done
        (State.AWAIT_PRIV, Transition.LOGIN_COMPLETE): State.ESTABLISHED,
        **{(state, Transition.LOGIN_FAILED): State.POISONED for state in _LOGIN_STEPS},
        # Only a packet or a datagram sealed with the session's keys can break the rules.
        **{(state, Transition.VIOLATION): State.POISONED for state in _KEYED},
        # Presumed gone: the next use logs in again; close() still frees the BMC's slot.
        (State.ESTABLISHED, Transition.ABANDONED): State.POISONED,
        **{(state, Transition.CLOSE): State.CLOSED for state in State},
    }
)


def next_state(state: State, transition: Transition) -> State:
    """The state ``transition`` leads to from ``state``; ProtocolStateError if illegal."""
    try:
        return TRANSITIONS[state, transition]
    except KeyError:
        raise ProtocolStateError(
            f"session machine: {transition.value} is not allowed in state {state.value}"
        ) from None


@attrs.frozen
class LoginStep:
    """Send ``datagram`` next (login is still in progress)."""

    datagram: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen
class LoginLost:
    """The BMC no longer knows this half-made session (it timed the login out while a step
    was on its way): begin the login again, as after an unanswered step."""

    reason: str


@attrs.frozen
class LoginComplete:
    suite: int
    privilege: Privilege


@attrs.frozen
class Response:
    request_id: int
    netfn: int  # the response NetFn (request NetFn + 1)
    cmd: int
    completion_code: int
    data: bytes


Event = LoginStep | LoginComplete | LoginLost | Response
