"""Records the store hands out, and the node's field list, declared once.

Every Node field carries metadata saying what it is (``kind``), how it is checked
(``check``), its value for a new node (``initial``, or ``default`` for an inventory field a
caller may leave out), how it is stored (``codec``) and whether apply() can guard on it.
Everything else (INVENTORY_FIELDS, SETTABLE_FIELDS, GUARD_FIELDS, the SQL column lists, the
JSON format, row -> Node) is derived from ``attrs.fields(Node)``: adding a field is one edit
here plus a schema migration.
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import attrs

from store.validate import (
    HISTORY_CAUSES,
    DriverInfo,
    Scalar,
    invalid,
    optional_text,
    optional_time,
    optional_uuid,
    optional_word_text,
    validate_address,
    validate_bool,
    validate_cipher_suites,
    validate_count,
    validate_driver,
    validate_driver_info,
    validate_instance_uuid,
    validate_name,
    validate_password,
    validate_port,
    validate_power_state,
    validate_privilege,
    validate_session_mode,
    validate_username,
)

MASK = "******"

# Field kinds.
IDENTITY = "identity"  # uuid: set once by the store
INVENTORY = "inventory"  # what an operator gives: add_node / upsert_node / update_node
STATE = "state"  # what the agent writes through NodeChange in apply() (and update_node)
LOCK = "lock"  # reservation: only through the lock methods
STAMP = "stamp"  # created_at / updated_at: set by the store

# Storage codecs (how a value that is not a plain scalar is stored).
SUITES = "suites"  # tuple of ints
BOOL = "bool"
MAPPING = "mapping"  # DriverInfo, stored as a JSON object

NO_DEFAULT = object()
NO_DRIVER_INFO = DriverInfo()


def _field(
    kind: str,
    check: Callable[[object], object] | None = None,
    *,
    default: object = NO_DEFAULT,
    initial: object = None,
    codec: str | None = None,
    guard: bool = False,
    repr: bool = True,
) -> Any:
    return attrs.field(
        repr=repr,
        metadata={
            "kind": kind,
            "check": check,
            "default": default,
            "initial": initial,
            "codec": codec,
            "guard": guard,
        },
    )


@attrs.frozen
class Node:
    """One bare-metal node: inventory, last known power state and reservation."""

    uuid: str = _field(IDENTITY)
    name: str = _field(INVENTORY, validate_name)
    bmc_address: str = _field(INVENTORY, validate_address)
    bmc_port: int = _field(INVENTORY, validate_port, default=623)
    bmc_username: str = _field(INVENTORY, validate_username)
    bmc_password: str = _field(INVENTORY, validate_password, repr=False)
    cipher_suites: tuple[int, ...] = _field(
        INVENTORY, validate_cipher_suites, default=(17, 3), codec=SUITES
    )
    privilege: str = _field(INVENTORY, validate_privilege, default="administrator")
    session_mode: str | None = _field(INVENTORY, validate_session_mode, default=None)
    instance_uuid: str | None = _field(INVENTORY, validate_instance_uuid, default=None)
    power_state: str | None = _field(
        STATE, partial(validate_power_state, "power_state"), guard=True
    )
    target_power_state: str | None = _field(
        STATE, partial(validate_power_state, "target_power_state"), guard=True
    )
    maintenance: bool = _field(
        STATE, partial(validate_bool, "maintenance"), initial=False, codec=BOOL, guard=True
    )
    maintenance_reason: str | None = _field(STATE, partial(optional_text, "maintenance_reason"))
    fault: str | None = _field(STATE, partial(optional_text, "fault"), guard=True)
    reservation: str | None = _field(LOCK, guard=True)
    reservation_expires_at: float | None = _field(LOCK)
    last_error: str | None = _field(STATE, partial(optional_text, "last_error"))
    sync_failures: int = _field(STATE, partial(validate_count, "sync_failures"), initial=0)
    last_seen_at: float | None = _field(STATE, partial(optional_time, "last_seen_at"))
    created_at: float = _field(STAMP)
    updated_at: float = _field(STAMP)
    # Schema 3: the protocol-neutral BMC seam.
    driver: str = _field(INVENTORY, validate_driver, default="ipmi")
    driver_info: Mapping[str, Scalar] = _field(
        INVENTORY, validate_driver_info, default=NO_DRIVER_INFO, codec=MAPPING
    )
    provision_state: str | None = _field(
        INVENTORY, partial(optional_word_text, "provision_state"), default=None
    )
    health: str | None = _field(STATE, partial(optional_word_text, "health"))

    def masked(self) -> dict[str, Any]:
        """All fields as plain values for display, with the password replaced by a mask."""
        values = attrs.asdict(self, recurse=False)
        values["bmc_password"] = MASK
        values["cipher_suites"] = list(self.cipher_suites)
        values["driver_info"] = dict(self.driver_info)
        return values

    def is_locked(self, now: float) -> bool:
        """True while a holder has an unexpired reservation."""
        return self.reservation is not None and not _expired(self.reservation_expires_at, now)


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at <= now


def _names(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(Node) if f.metadata["kind"] == kind)


NODE_FIELDS: tuple[str, ...] = tuple(f.name for f in attrs.fields(Node))
# Inventory fields: what an operator gives when adding a node.
INVENTORY_FIELDS = _names(INVENTORY)
# State fields the agent writes through NodeChange in apply().
SETTABLE_FIELDS = frozenset(_names(STATE))
# Fields a NodeChange may expect to be unchanged (compare-and-set in apply()).
GUARD_FIELDS = frozenset(f.name for f in attrs.fields(Node) if f.metadata["guard"])
# update_node() accepts inventory and state fields (operator edits).
UPDATABLE_FIELDS = frozenset(INVENTORY_FIELDS) | SETTABLE_FIELDS
# What add_node() uses for an inventory field the caller leaves out.
INVENTORY_DEFAULTS: dict[str, object] = {
    f.name: f.metadata["default"]
    for f in attrs.fields(Node)
    if f.metadata["kind"] == INVENTORY and f.metadata["default"] is not NO_DEFAULT
}
# Field name -> codec, for the fields not stored as a plain scalar.
CODECS: dict[str, str] = {
    f.name: f.metadata["codec"] for f in attrs.fields(Node) if f.metadata["codec"]
}
_CHECKS: dict[str, Callable[[object], object]] = {
    f.name: f.metadata["check"] for f in attrs.fields(Node) if f.metadata["check"]
}


@attrs.frozen
class HistoryRecord:
    """What apply() writes into the history for one node (the time and node come from apply)."""

    from_state: str | None
    to_state: str | None
    cause: str
    message: str = ""


@attrs.frozen
class HistoryEntry:
    """One stored history row."""

    id: int
    node_uuid: str
    node_name: str
    at: float
    from_state: str | None
    to_state: str | None
    cause: str
    message: str


@attrs.frozen
class NodeChange:
    """One node's part of an apply() batch.

    ``notification`` is the new power state to tell Nova ("power on"/"power off"); it is
    enqueued only if the node has an instance_uuid.
    """

    node_uuid: str
    fields: Mapping[str, object] = attrs.field(factory=dict)
    history: HistoryRecord | None = None
    notification: str | None = None
    # Compare-and-set, checked inside apply()'s transaction: the change is written only if
    # these fields still hold these values (GUARD_FIELDS only) and, with ``holder``, only if
    # no other holder's unexpired lock is on the node. Otherwise it is skipped and reported.
    expected: Mapping[str, object] | None = None
    holder: str | None = None
    # Fencing for several agents on one site: the lease under which the agent owns this node
    # (e.g. its bucket's). The change is written only while that lease is still held with
    # this token and unexpired, checked in apply()'s transaction; otherwise it is skipped and
    # reported like a compare-and-set conflict.
    fence: Lease | None = None
    # False: this change's notification does not supersede the instance's older pending ones
    # (a completed power action: each one is sent, in order). Rows of the same batch still do.
    supersede: bool = True


@attrs.frozen
class Lease:
    """A named lease (a bucket of nodes, the outbox drainer) held by one agent until
    ``expires_at`` (the backend's clock). ``token`` grows every time the lease changes hands,
    so a holder that lost it and still presents its old token is refused (fencing)."""

    name: str
    holder: str
    token: int
    expires_at: float


OUTBOX_LEASE = "outbox"  # the one agent that drains the Nova outbox holds this lease


def bucket_of(node_uuid: str, buckets: int) -> int:
    """The bucket (0 .. buckets-1) a node belongs to: the same in every agent and release."""
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets: must be a positive integer, got {buckets!r}")
    return uuid_module.UUID(node_uuid).int % buckets


def bucket_lease(bucket: int) -> str:
    """The name of the lease that gives its holder the nodes of ``bucket``."""
    return f"bucket:{bucket}"


@attrs.frozen
class Conductor:
    """One agent registered on the site (Ironic's conductor), named by its host."""

    host: str
    started_at: float
    last_heartbeat: float  # the backend's clock
    info: str | None  # e.g. the agent's last cycle summary as JSON

    def alive(self, now: float, timeout: float) -> bool:
        """Heartbeat within ``timeout`` seconds of ``now`` (Ironic: heartbeat_timeout, 60 s)."""
        return now - self.last_heartbeat <= timeout


@attrs.frozen
class Notification:
    """One row of the notification outbox."""

    id: int
    node_uuid: str
    instance_uuid: str
    power_state: str
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None
    status: str


NOTIFICATION_FIELDS: tuple[str, ...] = tuple(f.name for f in attrs.fields(Notification))
HISTORY_FIELDS = ("id", "node_uuid", "at", "from_state", "to_state", "cause", "message")


# --- validation -------------------------------------------------------------------------


def validate_field(field: str, value: object) -> object:
    """Validate and normalise one field value; InvalidNode names the field."""
    check = _CHECKS.get(field)
    if check is None:
        raise invalid(field, "is not a node field that can be set")
    return check(value)


def validate_fields(fields: Mapping[str, object], allowed: frozenset[str]) -> dict[str, object]:
    """Validate a mapping of field updates against the allowed names."""
    clean: dict[str, object] = {}
    for field, value in fields.items():
        if field not in allowed:
            raise invalid(field, "is not a node field that can be set here")
        clean[field] = validate_field(field, value)
    return clean


def validate_inventory(values: Mapping[str, object]) -> dict[str, object]:
    """Validate every inventory field of a new node (defaults filled in for missing ones)."""
    unknown = set(values) - set(INVENTORY_FIELDS)
    if unknown:
        raise invalid(sorted(unknown)[0], "is not a node inventory field")
    full = {**INVENTORY_DEFAULTS, **values}
    missing = [field for field in INVENTORY_FIELDS if field not in full]
    if missing:
        raise invalid(missing[0], "is required")
    return validate_fields(full, frozenset(INVENTORY_FIELDS))


def validate_history(record: HistoryRecord) -> None:
    validate_power_state("history.from_state", record.from_state)
    validate_power_state("history.to_state", record.to_state)
    if record.cause not in HISTORY_CAUSES:
        raise invalid(
            "history.cause",
            f"must be one of {', '.join(sorted(HISTORY_CAUSES))}, got {record.cause!r}",
        )
    if not isinstance(record.message, str):
        raise invalid("history.message", "must be a string")


def validate_node_uuid(value: object) -> str | None:
    """A node's own uuid given by the caller (e.g. Ironic's, kept by ``node import``)."""
    return optional_uuid("uuid", value)


def new_node(fields: Mapping[str, object], *, now: float, uuid: str | None = None) -> Node:
    """A fresh Node from validated inventory fields: unknown power state, no reservation.

    ``uuid`` (validated by :func:`validate_node_uuid`) keeps a given identity; else a new one.
    """
    values: dict[str, Any] = {}
    for field in attrs.fields(Node):
        kind = field.metadata["kind"]
        if kind == INVENTORY:
            values[field.name] = fields[field.name]
        elif kind == STAMP:
            values[field.name] = now
        else:
            values[field.name] = field.metadata["initial"]
    values["uuid"] = str(uuid_module.uuid4()) if uuid is None else uuid
    return Node(**values)
