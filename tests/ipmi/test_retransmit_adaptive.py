"""RTT-adaptive retransmission (ipmi.retry, BmcSession._exchange/_login) on trio's MockClock.

The fake BMC and network are ipmi.testing's (set up as in test_client.py): every
datagram's fate (drop, delay, duplicate) is scripted, and every time asserted is virtual,
following from the policy and the scripted delays, never from the machine's speed.
"""

from __future__ import annotations

import itertools
import logging

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from ipmi import NoResponseError, RetryPolicy
from ipmi.proto.constants import ChassisAction
from ipmi.retry import ADAPTIVE_EXTRA_RETRANSMISSIONS, RttEstimator
from ipmi.testing import Fate, Rule
from tests.ipmi.test_client import HOST, PORT, bmc_session, fake_bmc, network_for

ADAPTIVE = RetryPolicy()  # the defaults: 1, 2, 4, 4 s budget, adaptive, floor 0.05 s
FIXED = attrs.evolve(ADAPTIVE, adaptive=False)


def latency(one_way: float, *, drop: dict[tuple[str, str], set[int]] | None = None) -> Rule:
    """Every datagram delayed by ``one_way`` seconds; ``drop`` lists (direction, label) ->
    which occurrences (1-based) are lost instead."""
    lost = drop or {}

    def rule(direction: str, label: str, nth: int) -> Fate:
        if nth in lost.get((direction, label), set()):
            return ()
        return (one_way,)

    return rule


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


# ---- the policy and the estimator, pure ---------------------------------------------------


def test_adaptive_schedule_from_the_configured_first_timeout_is_the_fixed_one() -> None:
    assert list(ADAPTIVE.adaptive_timeouts(1.0)) == list(ADAPTIVE.timeouts()) == [1, 2, 4, 4]
    policy = RetryPolicy(first_timeout=0.5, backoff=3.0, max_timeout=2.0, retries=4)
    assert list(policy.adaptive_timeouts(0.5)) == list(policy.timeouts())


def test_adaptive_schedule_from_a_short_rto_spends_the_same_budget_in_more_datagrams() -> None:
    waits = list(ADAPTIVE.adaptive_timeouts(0.05))
    assert waits[:-1] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    assert sum(waits) == pytest.approx(ADAPTIVE.budget()) == pytest.approx(11.0)
    assert len(waits) == ADAPTIVE.retries + 1 + ADAPTIVE_EXTRA_RETRANSMISSIONS
    # No retransmission configured: still at most 3, within the single 1 s wait.
    single = RetryPolicy(retries=0)
    assert sum(single.adaptive_timeouts(0.05)) == pytest.approx(1.0)
    assert len(list(single.adaptive_timeouts(0.05))) == 4


def test_adaptive_first_wait_is_clamped_between_floor_and_first_timeout() -> None:
    assert next(ADAPTIVE.adaptive_timeouts(0.0001)) == 0.05
    assert next(ADAPTIVE.adaptive_timeouts(30.0)) == 1.0
    tiny = RetryPolicy(first_timeout=0.02, max_timeout=0.02)  # shorter than min_timeout
    assert tiny.floor == 0.02
    assert next(tiny.adaptive_timeouts(0.001)) == 0.02


def test_policy_validation_of_the_new_fields() -> None:
    with pytest.raises(ValueError, match="min_timeout"):
        RetryPolicy(min_timeout=0)
    assert RetryPolicy(adaptive=False).max_attempts == 4
    assert RetryPolicy().max_attempts == 7
    assert RetryPolicy(1.0, 2.0, 4.0, 3) == RetryPolicy()  # positional order unchanged


@given(
    first_timeout=st.floats(0.01, 5.0),
    backoff=st.floats(1.0, 4.0),
    extra=st.floats(0.0, 10.0),
    retries=st.integers(0, 8),
    min_timeout=st.floats(0.001, 1.0),
    rto=st.floats(0.0, 20.0),
)
def test_adaptive_schedule_never_gives_up_sooner_and_never_floods(
    first_timeout: float,
    backoff: float,
    extra: float,
    retries: int,
    min_timeout: float,
    rto: float,
) -> None:
    policy = RetryPolicy(first_timeout, backoff, first_timeout + extra, retries, True, min_timeout)
    waits = list(policy.adaptive_timeouts(rto))
    assert sum(waits) == pytest.approx(sum(policy.timeouts()), rel=1e-9, abs=1e-5)
    assert 1 <= len(waits) <= retries + 1 + ADAPTIVE_EXTRA_RETRANSMISSIONS
    assert waits[0] == pytest.approx(min(max(rto, policy.floor), first_timeout))
    assert all(wait > 0 for wait in waits)


