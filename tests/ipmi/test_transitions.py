"""The session machine's transition table (ipmi.proto.events.TRANSITIONS), walked.

Every listed (state, transition) is reached by driving a real ClientSession against the
tiny BMC (tests/ipmi/tinybmc.py), never by calling the transition function directly; every
pair the table does not list is refused by ``next_state`` with ProtocolStateError.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import pytest

from ipmi.errors import IpmiError, ProtocolStateError
from ipmi.proto import wire
from ipmi.proto.constants import Privilege
from ipmi.proto.events import (
    TRANSITIONS,
    LoginComplete,
    LoginStep,
    State,
    Transition,
    next_state,
)
from ipmi.proto.session import MAX_SEQUENCE, ClientSession
from tests.ipmi.tinybmc import TinyBmc, deterministic_entropy

LOGIN_ORDER = (
    State.AWAIT_AUTH_CAP,
    State.AWAIT_OPEN,
    State.AWAIT_RAKP2,
    State.AWAIT_RAKP4,
    State.AWAIT_PRIV,
    State.ESTABLISHED,
)


class RecordingSession(ClientSession):
    """A ClientSession that records every (state, transition) it takes."""

    def __init__(self, **options: object) -> None:
        self.taken: list[tuple[State, Transition]] = []
        self.reached: list[State] = []
        super().__init__(
            username=b"admin",
            password=b"password",
            entropy=deterministic_entropy(b"client"),
            **options,  # type: ignore[arg-type]
        )

    def _move(self, transition: Transition) -> None:
        self.taken.append((self.state, transition))
        super()._move(transition)
        self.reached.append(self.state)


class Driven:
    """A machine, its BMC, and the datagram the machine last asked to send."""

    def __init__(self, *, probe: bool = True, privilege: Privilege = Privilege.ADMINISTRATOR):
        self.machine = RecordingSession(probe_auth_capabilities=probe, privilege=privilege)
        self.bmc = TinyBmc()
        self.datagram = b""

    def answer(self) -> object:
        """Send the pending datagram to the BMC and feed its answer to the machine."""
        reply = self.bmc.handle(self.datagram)
        assert reply is not None
        event = self.machine.receive(reply)
        if isinstance(event, LoginStep):
            self.datagram = event.datagram
        return event

    def advance_to(self, state: State) -> Driven:
        if state is State.IDLE:
            return self
        if state is State.CLOSED:
            self.advance_to(State.ESTABLISHED).machine.close()
            return self
        if state is State.POISONED:
            self.advance_to(State.ESTABLISHED)
            self.bmc.handle(self.machine.request(0x00, 0x01)[1])
            garbage = self.bmc.respond(wire.IpmiRequest(0, 1, 1), 0, b"", plaintext=b"junk")
            with pytest.raises(IpmiError):
                self.machine.receive(garbage)
            return self
        self.datagram = self.machine.begin_login()
        while self.machine.state is not state:
            assert LOGIN_ORDER.index(self.machine.state) < LOGIN_ORDER.index(state)
            self.answer()
        return self


def driven_in(state: State) -> Driven:
    # Only a machine that probes has an AWAIT_AUTH_CAP state.
    return Driven(probe=state is State.AWAIT_AUTH_CAP).advance_to(state)


def exhaust_sequence_numbers(machine: ClientSession) -> None:
    machine._out_seq = MAX_SEQUENCE + 1  # test hook: as if 2^32 - 1 datagrams had been sent


def raises_ipmi_error(action: Callable[[], object]) -> None:
    with pytest.raises(IpmiError):
        action()


def fail_login(driven: Driven) -> None:
    """Make the BMC refuse whatever the machine waits for, and feed the refusal."""
    bmc, state = driven.bmc, driven.machine.state
    if state is State.AWAIT_AUTH_CAP:
        bmc.ipmi20 = False
    elif state is State.AWAIT_OPEN:
        bmc.open_status = 0x01  # insufficient resources
    elif state is State.AWAIT_RAKP2:
        driven.machine.begin_login()  # RAKP1 must go out again with the knob set
        driven.advance_to(State.AWAIT_OPEN)
        bmc.rakp2_status = 0x09  # invalid role
        driven.answer()  # Open Session answered: now AWAIT_RAKP2, RAKP1 pending
    elif state is State.AWAIT_RAKP4:
        bmc.rakp4_status = 0x01
    elif state is State.AWAIT_PRIV:
        bmc.privilege_cc = 0x81
    raises_ipmi_error(driven.answer)


def trigger(state: State, transition: Transition) -> RecordingSession:
    """Drive a fresh machine into ``state`` and make it take ``transition``."""
    if transition is Transition.BEGIN_WITH_PROBE:
        driven = Driven(probe=True).advance_to(state)
        driven.machine.begin_login()
    elif transition is Transition.BEGIN:
        driven = driven_in(state)
        driven.machine._probe = False  # test hook: this machine begins without the probe
        driven.machine.begin_login()
    elif transition is Transition.CLOSE:
        driven = driven_in(state)
        with contextlib.suppress(IpmiError):  # nothing to close: CLOSED all the same
            driven.machine.close()
    elif transition is Transition.LOGIN_FAILED:
        driven = driven_in(state)
        fail_login(driven)
    elif transition is Transition.VIOLATION:
        driven = driven_in(state)
        exhaust_sequence_numbers(driven.machine)
        if state is State.AWAIT_PRIV:
            raises_ipmi_error(lambda: driven.machine.retransmit(driven.machine._priv_request_id))
        elif state is State.ESTABLISHED:
            raises_ipmi_error(lambda: driven.machine.request(0x00, 0x01))
        else:
            raises_ipmi_error(driven.machine.close)
    elif transition is Transition.ABANDONED:
        driven = driven_in(state)
        driven.machine.abandon()
    elif transition is Transition.SUITE_REFUSED:
        driven = driven_in(State.AWAIT_OPEN)
        driven.bmc.suites = (3,)
        driven.answer()
    elif transition is Transition.LOGIN_COMPLETE and state is State.AWAIT_RAKP4:
        driven = Driven(probe=False, privilege=Privilege.USER).advance_to(state)
        assert isinstance(driven.answer(), LoginComplete)
    else:  # the happy path's own steps
        driven = driven_in(state)
        driven.answer()
    return driven.machine


def by_name(key: tuple[State, Transition]) -> tuple[str, str]:
    return key[0].value, key[1].value


@pytest.mark.parametrize(("state", "transition"), sorted(TRANSITIONS, key=by_name))
def test_every_listed_transition_is_reachable(state: State, transition: Transition) -> None:
    machine = trigger(state, transition)
    assert (state, transition) in machine.taken
    taken_at = machine.taken.index((state, transition))
    assert machine.reached[taken_at] is TRANSITIONS[state, transition]


def test_every_unlisted_transition_raises() -> None:
    unlisted = [
        (state, transition)
        for state, transition in itertools.product(State, Transition)
        if (state, transition) not in TRANSITIONS
    ]
    assert len(unlisted) > 50  # the table is sparse: most moves are illegal
    for state, transition in unlisted:
        with pytest.raises(ProtocolStateError, match=transition.value):
            next_state(state, transition)


def test_the_machine_itself_refuses_an_illegal_move() -> None:
    machine = driven_in(State.ESTABLISHED).machine
    with pytest.raises(ProtocolStateError, match="rakp2-verified is not allowed in state"):
        machine._move(Transition.RAKP2_VERIFIED)
    assert machine.state is State.ESTABLISHED  # refused moves change nothing


def test_a_full_login_takes_the_table_rows_in_order() -> None:
    driven = Driven().advance_to(State.ESTABLISHED)
    assert driven.machine.taken == [
        (State.IDLE, Transition.BEGIN_WITH_PROBE),
        (State.AWAIT_AUTH_CAP, Transition.CAPABILITIES_ANSWERED),
        (State.AWAIT_OPEN, Transition.OPEN_ACCEPTED),
        (State.AWAIT_RAKP2, Transition.RAKP2_VERIFIED),
        (State.AWAIT_RAKP4, Transition.RAKP4_VERIFIED),
        (State.AWAIT_PRIV, Transition.LOGIN_COMPLETE),
    ]
