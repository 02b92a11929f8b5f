"""Table tests of the power-sync rules (agent.sync.policy): pure functions, no mocks."""

from __future__ import annotations

import itertools
import logging

import attrs
import pytest

from agent.sync.policy import (
    FAULT_POWER_FAILURE,
    POWER_OFF,
    POWER_ON,
    Action,
    Observation,
    SyncSettings,
    decide_force_result,
    decide_recovery,
    decide_sync,
    needs_recovery,
    skip_reason,
)

MAX = 3
INSTANCE = "8b4c1d7e-5f9a-4a34-9d8e-2f1c0b6a7e11"


@attrs.frozen
class FakeNode:
    uuid: str = "node-uuid-1"
    name: str = "sim-0001"
    power_state: str | None = POWER_ON
    target_power_state: str | None = None
    maintenance: bool = False
    maintenance_reason: str | None = None
    fault: str | None = None
    reservation: str | None = None
    reservation_expires_at: float | None = None
    instance_uuid: str | None = None
    sync_failures: int = 0
    last_error: str | None = None
    provision_state: str | None = "active"


READ_ON = Observation.read(POWER_ON)
READ_OFF = Observation.read(POWER_OFF)
READ_FAIL = Observation.failed("no answer from 127.0.0.1:9001 after 4 tries (11.0 s)")

BELOW, AT, ABOVE = MAX - 2, MAX, MAX + 1  # stored counters before this cycle


# One row per situation: (force, recorded, observation, failures before, instance)
#   -> (action, power_state written (or "-" for untouched), failures after, notification)
SYNC_TABLE = [
    # match: counter resets, nothing else
    (True, POWER_ON, READ_ON, 0, False, Action.IN_SYNC, "-", "-", None),
    (True, POWER_ON, READ_ON, AT, True, Action.IN_SYNC, "-", 0, None),
    (False, POWER_OFF, READ_OFF, BELOW, True, Action.IN_SYNC, "-", 0, None),
    (False, POWER_OFF, READ_OFF, ABOVE, False, Action.IN_SYNC, "-", 0, None),
    # unknown record: take the hardware state, notify only with an instance
    (True, None, READ_ON, 0, True, Action.RECORD_FIRST, POWER_ON, 0, POWER_ON),
    (True, None, READ_OFF, AT, False, Action.RECORD_FIRST, POWER_OFF, 0, None),
    (False, None, READ_OFF, 0, True, Action.RECORD_FIRST, POWER_OFF, 0, POWER_OFF),
    (False, None, READ_ON, BELOW, False, Action.RECORD_FIRST, POWER_ON, 0, None),
    # mismatch with force: hardware driven back, record untouched, counted
    (True, POWER_ON, READ_OFF, 0, True, Action.FORCE, "-", 1, None),
    (True, POWER_OFF, READ_ON, BELOW, False, Action.FORCE, "-", BELOW + 1, None),
    (True, POWER_ON, READ_OFF, MAX - 1, True, Action.FORCE, "-", MAX, None),
    # mismatch without force: record takes hardware, counted, Nova told with an instance
    (False, POWER_ON, READ_OFF, 0, True, Action.RECORD_HARDWARE, POWER_OFF, 1, POWER_OFF),
    (False, POWER_OFF, READ_ON, BELOW, False, Action.RECORD_HARDWARE, POWER_ON, BELOW + 1, None),
    (False, POWER_OFF, READ_ON, MAX - 1, True, Action.RECORD_HARDWARE, POWER_ON, MAX, POWER_ON),
    # mismatch past max retries (either mode): maintenance, record takes hardware
    (True, POWER_ON, READ_OFF, AT, True, Action.MAINTENANCE, POWER_OFF, AT + 1, POWER_OFF),
    (True, POWER_ON, READ_OFF, ABOVE, False, Action.MAINTENANCE, POWER_OFF, ABOVE + 1, None),
    (False, POWER_OFF, READ_ON, AT, False, Action.MAINTENANCE, POWER_ON, AT + 1, None),
    (False, POWER_OFF, READ_ON, ABOVE, True, Action.MAINTENANCE, POWER_ON, ABOVE + 1, POWER_ON),
    # read failure: counted, record untouched until past max, then None, never notified
    (True, POWER_ON, READ_FAIL, 0, True, Action.READ_FAILED, "-", 1, None),
    (False, POWER_OFF, READ_FAIL, BELOW, False, Action.READ_FAILED, "-", BELOW + 1, None),
    (True, POWER_ON, READ_FAIL, MAX - 1, False, Action.READ_FAILED, "-", MAX, None),
    (True, POWER_ON, READ_FAIL, AT, True, Action.MAINTENANCE, None, AT + 1, None),
    (False, POWER_OFF, READ_FAIL, ABOVE, True, Action.MAINTENANCE, None, ABOVE + 1, None),
    (True, None, READ_FAIL, AT, False, Action.MAINTENANCE, None, AT + 1, None),
]


