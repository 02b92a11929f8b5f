"""The client's login: RMCP+ handshake runs over a :class:`ipmi.link.BmcLink`, with patience.

A lost login step restarts the whole handshake from the beginning (RAKP 1 and 3 are never
resent: a BMC that has moved on would refuse them). A refused suite or privilege is raised
at once, a wrong password at the end of the RAKP2 step's wait (an RAKP2 whose code does not
verify may be a forgery racing the BMC's real answer, so it is dropped and the step waits
on), and neither is ever retried here (BMCs lock users out).

Fixed schedule: run n of the handshake waits ``timeouts()[n]`` for each step. Adaptive:
run n waits the current RTO times ``backoff**n`` for each step (each answered step is
measured: a restarted handshake drops every answer to an earlier run, so none is
ambiguous), until the fixed schedule's budget has expired. Either way at most
``retries + 1`` runs send Open Session: each may leave a session behind on the BMC, which
has only a few (often 4). Runs lost at the sessionless capabilities probe cost the BMC
nothing, and the last allowed run waits out the budget on it; session steps never wait
longer than ``max_timeout``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import trio

from ipmi.errors import AuthenticationError, NegotiationError, NoResponseError, SessionLostError
from ipmi.link import BmcLink, logger
from ipmi.proto.events import LoginComplete, LoginLost, LoginStep

StepWait = Callable[[bool], float]  # (step opens or uses a BMC session) -> seconds


async def log_in(link: BmcLink) -> LoginComplete:
    """Log in (again) on ``link``'s machine; counts the login. Raises NoResponseError,
    AuthenticationError, NegotiationError, SessionLostError, each naming the BMC."""
    policy = link.retry
    started = trio.current_time()
    attempt = 0
    spent = 0.0  # seconds of step waits that expired unanswered
    opened = 0  # runs that got as far as sending Open Session
    while (step_wait := _step_wait(link, attempt, spent, opened)) is not None:
        attempt += 1
        if attempt > 1:
            link.counters.retransmits += 1
            link.log_resend(
                "login step unanswered, restarting the handshake: attempt",
                attempt,
                policy.max_attempts,
                started,
                adaptive=policy.adaptive,
            )
        try:
            complete, expired, opened_one = await _handshake(link, step_wait)
        except (AuthenticationError, NegotiationError, SessionLostError) as exc:
            # Never retried: a wrong password tried again only locks the user out.
            raise type(exc)(f"{link.peer}: {exc}") from exc
        if complete is not None:
            link.counters.logins += 1
            return complete
        spent += expired
        opened += opened_one
    raise NoResponseError(
        f"{link.peer}: no answer to login after {attempt} attempts "
        f"({trio.current_time() - started:.1f} s)"
    )


def _step_wait(link: BmcLink, run: int, spent: float, opened: int) -> StepWait | None:
    """How long each step of handshake run ``run`` (0-based) waits, given whether the
    step opens or uses a BMC session; None: give up."""
    policy = link.retry
    rtt = link.rtt
    if not policy.adaptive:
        timeout = next(itertools.islice(policy.timeouts(), run, None), None)
        return None if timeout is None else lambda _: timeout
    if opened > policy.retries or policy.adaptive_wait(rtt.rto, run, spent) is None:
        return None
    last_session = opened == policy.retries

    def wait(session_step: bool) -> float:
        # Asked again before each step: the steps answered so far refine the RTO.
        value = policy.adaptive_wait(rtt.rto, run, spent, final=last_session and session_step)
        assert value is not None  # run and spent do not change within one run
        # A BMC forgets a half-open login within seconds (OpenBMC: 3 s): never wait
        # longer on a session step than the fixed schedule would.
        return min(value, policy.max_timeout) if session_step else value

    return wait


def _is_login_event(event: object) -> bool:
    return isinstance(event, (LoginStep, LoginComplete, LoginLost))


async def _handshake(
    link: BmcLink, step_wait: StepWait
) -> tuple[LoginComplete | None, float, bool]:
    """One run of the handshake: (LoginComplete or None when a step went unanswered,
    the wait that expired, whether Open Session was sent)."""
    machine = link.machine
    datagram = machine.begin_login()
    opened = False
    while True:
        session_step = not machine.probing
        opened = opened or session_step
        wait = step_wait(session_step)
        sent_at = await link.send(datagram)
        event = await link.next_event(sent_at + wait, _is_login_event)
        if event is None:
            # Only codes that did not verify came: the BMC's verdict (AuthenticationError,
            # never retried). Else nothing came, or only forgeries: as good as unanswered.
            machine.login_step_timed_out()
            return None, wait, opened
        if isinstance(event, LoginLost):
            # The BMC timed the half-made session out while a step was under way: as
            # good as unanswered (a NegotiationError would fail a BMC that is fine).
            logger.debug("%s: %s", link.peer, event.reason)
            return None, trio.current_time() - sent_at, opened
        link.rtt.sample(trio.current_time() - sent_at)
        if isinstance(event, LoginComplete):
            return event, 0.0, opened
        assert isinstance(event, LoginStep)
        datagram = event.datagram