def test_estimator_follows_rfc_6298() -> None:
    estimator = RttEstimator(ADAPTIVE)
    assert estimator.rto == 1.0  # nothing measured: the configured first_timeout
    estimator.sample(0.1)
    assert (estimator.srtt, estimator.rttvar) == (0.1, 0.05)
    assert estimator.rto == pytest.approx(0.3)
    estimator.sample(0.2)
    assert estimator.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert estimator.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)
    assert estimator.rto == pytest.approx(0.1125 + 4 * 0.0625)
    for _ in range(200):
        estimator.sample(0.001)
    assert estimator.rto == 0.05  # the floor
    assert estimator.samples == 202


def test_estimator_backs_off_until_the_next_sample() -> None:
    estimator = RttEstimator(ADAPTIVE)
    estimator.sample(0.001)
    assert estimator.rto == 0.05
    estimator.timed_out(0.05)
    assert estimator.rto == 0.1
    estimator.timed_out(0.1)
    assert estimator.rto == 0.2
    estimator.timed_out(0.8)
    assert estimator.rto == 1.0  # never above first_timeout
    estimator.sample(0.001)
    assert estimator.rto == 0.05


# ---- the client over a fake network -------------------------------------------------------


async def test_rto_converges_toward_the_measured_rtt(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, latency(0.1))  # 200 ms round trips
        async with bmc_session(network, retry=ADAPTIVE) as session:
            after_login = session.statistics()
            for _ in range(40):
                assert await session.get_power() is True
            stats = session.statistics()
    assert after_login.rtt_samples >= 4  # every login step is a round trip measured
    assert after_login.srtt == pytest.approx(0.2)
    assert stats.srtt == pytest.approx(0.2)
    assert stats.rttvar is not None and stats.rttvar < 0.001
    assert stats.rto is not None and 0.2 <= stats.rto < 0.21
    assert stats.retransmits == 0


async def test_rto_on_a_fast_link_is_the_floor(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, latency(0.002))
        async with bmc_session(network, retry=ADAPTIVE) as session:
            for _ in range(10):
                await session.keepalive()  # Get Device ID is measured too
            stats = session.statistics()
    assert stats.srtt == pytest.approx(0.004)
    assert stats.rto == ADAPTIVE.min_timeout