@pytest.mark.parametrize(
    (
        "force",
        "recorded",
        "observation",
        "failures",
        "instance",
        "action",
        "state",
        "after",
        "note",
    ),
    SYNC_TABLE,
)
def test_sync_table(
    force: bool,
    recorded: str | None,
    observation: Observation,
    failures: int,
    instance: bool,
    action: Action,
    state: str | None,
    after: int | str,
    note: str | None,
) -> None:
    node = FakeNode(
        power_state=recorded,
        sync_failures=failures,
        instance_uuid=INSTANCE if instance else None,
    )
    decision = decide_sync(node, observation, SyncSettings(force=force, max_retries=MAX))
    assert decision.action is action
    if state == "-":
        assert "power_state" not in decision.fields
    else:
        assert decision.fields["power_state"] == state
    if after == "-":
        assert "sync_failures" not in decision.fields
    else:
        assert decision.fields["sync_failures"] == after
    assert decision.notification == note
    if action is Action.FORCE:
        assert decision.force_to == recorded
        assert decision.history is None  # the record did not change
    else:
        assert decision.force_to is None


@pytest.mark.parametrize("force", [True, False])
def test_max_retries_after_read_failure_carries_the_real_bmc_error(force: bool) -> None:
    error = "RAKP2 integrity check failed (wrong password?) from 10.1.2.3:623"
    node = FakeNode(sync_failures=MAX)
    decision = decide_sync(node, Observation.failed(error), SyncSettings(force, MAX))
    assert decision.action is Action.MAINTENANCE
    assert decision.fields["maintenance"] is True
    assert decision.fields["fault"] == FAULT_POWER_FAILURE
    reason = decision.fields["maintenance_reason"]
    assert isinstance(reason, str) and error in reason
    assert decision.fields["last_error"] == reason
    assert decision.fields["power_state"] is None
    assert decision.history is not None
    assert (decision.history.from_state, decision.history.to_state) == (POWER_ON, None)
    assert decision.history.cause == "max-retries"
    assert decision.log_level == logging.ERROR


def test_max_retries_never_overwrites_an_operator_maintenance() -> None:
    # The sync never selects maintenance nodes; if the operator raced it, the policy still
    # leaves their maintenance flag and reason alone.
    node = FakeNode(maintenance=True, maintenance_reason="disk swap", sync_failures=MAX)
    decision = decide_sync(node, READ_FAIL, SyncSettings(True, MAX))
    assert decision.action is Action.MAINTENANCE
    for key in ("maintenance", "maintenance_reason", "fault"):
        assert key not in decision.fields


def test_mismatch_with_force_logs_both_states_as_warning() -> None:
    decision = decide_sync(FakeNode(power_state=POWER_ON), READ_OFF, SyncSettings(True, MAX))
    assert decision.log_level == logging.WARNING
    assert POWER_ON in decision.message and POWER_OFF in decision.message
    decision = decide_sync(FakeNode(power_state=POWER_ON), READ_OFF, SyncSettings(False, MAX))
    assert decision.log_level == logging.WARNING
    assert "updating recorded state to power off" in decision.message
    assert decision.history is not None and decision.history.cause == "sync"


