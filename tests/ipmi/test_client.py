"""The trio client over a fake network, on trio's MockClock (virtual time, no real waiting).

The BMC behind the fake network is the project's sans-I/O BMC (``ipmi.proto.server``); the
network in between drops, duplicates, delays and reorders datagrams as each test scripts it.
Times asserted here are MockClock times: they follow from the retry policy, not from the
machine's speed. (The real-peer tests prove the client against BMCs we did not write.)
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
from collections.abc import Sequence

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipmi import (
    AuthenticationError,
    CompletionCodeError,
    NegotiationError,
    NoResponseError,
    RetryPolicy,
    open_bmc,
)
from ipmi.proto.constants import CC_NOT_IN_PRESENT_STATE, ChassisAction
from ipmi.testing import FakeBmc, FakeNetwork, Fate, Rule

PASSWORD = "correct horse"
USERNAME = "admin"
HOST, PORT = "192.0.2.10", 623  # never contacted: the fake network answers instead

# ---- a BMC and a network we control (ipmi.testing) ---------------------------------------


def fake_bmc(**options: object) -> FakeBmc:
    """An ipmi.testing BMC with this module's password."""
    options.setdefault("password", PASSWORD)
    return FakeBmc(**options)  # type: ignore[arg-type]


def silent_bmc() -> FakeBmc:
    bmc = fake_bmc()
    bmc.silent = True
    return bmc


def network_for(bmc: FakeBmc, nursery: trio.Nursery, rule: Rule | None = None) -> FakeNetwork:
    """A fake network with ``bmc`` at HOST:PORT."""
    network = FakeNetwork(nursery, rule=rule)
    network.attach(HOST, PORT, bmc)
    return network


FAST_RETRY = RetryPolicy(first_timeout=1.0, backoff=2.0, max_timeout=4.0, retries=3)
# Today's fixed schedule (1, 2, 4, 4 s), which these tests pin down exactly; the adaptive
# schedule, the default, is tested in test_retransmit_adaptive.py.
FIXED_RETRY = attrs.evolve(FAST_RETRY, adaptive=False)


def bmc_session(network: FakeNetwork, **kwargs: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {
        "username": USERNAME,
        "password": PASSWORD,
        "retry": FAST_RETRY,
        "connect": network.connect,
    }
    options.update(kwargs)
    return open_bmc(HOST, PORT, **options)  # type: ignore[arg-type]


def only(direction: str, label: str, nths: Sequence[int], fate: Fate) -> Rule:
    """A rule that applies ``fate`` to the given occurrences of one kind of datagram."""

    def rule(d: str, lbl: str, nth: int) -> Fate | None:
        return fate if (d == direction and lbl == label and nth in nths) else None

    return rule


# ---- tests --------------------------------------------------------------------------------


async def test_status_and_actions_over_a_clean_network(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=False)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network) as session:
            assert await session.get_power() is False
            await session.set_power("on")
            assert bmc.power_on is True
            assert await session.get_power() is True
            status = await session.chassis_status()
            assert status.power_on is True and status.power_fault is False
            await session.keepalive()
        stats = session.statistics()  # after Close Session
        assert stats.logins == 1
        assert stats.retransmits == 0
        assert stats.requests == 4 + (1 if "privilege" in network.labels() else 0)
        assert stats.sent == len(network.labels("to_bmc"))
        assert stats.received == len(network.labels("to_client"))  # the close answer too
        assert stats.drops == 0
        assert network.labels().count("close") == 1
        assert network.endpoints[0].closed
        assert bmc.actions == [ChassisAction.POWER_UP]
        assert bmc.protocol.session_count(trio.current_time()) == 0  # Close Session worked


async def test_every_power_action_maps_to_its_chassis_control(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery, bmc_session(network_for(bmc, nursery)) as session:
        for action in ("reset", "cycle", "soft", "on", "off"):
            await session.set_power(action)
        with pytest.raises(ValueError, match="unknown power action"):
            await session.set_power("explode")
    assert bmc.actions == [
        ChassisAction.HARD_RESET,
        ChassisAction.POWER_CYCLE,
        ChassisAction.SOFT_SHUTDOWN,
        ChassisAction.POWER_UP,
        ChassisAction.POWER_DOWN,
    ]


async def test_completion_code_error_carries_the_code(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=False)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network) as session:
            with pytest.raises(CompletionCodeError) as caught:
                await session.set_power("reset")  # refused while off
            assert caught.value.code == CC_NOT_IN_PRESENT_STATE
            assert f"{HOST}:{PORT}" in str(caught.value)
            assert await session.get_power() is False  # the session is still fine
            assert session.statistics().logins == 1