async def test_a_lost_request_is_resent_after_the_rto_not_first_timeout(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ipmi.client")
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        # Warm up with 10 reads at 100 ms; the 11th read's first send is lost.
        network = network_for(bmc, nursery, latency(0.05, drop={("to_bmc", "status"): {11}}))
        async with bmc_session(network, retry=ADAPTIVE) as session:
            for _ in range(10):
                await session.get_power()
            rto = session.statistics().rto
            assert rto is not None and 0.1 <= rto < 0.5
            started = trio.current_time()
            assert await session.get_power() is True
            took = trio.current_time() - started
            stats = session.statistics()
    sends = network.times("status")
    assert sends[-1] - sends[-2] == pytest.approx(rto)
    assert took == pytest.approx(rto + 0.1)
    assert stats.retransmits == 1
    # Backed off (Karn): the next read would start from twice the RTO.
    assert stats.rto == pytest.approx(2 * rto)
    # Resent before first_timeout: logged at DEBUG, not WARNING.
    resent = [r for r in caplog.records if "retransmission 1 of at most 6" in r.getMessage()]
    assert [r.levelno for r in resent] == [logging.DEBUG]
    assert f"{HOST}:{PORT}" in resent[0].getMessage()


async def test_retransmissions_after_first_timeout_are_warnings(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ipmi.client")
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(
            bmc, nursery, latency(0.0, drop={("to_bmc", "status"): {2, 3, 4, 5, 6, 7}})
        )
        async with bmc_session(network, retry=ADAPTIVE) as session:
            await session.get_power()  # measured: the RTO falls to the floor
            assert await session.get_power() is True  # answered on the 7th send
    sends = network.times("status")[1:]
    assert gaps(sends) == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    levels = [
        (r.levelno, r.getMessage().split("after ")[1])
        for r in caplog.records
        if "no answer to Get Chassis Status" in r.getMessage()
    ]
    # Elapsed 0.05 .. 0.75 s: DEBUG; 1.55 and 3.15 s (past first_timeout): WARNING.
    assert levels == [
        (logging.DEBUG, "0.05 s"),
        (logging.DEBUG, "0.15 s"),
        (logging.DEBUG, "0.35 s"),
        (logging.DEBUG, "0.75 s"),
        (logging.WARNING, "1.55 s"),
        (logging.WARNING, "3.15 s"),
    ]


async def test_karn_a_late_answer_to_the_first_send_is_accepted_but_not_measured(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(power_on=True)

    def rule(direction: str, label: str, nth: int) -> Fate | None:
        if label == "status" and direction == "to_client" and nth == 2:
            return (0.3,)  # the answer to the 2nd read's first send comes 300 ms late
        if label == "status" and direction == "to_bmc" and nth in (3, 4):
            return ()  # and its retransmissions are lost: only the late answer can do
        return None

    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, rule)
        async with bmc_session(network, retry=ADAPTIVE) as session:
            await session.get_power()
            before = session.statistics()
            started = trio.current_time()
            assert await session.get_power() is True
            assert trio.current_time() - started == pytest.approx(0.3)
            after = session.statistics()
    assert after.requests == before.requests + 1  # accepted and counted
    assert after.retransmits == before.retransmits + 2  # at 50 and 150 ms
    assert (after.rtt_samples, after.srtt) == (before.rtt_samples, before.srtt)  # Karn


async def test_karn_the_duplicate_answer_is_dropped_and_nothing_measured(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(power_on=True)
    delays = {("to_client", "status", 2): (0.3,)}  # answered twice: resend at once, first late

    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, lambda d, lbl, n: delays.get((d, lbl, n)))
        async with bmc_session(network, retry=ADAPTIVE) as session:
            await session.get_power()
            before = session.statistics()
            started = trio.current_time()
            assert await session.get_power() is True  # via the resend, at the 50 ms floor
            assert trio.current_time() - started == pytest.approx(0.05)
            await trio.sleep(1)  # the late answer to the first send arrives meanwhile
            assert await session.get_power() is True
            after = session.statistics()
    assert after.drops == before.drops + 1  # the late duplicate, as stale
    assert after.requests == before.requests + 2
    assert after.rtt_samples == before.rtt_samples + 1  # only the third read's


@pytest.mark.parametrize("action", ["cycle", "reset", "soft", "on", "off"])
async def test_chassis_control_waits_the_full_first_timeout(
    autojump_clock: object, action: str
) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, latency(0.0, drop={("to_bmc", "control"): {1}}))
        async with bmc_session(network, retry=ADAPTIVE) as session:
            await session.get_power()
            assert session.statistics().rto == 0.05
            await session.set_power(action)
            stats = session.statistics()
    assert gaps(network.times("control")) == [1.0]
    assert len(bmc.actions) == 1
    assert stats.rto == 0.05  # a control command is never measured or backed off


async def test_a_power_cycle_whose_answers_are_lost_is_never_resent_past_the_window(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(power_on=True)
    lost = latency(0.0, drop={("to_client", "control"): set(range(1, 10))})
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, lost)
        async with bmc_session(network, retry=ADAPTIVE) as session:
            await session.get_power()
            with pytest.raises(NoResponseError, match="not sent again"):
                await session.set_power("cycle")
            assert await session.get_power() is True
    sends = network.times("control")
    assert gaps(sends) == [1.0, 2.0]  # sent at 0, 1, 3 s; not at 7 s (past the window)
    assert bmc.actions == [ChassisAction.POWER_CYCLE]


async def test_a_bmc_that_stalls_once_for_two_seconds_is_still_read(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network, retry=ADAPTIVE) as session:
            await session.get_power()
            bmc.silent = True

            async def wake_up() -> None:
                await trio.sleep(2.0)
                bmc.silent = False

            nursery.start_soon(wake_up)
            started = trio.current_time()
            assert await session.get_power() is True
            took = trio.current_time() - started
            stats = session.statistics()
    # Sends at 0, .05, .15, .35, .75, 1.55 (all unheard), 3.15 s (answered).
    assert took == pytest.approx(3.15)
    assert stats.logins == 1  # no re-login was needed
    assert stats.retransmits == 6


@pytest.mark.parametrize("policy", [ADAPTIVE, FIXED], ids=["adaptive", "fixed"])
async def test_a_dead_bmc_gets_a_bounded_number_of_datagrams_and_the_same_budget(
    autojump_clock: object, policy: RetryPolicy
) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network, retry=policy) as session:
            await session.get_power()
            bmc.silent = True
            started = trio.current_time()
            with pytest.raises(NoResponseError, match=f"{HOST}:{PORT}"):
                await session.get_power()
            took = trio.current_time() - started
    # The request's budget, then one re-login's (which starts from first_timeout again,
    # the RTO having backed off): 11 s + 11 s either way.
    assert took == pytest.approx(22.0)
    status_sends = network.labels().count("status") - 1
    login_starts = network.labels().count("v15") - 1
    assert status_sends == policy.max_attempts  # 7 adaptive, 4 fixed
    assert login_starts == 4