def test_force_is_not_attempted_for_a_record_that_is_not_on_or_off() -> None:
    decision = decide_sync(FakeNode(power_state="error"), READ_ON, SyncSettings(True, MAX))
    assert decision.action is Action.RECORD_HARDWARE
    assert decision.fields["power_state"] == POWER_ON


def test_in_sync_clears_last_error() -> None:
    node = FakeNode(last_error="power state read failed: timeout", sync_failures=2)
    decision = decide_sync(node, READ_ON, SyncSettings())
    assert decision.fields == {"sync_failures": 0, "last_error": None}
    assert decide_sync(FakeNode(), READ_ON, SyncSettings()).fields == {}


def test_force_result() -> None:
    node = FakeNode(power_state=POWER_ON)
    done = decide_force_result(node, POWER_ON, None)
    assert done.action is Action.FORCED and done.history is not None
    assert done.notification is None
    failed = decide_force_result(node, POWER_ON, "completion code 0xc0 (node busy)")
    assert failed.action is Action.FORCE_FAILED
    assert failed.log_level == logging.ERROR
    last_error = failed.fields["last_error"]
    assert isinstance(last_error, str) and "0xc0" in last_error


# --- skipping -------------------------------------------------------------------------------

SKIP_TABLE = [
    (FakeNode(), None),
    (FakeNode(maintenance=True), "in maintenance"),
    (FakeNode(maintenance=True, fault=FAULT_POWER_FAILURE), "in maintenance"),
    (FakeNode(target_power_state=POWER_OFF), "power action to power off in flight"),
    (FakeNode(reservation="h:1:cli", reservation_expires_at=200.0), "locked by h:1:cli"),
    (FakeNode(reservation="h:1:cli", reservation_expires_at=None), "locked by h:1:cli"),
    (FakeNode(reservation="h:1:cli", reservation_expires_at=99.0), None),  # expired
    # Ironic's SYNC_EXCLUDED_STATES (an enroll node used to be synced)
    (FakeNode(provision_state="enroll"), "provision state enroll"),
    (FakeNode(provision_state="clean wait"), "provision state clean wait"),
    (FakeNode(provision_state="wait call-back"), "provision state wait call-back"),
    (FakeNode(provision_state="deploy wait"), "provision state deploy wait"),
    (FakeNode(provision_state="adopt failed"), "provision state adopt failed"),
    (FakeNode(provision_state="available"), None),
    (FakeNode(provision_state=None), None),
]


@pytest.mark.parametrize(("node", "reason"), SKIP_TABLE)
def test_skip_table(node: FakeNode, reason: str | None) -> None:
    assert skip_reason(node, now=100.0) == reason


# --- recovery -------------------------------------------------------------------------------

FAULTED = FakeNode(
    power_state=None,
    maintenance=True,
    maintenance_reason="power sync failed 4 times in a row",
    fault=FAULT_POWER_FAILURE,
    sync_failures=MAX + 1,
    last_error="x",
)
OPERATOR = FakeNode(maintenance=True, maintenance_reason="rack move", fault=None)

RECOVERY_TABLE = [
    # node, instance, observation -> action, notification
    (FAULTED, True, READ_ON, Action.RECOVERED, POWER_ON),
    (FAULTED, False, READ_OFF, Action.RECOVERED, None),
    (attrs.evolve(FAULTED, power_state=POWER_ON), True, READ_ON, Action.RECOVERED, None),
    (attrs.evolve(FAULTED, power_state=POWER_ON), True, READ_OFF, Action.RECOVERED, POWER_OFF),
    (FAULTED, True, READ_FAIL, Action.STILL_FAILING, None),
    (OPERATOR, True, READ_ON, Action.SKIP, None),
    (OPERATOR, False, READ_FAIL, Action.SKIP, None),
    (FakeNode(), False, READ_ON, Action.SKIP, None),
]