async def test_lost_requests_are_retransmitted_with_backoff(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    bmc = fake_bmc(power_on=True)
    caplog.set_level(logging.WARNING, logger="ipmi.client")
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_bmc", "status", (1, 2, 3), ()))
        async with bmc_session(network, retry=FIXED_RETRY) as session:
            assert await session.get_power() is True
            stats = session.statistics()
    assert stats.retransmits == 3
    assert stats.logins == 1
    sends = network.times("status")
    assert [round(t - sends[0], 6) for t in sends] == [0.0, 1.0, 3.0, 7.0]  # 1, 2, 4 s waits
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(f"{HOST}:{PORT}" in w for w in warnings)
    assert "retransmission 1 of 3 after 1.0 s" in warnings[0]
    assert "retransmission 3 of 3 after 7.0 s" in warnings[2]


async def test_backoff_is_capped_by_max_timeout(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    retry = RetryPolicy(first_timeout=0.5, backoff=3.0, max_timeout=2.0, retries=4, adaptive=False)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_bmc", "status", (1, 2, 3, 4), ()))
        async with bmc_session(network, retry=retry) as session:
            assert await session.get_power() is True
    sends = network.times("status")
    assert [round(b - a, 6) for a, b in itertools.pairwise(sends)] == [
        0.5,
        1.5,
        2.0,
        2.0,
    ]


async def test_duplicated_datagrams_are_dropped_and_counted(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)  # a cycle needs a running system

    def duplicate_everything(direction: str, label: str, nth: int) -> Fate:
        return (0.0, 0.0)

    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, duplicate_everything)
        async with bmc_session(network) as session:
            await session.set_power("cycle")
            assert await session.get_power() is True  # off, then on again at once
            assert await session.get_power() is True
            stats = session.statistics()
    assert stats.logins == 1
    assert stats.retransmits == 0
    assert stats.drops > 0
    assert bmc.actions == [ChassisAction.POWER_CYCLE]  # a duplicate never re-executes


async def test_a_late_answer_never_answers_the_next_request(autojump_clock: object) -> None:
    """Reordering: the answer to the first Get Chassis Status ("on") is delayed past the
    retransmission and arrives while the next request (after power went off) waits."""
    bmc = fake_bmc(power_on=True)

    def delays(direction: str, label: str, nth: int) -> Fate | None:
        if direction == "to_client" and label == "status":
            return {1: (1.5,), 3: (0.3,)}.get(nth)
        return None

    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, delays)
        async with bmc_session(network, retry=FIXED_RETRY) as session:
            started = trio.current_time()
            assert await session.get_power() is True  # answered via the retransmission at 1 s
            bmc.power_on = False
            await trio.sleep(0.4)
            # Sent at 1.4 s, answered at 1.7 s; the stale "on" lands at 1.5 s in between.
            assert await session.get_power() is False
            assert trio.current_time() - started == pytest.approx(1.7)
            stats = session.statistics()
    assert stats.retransmits == 1
    assert stats.drops == 1


async def test_reordered_answers_within_one_request(autojump_clock: object) -> None:
    """The answer to the original arrives after the answer to its retransmission."""
    bmc = fake_bmc(power_on=True)

    def reorder(direction: str, label: str, nth: int) -> Fate | None:
        if direction == "to_client" and label == "status":
            return {1: (1.7,), 2: (0.2,)}.get(nth)
        return None

    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, reorder)
        async with bmc_session(network) as session:
            assert await session.get_power() is True
            await trio.sleep(1)
            assert await session.get_power() is True
            assert session.statistics().logins == 1


