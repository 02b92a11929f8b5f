"""The power-sync rules as pure functions: recorded state + observation -> decision.

Nothing here does I/O or reads a clock: the service feeds in the node as the store recorded
it, what the BMC answered (a power state or the BMC's own error text) and the settings, and
gets back the fields to write, the history row, the Nova notification and the log line. The
rules follow Ironic's conductor (see docs/sync.md):

* nodes in maintenance, locked by someone else, or with a power action in flight are skipped;
* an unknown recorded state takes the hardware state;
* a mismatch is corrected: the hardware is driven to the record (force) or the record takes
  the hardware state (no force); either way it counts as a failure, like a failed read;
* past ``max_retries`` consecutive failures the node goes to maintenance with fault
  "power failure" and a reason carrying the real BMC error; an operator's maintenance is
  never overwritten;
* recovery clears a "power failure" maintenance after one good read, and never an
  operator's maintenance.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Protocol

import attrs

POWER_ON = "power on"
POWER_OFF = "power off"
FAULT_POWER_FAILURE = "power failure"
# States Nova understands as power-update events; anything else is never sent.
NOTIFIABLE_STATES = frozenset({POWER_ON, POWER_OFF})


# Ironic's power sync leaves nodes in these provision states alone (its conductor's
# SYNC_EXCLUDED_STATES: DEPLOYWAIT, CLEANWAIT, ENROLL, ADOPTFAIL, in the words its API shows;
# "deploy wait" is accepted too, as operators write it).
SYNC_EXCLUDED_STATES = frozenset(
    {"wait call-back", "deploy wait", "clean wait", "enroll", "adopt failed"}
)


class RecordedNode(Protocol):
    """What the policy reads from a node; ``store.Node`` satisfies it."""

    @property
    def uuid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def power_state(self) -> str | None: ...
    @property
    def target_power_state(self) -> str | None: ...
    @property
    def maintenance(self) -> bool: ...
    @property
    def fault(self) -> str | None: ...
    @property
    def reservation(self) -> str | None: ...
    @property
    def reservation_expires_at(self) -> float | None: ...
    @property
    def instance_uuid(self) -> str | None: ...
    @property
    def provision_state(self) -> str | None: ...
    @property
    def health(self) -> str | None: ...
    @property
    def sync_failures(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...


@attrs.frozen
class SyncSettings:
    force: bool = True  # force_power_state_during_sync
    max_retries: int = 3  # power_state_sync_max_retries
    # A BMC out of session slots (sessions of crashed agents fill its table) frees them when
    # they idle out: its refusals count as failures only once they outlast that (seconds).
    busy_grace: float = 60.0


@attrs.frozen
class Observation:
    """One attempt to read a BMC: a power state, or the error text the BMC path produced."""

    power_state: str | None = None
    error: str | None = None
    # For a BMC refusing for lack of session slots: how long since its last good read
    # (None: not that refusal, or never read).
    busy_for: float | None = None

    @classmethod
    def read(cls, power_state: str) -> Observation:
        return cls(power_state=power_state)

    @classmethod
    def failed(cls, error: str, *, busy_for: float | None = None) -> Observation:
        return cls(error=error or "unknown error", busy_for=busy_for)

    @property
    def ok(self) -> bool:
        return self.error is None


class Action(enum.Enum):
    SKIP = "skip"
    IN_SYNC = "in-sync"
    RECORD_FIRST = "record"  # no previous state: take the hardware's
    RECORD_HARDWARE = "record-hardware"  # mismatch, force off: take the hardware's
    FORCE = "force"  # mismatch, force on: drive the hardware to the record
    FORCED = "forced"  # the forced change was made
    FORCE_FAILED = "force-failed"
    READ_FAILED = "read-failed"
    MAINTENANCE = "maintenance"  # max retries exceeded
    RECOVERED = "recovered"
    STILL_FAILING = "still-failing"


@attrs.frozen
class HistoryNote:
    """A history row to write with the change (mirrors ``store.HistoryRecord``)."""

    from_state: str | None
    to_state: str | None
    cause: str  # "sync" | "action" | "recovery" | "max-retries" | "operator"
    message: str = ""


@attrs.frozen
class Decision:
    action: Action
    fields: Mapping[str, object] = attrs.field(factory=dict)
    history: HistoryNote | None = None
    notification: str | None = None  # new power state to tell Nova
    force_to: str | None = None  # Action.FORCE: the state to drive the hardware to
    log_level: int = logging.DEBUG
    message: str = ""


def lock_is_held(node: RecordedNode, *, now: float) -> bool:
    """True while a reservation exists and has not expired."""
    if node.reservation is None:
        return False
    return node.reservation_expires_at is None or node.reservation_expires_at > now


def skip_reason(node: RecordedNode, *, now: float) -> str | None:
    """Why the sync must leave this node alone this cycle, or None."""
    if node.provision_state in SYNC_EXCLUDED_STATES:
        return f"provision state {node.provision_state}"
    if node.maintenance:
        return "in maintenance"
    if node.target_power_state is not None:
        return f"power action to {node.target_power_state} in flight"
    if lock_is_held(node, now=now):
        return f"locked by {node.reservation}"
    return None


def health_note(node: RecordedNode, seen: str | None) -> HistoryNote | None:
    """The history row for a change of the hardware's health (None: unchanged or unread, or
    a first reading that is "ok": nothing an operator needs to see in the history)."""
    recorded = node.health
    if seen is None or seen == recorded or (recorded is None and seen == "ok"):
        return None
    message = f"health {recorded or 'unknown'} -> {seen}"
    return HistoryNote(node.power_state, node.power_state, "sync", message)


def _notify(node: RecordedNode, old: str | None, new: str | None) -> str | None:
    if node.instance_uuid is None or new == old or new not in NOTIFIABLE_STATES:
        return None
    return new


def decide_sync(node: RecordedNode, observation: Observation, settings: SyncSettings) -> Decision:
    """The decision for one node the sync did not skip, given one BMC read."""
    count = node.sync_failures + 1
    recorded = node.power_state
    if not observation.ok:
        error = observation.error or "unknown error"
        busy_for = observation.busy_for
        if busy_for is not None and busy_for < settings.busy_grace:
            return Decision(
                Action.READ_FAILED,
                fields={"last_error": f"power state read failed: {error}"},
                log_level=logging.WARNING,
                message=(
                    f"node {node.name}: the BMC has no free session slot ({busy_for:.0f} s "
                    f"since its last answer); not counted as a failure before "
                    f"{settings.busy_grace:g} s, when its stale sessions have timed out"
                ),
            )
        if count > settings.max_retries:
            return _max_retries_exceeded(node, None, error, count, settings)
        return Decision(
            Action.READ_FAILED,
            fields={"sync_failures": count, "last_error": f"power state read failed: {error}"},
            log_level=logging.WARNING,
            message=(
                f"could not read the power state of node {node.name} "
                f"(attempt {count} of {settings.max_retries}): {error}"
            ),
        )
    actual = observation.power_state
    if actual == recorded:
        fields: dict[str, object] = {}
        if node.sync_failures:
            fields["sync_failures"] = 0
        if node.last_error is not None:
            fields["last_error"] = None
        return Decision(Action.IN_SYNC, fields=fields, message=f"node {node.name} is {actual}")
    if recorded is None:
        return Decision(
            Action.RECORD_FIRST,
            fields={"power_state": actual, "sync_failures": 0, "last_error": None},
            history=HistoryNote(None, actual, "sync", "no previous known state; recorded hardware"),
            notification=_notify(node, recorded, actual),
            log_level=logging.INFO,
            message=f"node {node.name} had no known power state; recording {actual}",
        )
    if count > settings.max_retries:
        return _max_retries_exceeded(node, actual, None, count, settings)
    if settings.force and recorded in NOTIFIABLE_STATES:
        return Decision(
            Action.FORCE,
            fields={"sync_failures": count},
            force_to=recorded,
            log_level=logging.WARNING,
            message=(
                f"node {node.name} hardware is {actual} but recorded {recorded}; "
                f"changing hardware state to {recorded} (attempt {count} of {settings.max_retries})"
            ),
        )
    return Decision(
        Action.RECORD_HARDWARE,
        fields={"power_state": actual, "sync_failures": count},
        history=HistoryNote(recorded, actual, "sync", "hardware state differed; recorded it"),
        notification=_notify(node, recorded, actual),
        log_level=logging.WARNING,
        message=(
            f"node {node.name} hardware is {actual} but recorded {recorded}; "
            f"updating recorded state to {actual} (attempt {count} of {settings.max_retries})"
        ),
    )


def decide_force_result(node: RecordedNode, target: str, error: str | None) -> Decision:
    """After an Action.FORCE: the hardware was (or was not) driven to ``target``."""
    if error is not None:
        text = f"forced power change of node {node.name} to {target} failed: {error}"
        return Decision(
            Action.FORCE_FAILED,
            fields={"last_error": text},
            log_level=logging.ERROR,
            message=text,
        )
    return Decision(
        Action.FORCED,
        history=HistoryNote(target, target, "sync", f"hardware was driven back to {target}"),
        log_level=logging.INFO,
        message=f"node {node.name} hardware driven back to {target}",
    )


def _max_retries_exceeded(
    node: RecordedNode,
    actual: str | None,
    error: str | None,
    count: int,
    settings: SyncSettings,
) -> Decision:
    recorded = node.power_state
    if error is not None:
        detail = f"the BMC could not be read: {error}"
    else:
        detail = f"hardware state {actual} kept differing from recorded state {recorded}"
    reason = (
        f"power sync failed {count} times in a row (max retries {settings.max_retries}); "
        f"{detail}; recorded state set to {actual or 'unknown'}"
    )
    fields: dict[str, object] = {
        "power_state": actual,
        "sync_failures": count,
        "last_error": reason,
    }
    if not node.maintenance:  # an operator's maintenance and reason are never overwritten
        fields.update(maintenance=True, maintenance_reason=reason, fault=FAULT_POWER_FAILURE)
    return Decision(
        Action.MAINTENANCE,
        fields=fields,
        history=HistoryNote(recorded, actual, "max-retries", reason),
        notification=_notify(node, recorded, actual),
        log_level=logging.ERROR,
        message=f"node {node.name} switched to maintenance: {reason}",
    )


def needs_recovery(node: RecordedNode, *, now: float) -> bool:
    """Nodes the recovery pass probes: maintenance set by a power failure, not busy."""
    return (
        node.maintenance
        and node.fault == FAULT_POWER_FAILURE
        and node.target_power_state is None
        and not lock_is_held(node, now=now)
    )


def decide_recovery(node: RecordedNode, observation: Observation) -> Decision:
    """One probe of a node in "power failure" maintenance."""
    if not (node.maintenance and node.fault == FAULT_POWER_FAILURE):
        return Decision(
            Action.SKIP, message=f"node {node.name} is not in power-failure maintenance"
        )
    if not observation.ok:
        return Decision(
            Action.STILL_FAILING,
            message=f"node {node.name} still unreadable: {observation.error}",
        )
    actual = observation.power_state
    recorded = node.power_state
    return Decision(
        Action.RECOVERED,
        fields={
            "power_state": actual,
            "maintenance": False,
            "maintenance_reason": None,
            "fault": None,
            "sync_failures": 0,
            "last_error": None,
        },
        history=HistoryNote(recorded, actual, "recovery", "recovered from power failure"),
        notification=_notify(node, recorded, actual),
        log_level=logging.INFO,
        message=f"node {node.name} recovered from power failure; power state {actual}",
    )