@pytest.mark.parametrize(("node", "instance", "observation", "action", "note"), RECOVERY_TABLE)
def test_recovery_table(
    node: FakeNode, instance: bool, observation: Observation, action: Action, note: str | None
) -> None:
    node = attrs.evolve(node, instance_uuid=INSTANCE if instance else None)
    decision = decide_recovery(node, observation)
    assert decision.action is action
    assert decision.notification == note
    if action is Action.RECOVERED:
        assert decision.fields["maintenance"] is False
        assert decision.fields["maintenance_reason"] is None
        assert decision.fields["fault"] is None
        assert decision.fields["sync_failures"] == 0
        assert decision.fields["power_state"] == observation.power_state
        assert decision.history is not None and decision.history.cause == "recovery"
    else:
        assert decision.fields == {}


def test_needs_recovery_only_power_failure_maintenance_that_is_free() -> None:
    assert needs_recovery(FAULTED, now=0.0)
    assert not needs_recovery(OPERATOR, now=0.0)
    assert not needs_recovery(FakeNode(), now=0.0)
    assert not needs_recovery(attrs.evolve(FAULTED, target_power_state=POWER_ON), now=0.0)
    locked = attrs.evolve(FAULTED, reservation="x", reservation_expires_at=10.0)
    assert not needs_recovery(locked, now=0.0)
    assert needs_recovery(locked, now=11.0)


# --- invariants over the whole product of situations -----------------------------------------

STATES = [POWER_ON, POWER_OFF, None]
OBSERVATIONS = [READ_ON, READ_OFF, READ_FAIL]
COUNTERS = [0, BELOW, MAX - 1, AT, ABOVE]


@pytest.mark.parametrize(
    ("force", "recorded", "observation", "failures", "instance"),
    list(itertools.product([True, False], STATES, OBSERVATIONS, COUNTERS, [True, False])),
)
def test_invariants(
    force: bool, recorded: str | None, observation: Observation, failures: int, instance: bool
) -> None:
    node = FakeNode(
        power_state=recorded,
        sync_failures=failures,
        instance_uuid=INSTANCE if instance else None,
    )
    decision = decide_sync(node, observation, SyncSettings(force, MAX))
    # Nova hears only about on/off changes of nodes with an instance.
    if decision.notification is not None:
        assert instance
        assert decision.notification in (POWER_ON, POWER_OFF)
        assert decision.fields["power_state"] == decision.notification != recorded
    # A changed record always comes with its history row.
    if "power_state" in decision.fields and decision.fields["power_state"] != recorded:
        assert decision.history is not None
        assert decision.history.to_state == decision.fields["power_state"]
    # Maintenance only past max retries, and only then.
    entered = decision.fields.get("maintenance") is True
    assert entered == (decision.action is Action.MAINTENANCE)
    if entered:
        assert failures + 1 > MAX
    # A read that matched the record always clears the counter.
    if observation.power_state == recorded and observation.ok:
        assert decision.fields.get("sync_failures", 0) == 0


# --- a BMC out of session slots -------------------------------------------------------------

BUSY = "BmcBusy: NegotiationError: 127.0.0.1:623: insufficient resources"


@pytest.mark.parametrize(
    ("busy_for", "failures", "action", "counted"),
    [
        (5.0, AT, Action.READ_FAILED, False),  # young refusal: its slots will time out
        (59.0, AT, Action.READ_FAILED, False),
        (61.0, BELOW, Action.READ_FAILED, True),  # outlasted a BMC's idle timeout
        (61.0, AT, Action.MAINTENANCE, True),
        (None, AT, Action.MAINTENANCE, True),  # never read: no grace
    ],
)
def test_a_full_session_table_counts_only_once_it_outlasts_the_idle_timeout(
    busy_for: float | None, failures: int, action: Action, counted: bool
) -> None:
    node = FakeNode(sync_failures=failures)
    decision = decide_sync(node, Observation.failed(BUSY, busy_for=busy_for), SyncSettings())
    assert decision.action is action
    assert ("sync_failures" in decision.fields) is counted
    if not counted:
        assert "no free session slot" in decision.message
        assert decision.fields["last_error"] == f"power state read failed: {BUSY}"