async def test_a_lost_login_step_restarts_the_handshake(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_bmc", "rakp3", (1,), ()))
        async with bmc_session(network) as session:
            assert await session.get_power() is True
            stats = session.statistics()
    login = [label for label in network.labels() if label in ("open", "rakp1", "rakp3")]
    # RAKP3 was lost; the client started over with a new Open Session, never a lone RAKP3.
    assert login[:3] == ["open", "rakp1", "rakp3"]
    assert login[3:] == ["open", "rakp1", "rakp3"]
    assert stats.logins == 1
    assert stats.retransmits == 1


async def test_a_login_the_bmc_timed_out_meanwhile_starts_again(autojump_clock: object) -> None:
    # RAKP1 reaches the BMC after its 3 s login timeout: "invalid session ID" then means
    # "start again", not "refused" (which would fail a BMC that is fine).
    bmc = fake_bmc(power_on=True)
    patient = attrs.evolve(FIXED_RETRY, first_timeout=4.0)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_bmc", "rakp1", (1,), (3.5,)))
        async with bmc_session(network, retry=patient) as session:
            assert await session.get_power() is True
            stats = session.statistics()
    login = [label for label in network.labels() if label in ("open", "rakp1", "rakp3")]
    assert login == ["open", "rakp1", "open", "rakp1", "rakp3"]
    assert stats.logins == 1
    assert stats.retransmits == 1


async def test_session_dropped_by_the_bmc_is_re_established_once(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    bmc = fake_bmc(power_on=True)
    caplog.set_level(logging.WARNING, logger="ipmi.client")
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network) as session:
            assert await session.get_power() is True
            bmc.reboot()  # the BMC forgets the session (reboot / idle timeout)
            bmc.power_on = False
            assert await session.get_power() is False
            stats = session.statistics()
    assert stats.logins == 2
    assert network.labels().count("open") == 2
    assert any("logging in again" in r.getMessage() for r in caplog.records)


async def test_after_a_re_login_whose_request_went_unanswered_the_next_command_logs_in_first(
    autojump_clock: object,
) -> None:
    """The BMC forgets the session; the re-login works but the resent request is lost too.
    The session is presumed gone: the next command starts with a login, instead of
    spending another whole retransmission budget on it."""
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_bmc", "status", (2, 3, 4, 5), ()))
        async with bmc_session(network, retry=FIXED_RETRY) as session:
            assert await session.get_power() is True
            bmc.reboot()
            with pytest.raises(NoResponseError):
                await session.get_power()
            sent_before = len(network.labels())
            assert await session.get_power() is True
            stats = session.statistics()
    after = network.labels()[sent_before:]
    assert after[: after.index("status")] == ["v15", "open", "rakp1", "rakp3", "privilege"]
    assert stats.logins == 3


async def test_a_dead_bmc_gives_no_response_error_after_one_re_login(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network, retry=FIXED_RETRY) as session:
            assert await session.get_power() is True
            bmc.silent = True
            with pytest.raises(NoResponseError) as caught:
                await session.get_power()
            assert f"{HOST}:{PORT}" in str(caught.value)
            assert PASSWORD not in str(caught.value)
    # One request (4 sends) + one re-login (4 handshake starts), and nothing more.
    assert network.labels().count("v15") == 1 + 4  # each handshake starts with the probe
    assert network.labels().count("status") == 1 + 4  # the first get_power, then 4 sends


async def test_a_power_cycle_whose_answers_were_lost_runs_once(autojump_clock: object) -> None:
    # The BMC cycles the chassis, but every answer is lost: the client gives up and logs in
    # again. It neither resends past the BMC's ~5 s duplicate window nor in the new session
    # (which cannot mark a resend as a retransmission): the cycle runs exactly once.
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_client", "control", (1, 2, 3, 4), ()))
        async with bmc_session(network) as session:
            with pytest.raises(NoResponseError, match=r"not sent again.*read the power state"):
                await session.set_power("cycle")
            assert session.statistics().logins == 2
            assert await session.get_power() is True  # the new session works
    assert bmc.actions == [ChassisAction.POWER_CYCLE]
    sends = network.times("control")
    assert max(sends) - min(sends) < 5.0


async def test_power_off_whose_answers_were_lost_is_sent_again(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_client", "control", (1, 2, 3, 4), ()))
        async with bmc_session(network) as session:
            await session.set_power("off")  # off twice is still off: resent after re-login
            assert session.statistics().logins == 2
    assert bmc.power_on is False
    assert set(bmc.actions) == {ChassisAction.POWER_DOWN}


async def test_wrong_password_fails_after_one_step_wait_and_is_never_retried(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(password="the real one")
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        started = trio.current_time()
        with pytest.raises(AuthenticationError) as caught:
            async with bmc_session(network):
                pytest.fail("logged in with a wrong password")
        # One RAKP2 step's wait (an unverified RAKP2 may be a forgery), no second attempt.
        assert 0 < trio.current_time() - started <= FAST_RETRY.first_timeout
    assert network.labels().count("rakp1") == 1
    assert network.labels().count("rakp3") == 0
    message = str(caught.value)
    assert f"{HOST}:{PORT}" in message
    assert PASSWORD not in message and "the real one" not in message
    assert PASSWORD not in repr(caught.value)
    assert network.endpoints[0].closed


async def test_unknown_user_is_an_authentication_error(autojump_clock: object) -> None:
    bmc = fake_bmc()
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        with pytest.raises(AuthenticationError):
            async with bmc_session(network, username="intruder"):
                pass
    assert network.labels().count("rakp1") == 1


async def test_falls_back_from_suite_17_to_3(autojump_clock: object) -> None:
    bmc = fake_bmc(cipher_suites=(3,), power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network, cipher_suites=(17, 3)) as session:
            assert await session.get_power() is True
    assert network.labels().count("open") == 2  # 17 refused, then 3


async def test_no_common_cipher_suite_is_a_negotiation_error(autojump_clock: object) -> None:
    bmc = fake_bmc(cipher_suites=(3,))
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        with pytest.raises(NegotiationError) as caught:
            async with bmc_session(network, cipher_suites=(17,)):
                pass
    assert f"{HOST}:{PORT}" in str(caught.value)


async def test_a_login_cut_short_after_the_keys_still_closes_the_bmc_session(
    autojump_clock: object,
) -> None:
    """The caller's deadline hits while Set Session Privilege Level is unanswered: the BMC
    already holds a session for us, and Close Session (with the fresh keys) frees it."""
    bmc = fake_bmc()
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_client", "privilege", (1, 2, 3), ()))
        with trio.move_on_after(0.5) as scope:
            async with bmc_session(network, retry=FIXED_RETRY):
                pytest.fail("logged in without the privilege answer")
        assert scope.cancelled_caught
    assert network.labels()[-2:] == ["privilege", "close"]
    assert bmc.protocol.session_count(trio.current_time()) == 0


async def test_deadline_comes_from_the_callers_cancel_scope(autojump_clock: object) -> None:
    bmc = silent_bmc()
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        started = trio.current_time()
        with trio.move_on_after(2.5) as scope:
            async with bmc_session(network):
                pytest.fail("logged in to a dead BMC")
        assert scope.cancelled_caught
        assert trio.current_time() - started == pytest.approx(2.5)
        assert network.endpoints[0].closed


async def test_close_session_is_sent_once_even_when_lost(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_bmc", "close", (1,), ()))
        async with bmc_session(network) as session:
            assert await session.get_power() is True
        closed_at = trio.current_time()
        await trio.sleep(30)  # nothing more is sent after the context has exited
    assert network.labels().count("close") == 1
    assert network.times("close")[0] <= closed_at
    assert network.labels()[-1] == "close"


async def test_close_session_is_sent_even_when_the_caller_is_cancelled(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(power_on=True)

    def slow_status(direction: str, label: str, nth: int) -> Fate | None:
        return (10.0,) if (direction == "to_client" and label == "status") else None

    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, slow_status)
        with trio.move_on_after(0.5):
            async with bmc_session(network) as session:
                await session.get_power()
    assert network.labels().count("close") == 1
    assert bmc.protocol.session_count(trio.current_time()) == 0


async def test_requests_cancelled_by_the_caller_leave_nothing_behind(
    autojump_clock: object,
) -> None:
    """A per-node deadline that cancels a request mid-wait, many times over, must not use
    up the session's 64 request sequence numbers (their answers are all lost)."""
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_client", "status", range(1, 71), ()))
        async with bmc_session(network, retry=FIXED_RETRY) as session:
            for _ in range(70):
                with trio.move_on_after(0.5) as scope:
                    await session.get_power()
                assert scope.cancelled_caught
            assert await session.get_power() is True
            stats = session.statistics()
    assert stats.logins == 1
    assert stats.requests == 1


async def test_one_request_in_flight_per_session(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    in_flight = 0
    most = 0

    def watch(direction: str, label: str, nth: int) -> Fate | None:
        nonlocal in_flight, most
        if label == "status":
            in_flight += 1 if direction == "to_bmc" else -1
            most = max(most, in_flight)
        return (0.3,) if direction == "to_client" else None

    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, watch)
        async with bmc_session(network) as session:
            results: list[bool] = []

            async def ask() -> None:
                results.append(await session.get_power())

            async with trio.open_nursery() as askers:
                for _ in range(5):
                    askers.start_soon(ask)
    assert results == [True] * 5
    assert most == 1


async def test_noise_and_forgeries_on_the_wire_are_dropped(autojump_clock: object) -> None:
    """Garbage, a foreign RMCP+ packet and a forged packet for our session (right header,
    wrong integrity code) arrive before the real answer: all dropped, the request succeeds."""
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network) as session:
            endpoint = network.endpoints[0]
            machine_session_id = next(iter(bmc.protocol.sessions.values())).console_session_id
            forged = (
                bytes((0x06, 0x00, 0xFF, 0x07, 0x06, 0xC0))
                + machine_session_id.to_bytes(4, "little")
                + (99).to_bytes(4, "little")
                + (32).to_bytes(2, "little")
                + bytes(32)
                + bytes((0xFF, 0xFF, 0x02, 0x07))
                + bytes(16)
            )
            for noise in (b"", b"\x06\x00\xff\x07", os.urandom(64), forged):
                endpoint.deliver(noise)
            assert await session.get_power() is True
            stats = session.statistics()
    assert stats.drops == 4
    assert stats.logins == 1
    assert stats.retransmits == 0


async def test_real_udp_endpoint_to_a_closed_port_is_no_response() -> None:
    """The real transport: ICMP port-unreachable is treated as silence, not as a crash."""
    from tests.conftest import free_udp_ports

    port = free_udp_ports(1)[0]
    quick = RetryPolicy(first_timeout=0.05, backoff=1.0, max_timeout=0.05, retries=1)
    with pytest.raises(NoResponseError) as caught:
        async with open_bmc("127.0.0.1", port, username=USERNAME, password=PASSWORD, retry=quick):
            pytest.fail("logged in to nothing")
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "2 attempts" in str(caught.value)


async def test_suite_zero_and_unknown_suites_are_refused_before_any_datagram() -> None:
    for suites in ((0,), (17, 0), (1,), ()):
        with pytest.raises(ValueError):
            open_bmc(HOST, PORT, username=USERNAME, password=PASSWORD, cipher_suites=suites)
    with pytest.raises(ValueError):
        open_bmc(HOST, PORT, username=USERNAME, password=PASSWORD, privilege="root")


def test_retry_policy_timeouts_and_validation() -> None:
    assert list(RetryPolicy().timeouts()) == [1.0, 2.0, 4.0, 4.0]
    assert list(RetryPolicy(retries=0).timeouts()) == [1.0]
    with pytest.raises(ValueError):
        RetryPolicy(first_timeout=0)
    with pytest.raises(ValueError):
        RetryPolicy(first_timeout=2.0, max_timeout=1.0)
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_repr_and_errors_never_show_the_password() -> None:
    context = open_bmc(HOST, PORT, username=USERNAME, password=PASSWORD)
    assert PASSWORD not in repr(context)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.4),
    duplicate=st.floats(0.0, 0.4),
    delay=st.floats(0.0, 0.5),
    truth=st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_an_unreliable_network_never_yields_a_wrong_answer(
    seed: int, loss: float, duplicate: float, delay: float, truth: list[bool]
) -> None:
    """Random loss, duplication, delay and reordering (virtual time): each get_power either
    returns the power the BMC has at that moment, or raises NoResponseError. Nothing else."""
    rng = random.Random(seed)

    def out_of_sessions(refused: NegotiationError) -> None:
        # Logins restarted under heavy loss leave half-open sessions behind, and the BMC's
        # few slots can fill up: a refusal, never a wrong answer. (A half-open login the
        # BMC forgot meanwhile, "invalid session id", restarts the handshake instead.)
        assert "insufficient resources" in str(refused)

    def chaos(direction: str, label: str, nth: int) -> Fate:
        if rng.random() < loss:
            return ()
        delays = [rng.uniform(0, 3.0) if rng.random() < delay else 0.0]
        if rng.random() < duplicate:
            delays.append(rng.uniform(0, 3.0))
        return tuple(delays)

    async def main() -> None:
        bmc = fake_bmc(power_on=False)
        async with trio.open_nursery() as nursery:
            network = network_for(bmc, nursery, chaos)
            try:
                async with bmc_session(network) as session:
                    for on in truth:
                        bmc.power_on = on  # out of band, between requests
                        try:
                            assert await session.get_power() is on
                        except NoResponseError:
                            pass
                        except NegotiationError as refused:
                            out_of_sessions(refused)
            except NoResponseError:
                pass  # the login itself can be lost often enough
            except NegotiationError as refused:
                out_of_sessions(refused)
            nursery.cancel_scope.cancel()  # datagrams still in flight

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_real_udp_over_ipv6_loopback_with_the_simulator() -> None:
    """The real transport end to end (IPv6, suite 17) against the project's simulator; the
    independent servers are in test_interop_*.py."""
    from ipmi.sim import open_fleet

    async with open_fleet(1, host="::1", password=PASSWORD, power_on=True) as fleet:
        sim = fleet.bmcs[0]
        async with open_bmc(sim.address, sim.port, username=USERNAME, password=PASSWORD) as s:
            assert repr(s) == f"BmcSession([::1]:{sim.port})"
            assert await s.get_power() is True
            await s.set_power("off")
            assert s.cipher_suite == 17
        assert sim.power_on is False
        stats = s.statistics()
        # Auth Cap, Open, RAKP1, RAKP3, Set Priv, status, control, Close: one each way.
        assert (stats.sent, stats.received, stats.logins) == (8, 8, 1)
        assert sim.protocol is not None
        assert sim.protocol.session_count(trio.current_time()) == 0  # Close Session arrived


@pytest.mark.parametrize("close_fate", ["delivered", "lost", "answer lost", "cancelled"])
async def test_statistics_after_the_block_match_a_capture_close_session_included(
    autojump_clock: object, close_fate: str
) -> None:
    """The fake network's trace is the capture. Read inside the block, the counters cannot
    include the Close Session that has not been sent yet (callers that report datagrams
    read them after the block, or after ``await session.aclose()``)."""
    bmc = fake_bmc(power_on=True)
    rules: dict[str, Rule | None] = {
        "delivered": None,
        "lost": only("to_bmc", "close", (1,), ()),
        "answer lost": only("to_client", "close", (1,), ()),
        "cancelled": None,
    }
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, rules[close_fate])
        with trio.move_on_after(5) if close_fate != "cancelled" else trio.CancelScope() as scope:
            async with bmc_session(network) as session:
                assert await session.get_power() is True
                inside = session.statistics()
                if close_fate == "cancelled":
                    scope.cancel()
                    await trio.sleep(1)
        await trio.sleep(1)  # anything still in flight has landed
        nursery.cancel_scope.cancel()
    after = session.statistics()
    assert inside.sent == len(network.labels("to_bmc")) - 1  # all but Close Session
    assert after.sent == len(network.labels("to_bmc")) == inside.sent + 1
    assert network.labels("to_bmc")[-1] == "close"
    delivered = [t for t in network.trace if t.direction == "to_client" and t.fate]
    assert after.received == len(delivered)
    await session.aclose()  # idempotent: nothing more is sent or counted
    assert session.statistics() == after


async def test_min_datagram_interval_spaces_every_datagram_login_included(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, only("to_bmc", "status", (2,), ()))  # one resend
        started = trio.current_time()
        async with bmc_session(network, min_datagram_interval=0.3) as session:
            assert await session.get_power() is True
            assert await session.get_power() is True  # its first send is lost
            await session.set_power("off")
        stats = session.statistics()
    sends = [t.time for t in network.trace if t.direction == "to_bmc"]
    assert network.labels()[:5] == ["v15", "open", "rakp1", "rakp3", "privilege"]
    assert network.labels()[-1] == "close"
    assert sends[0] == started  # the first one never waits
    assert min(b - a for a, b in itertools.pairwise(sends)) == pytest.approx(0.3)
    assert stats.sent == len(sends) and stats.retransmits == 1
    # The network answers at once: waiting for a slot is no round-trip time.
    assert stats.srtt == pytest.approx(0.0) and stats.last_rtt == pytest.approx(0.0)
    assert bmc.power_on is False


async def test_without_min_datagram_interval_nothing_waits(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        started = trio.current_time()
        async with bmc_session(network) as session:
            assert await session.get_power() is True
    assert {t.time for t in network.trace} == {started}


async def test_min_datagram_interval_is_validated() -> None:
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="min_datagram_interval"):
            open_bmc(HOST, PORT, username=USERNAME, password=PASSWORD, min_datagram_interval=bad)