async def test_login_steps_use_the_rto_once_measured(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(
            bmc, nursery, latency(0.0, drop={("to_bmc", "v15"): {1}, ("to_bmc", "rakp3"): {1}})
        )
        async with bmc_session(network, retry=ADAPTIVE) as session:
            assert await session.get_power() is True
            stats = session.statistics()
    probes, opens, rakp3 = (network.times(x) for x in ("v15", "open", "rakp3"))
    # Nothing measured yet: the lost probe waits the whole first_timeout (1 s).
    assert gaps(probes[:2]) == [1.0]
    # Measured by then (the second probe, Open Session, RAKP1): in this second run each
    # step waits the 50 ms RTO backed off once, so the lost RAKP3 costs 100 ms, not 2 s.
    assert round(probes[2] - rakp3[0], 6) == 0.1
    assert len(opens) == 2
    assert stats.logins == 1 and stats.retransmits == 2


async def test_adaptive_false_restores_todays_schedule_exactly(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ipmi.client")
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, latency(0.0, drop={("to_bmc", "status"): {5, 6, 7}}))
        async with bmc_session(network, retry=FIXED) as session:
            for _ in range(4):
                await session.get_power()  # measured, but not used
            assert session.statistics().srtt == 0.0
            assert session.statistics().rto == 1.0
            assert await session.get_power() is True
    assert gaps(network.times("status")[4:]) == [1.0, 2.0, 4.0]
    messages = [
        (r.levelno, r.getMessage()) for r in caplog.records if "no answer to" in r.getMessage()
    ]
    prefix = f"{HOST}:{PORT}: no answer to Get Chassis Status, retransmission"
    assert messages == [
        (logging.WARNING, f"{prefix} {n} of 3 after {t} s")
        for n, t in ((1, "1.0"), (2, "3.0"), (3, "7.0"))
    ]


async def test_caller_deadline_still_rules(autojump_clock: object) -> None:
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery)
        async with bmc_session(network, retry=ADAPTIVE) as session:
            await session.get_power()
            bmc.silent = True
            with trio.move_on_after(0.5) as scope:
                await session.get_power()
            assert scope.cancelled_caught
            bmc.silent = False
            assert await session.get_power() is True
            assert session.statistics().logins == 1


async def test_a_login_opens_no_more_sessions_than_the_fixed_schedule(
    autojump_clock: object,
) -> None:
    """A BMC that completes RAKP but never grants the privilege: every run leaves a
    session behind on it. At most retries + 1 runs may do that (BMCs have about 4 slots),
    as with the fixed schedule; the last one waits max_timeout, as the fixed one would."""
    bmc = fake_bmc(power_on=True)
    async with trio.open_nursery() as nursery:
        network = network_for(
            bmc, nursery, latency(0.0, drop={("to_client", "privilege"): set(range(1, 20))})
        )
        started = trio.current_time()
        with pytest.raises(NoResponseError, match="no answer to login after 4 attempts"):
            async with bmc_session(network, retry=ADAPTIVE):
                pytest.fail("logged in without the privilege answer")
        took = trio.current_time() - started
    assert network.labels().count("open") == 4
    assert took == pytest.approx(0.05 + 0.1 + 0.2 + 4.0)  # the last: max_timeout


async def test_runs_lost_at_the_sessionless_probe_do_not_count_against_sessions(
    autojump_clock: object,
) -> None:
    bmc = fake_bmc(power_on=True)
    drop = {("to_client", "privilege"): {1, 2, 3}, ("to_bmc", "v15"): {2, 3}}
    async with trio.open_nursery() as nursery:
        network = network_for(bmc, nursery, latency(0.0, drop=drop))
        started = trio.current_time()
        async with bmc_session(network, retry=ADAPTIVE) as session:
            took = trio.current_time() - started
            assert await session.get_power() is True
            stats = session.statistics()
    assert network.labels().count("v15") == 6
    assert network.labels().count("open") == 4
    assert stats.logins == 1 and stats.retransmits == 5
    # Nothing waited for the first probe (answered at once), then 50 ms doubling each run.
    assert took == pytest.approx(0.05 + 0.1 + 0.2 + 0.4 + 0.8)
