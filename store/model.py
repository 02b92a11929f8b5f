"""Records the store hands out, and the validation of every value written into them.

Everything here is backend-neutral: the SQLite and JSON backends both validate through these
functions, so a value one backend accepts the other accepts too.
"""

from __future__ import annotations

import ipaddress
import math
import re
import uuid as uuid_module
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from store.errors import InvalidNode

# Ironic's power-state words; None means "unknown".
POWER_ON = "power on"
POWER_OFF = "power off"
REBOOTING = "rebooting"
SOFT_POWER_OFF = "soft power off"
POWER_ERROR = "error"
POWER_STATES = frozenset({POWER_ON, POWER_OFF, REBOOTING, SOFT_POWER_OFF, POWER_ERROR})
# Only these two states are ever reported to Nova.
NOTIFIABLE_STATES = frozenset({POWER_ON, POWER_OFF})

PRIVILEGES = ("user", "operator", "administrator")
CIPHER_SUITES = frozenset({3, 17})
SESSION_MODES = ("persistent", "per-cycle")
HISTORY_CAUSES = frozenset({"sync", "action", "recovery", "max-retries", "operator"})
NOTIFICATION_STATUSES = ("pending", "delivered", "dropped", "superseded")

MAX_USERNAME_BYTES = 16  # IPMI v2.0 user name field
MAX_PASSWORD_BYTES = 20  # IPMI v2.0 password field
MAX_NAME_LENGTH = 255
MASK = "******"

# Inventory fields: what an operator gives when adding a node.
INVENTORY_FIELDS = (
    "name",
    "bmc_address",
    "bmc_port",
    "bmc_username",
    "bmc_password",
    "cipher_suites",
    "privilege",
    "instance_uuid",
    "session_mode",
)
# State fields the agent writes through NodeChange in apply().
SETTABLE_FIELDS = frozenset(
    {
        "power_state",
        "target_power_state",
        "maintenance",
        "maintenance_reason",
        "fault",
        "last_error",
        "sync_failures",
        "last_seen_at",
    }
)
# Fields a NodeChange may expect to be unchanged (compare-and-set in apply()).
GUARD_FIELDS = frozenset(
    {"power_state", "target_power_state", "maintenance", "fault", "reservation"}
)
# update_node() accepts inventory and state fields (operator edits).
UPDATABLE_FIELDS = frozenset(INVENTORY_FIELDS) | SETTABLE_FIELDS


@attrs.frozen
class Node:
    """One bare-metal node: inventory, last known power state and reservation."""

    uuid: str
    name: str
    bmc_address: str
    bmc_port: int
    bmc_username: str
    bmc_password: str = attrs.field(repr=False)
    cipher_suites: tuple[int, ...]
    privilege: str
    session_mode: str | None
    instance_uuid: str | None
    power_state: str | None
    target_power_state: str | None
    maintenance: bool
    maintenance_reason: str | None
    fault: str | None
    reservation: str | None
    reservation_expires_at: float | None
    last_error: str | None
    sync_failures: int
    last_seen_at: float | None
    created_at: float
    updated_at: float

    def masked(self) -> dict[str, Any]:
        """All fields as plain values for display, with the password replaced by a mask."""
        values = attrs.asdict(self)
        values["bmc_password"] = MASK
        values["cipher_suites"] = list(self.cipher_suites)
        return values

    def is_locked(self, now: float) -> bool:
        """True while a holder has an unexpired reservation."""
        return self.reservation is not None and not _expired(self.reservation_expires_at, now)


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at <= now


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


# --- validation -------------------------------------------------------------------------

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _invalid(field: str, problem: str) -> InvalidNode:
    return InvalidNode(f"{field}: {problem}")


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid("name", "must be a non-empty string")
    if value != value.strip() or len(value) > MAX_NAME_LENGTH or not value.isprintable():
        raise _invalid(
            "name",
            f"{value!r} must be printable, at most {MAX_NAME_LENGTH} characters, "
            "without leading or trailing spaces",
        )
    if _parse_uuid(value) is not None:
        # get_node() accepts a name or a uuid; a name that is a uuid would be ambiguous.
        raise _invalid("name", f"{value!r} looks like a uuid; pick a name that does not")
    return value


def validate_address(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid("bmc_address", "must be an IPv4/IPv6 address or a host name")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return value
    hostname = value[:-1] if value.endswith(".") else value
    labels = hostname.split(".")
    if (
        len(hostname) > 253
        or not all(_HOSTNAME_LABEL.match(label) for label in labels)
        # An all-numeric dotted name is a mistyped IPv4 address, not a host name.
        or labels[-1].isdigit()
    ):
        raise _invalid("bmc_address", f"{value!r} is not an IPv4/IPv6 address or a host name")
    return value


def validate_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _invalid("bmc_port", f"must be an integer from 1 to 65535, got {value!r}")
    return value


def validate_username(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid("bmc_username", "must be a non-empty string")
    if len(value.encode("utf-8")) > MAX_USERNAME_BYTES or "\x00" in value:
        raise _invalid(
            "bmc_username", f"{value!r} is longer than {MAX_USERNAME_BYTES} bytes (IPMI limit)"
        )
    return value


def validate_password(value: object) -> str:
    # Never put the value in the message.
    if not isinstance(value, str):
        raise _invalid("bmc_password", "must be a string")
    if len(value.encode("utf-8")) > MAX_PASSWORD_BYTES or "\x00" in value:
        raise _invalid(
            "bmc_password", f"longer than {MAX_PASSWORD_BYTES} bytes or contains NUL (IPMI limit)"
        )
    return value


def validate_cipher_suites(value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise _invalid("cipher_suites", f"must be a list of suite numbers, got {value!r}")
    suites = tuple(value)
    if (
        not suites
        or any(isinstance(s, bool) or not isinstance(s, int) for s in suites)
        or not set(suites) <= CIPHER_SUITES
        or len(set(suites)) != len(suites)
    ):
        raise _invalid(
            "cipher_suites",
            f"must be a non-empty list of distinct suites from {sorted(CIPHER_SUITES)}, "
            f"got {list(suites)!r}",
        )
    return suites


def validate_privilege(value: object) -> str:
    if value not in PRIVILEGES:
        raise _invalid("privilege", f"must be one of {', '.join(PRIVILEGES)}, got {value!r}")
    assert isinstance(value, str)
    return value


def _parse_uuid(value: str) -> str | None:
    try:
        return str(uuid_module.UUID(value))
    except ValueError:
        return None


def validate_instance_uuid(value: object) -> str | None:
    if value is None:
        return None
    parsed = _parse_uuid(value) if isinstance(value, str) else None
    if parsed is None:
        raise _invalid("instance_uuid", f"must be a UUID, got {value!r}")
    return parsed


def validate_session_mode(value: object) -> str | None:
    if value is not None and value not in SESSION_MODES:
        raise _invalid(
            "session_mode", f"must be one of {', '.join(SESSION_MODES)} or unset, got {value!r}"
        )
    return value


def validate_power_state(field: str, value: object) -> str | None:
    if value is not None and value not in POWER_STATES:
        raise _invalid(
            field, f"must be one of {', '.join(sorted(POWER_STATES))} or None, got {value!r}"
        )
    return value


def _optional_text(field: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid(field, f"must be a string or None, got {value!r}")
    return value


def _optional_time(field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(field, f"must be a finite number of seconds or None, got {value!r}")
    return float(value)


def validate_field(field: str, value: object) -> object:
    """Validate and normalise one field value; InvalidNode names the field."""
    match field:
        case "name":
            return validate_name(value)
        case "bmc_address":
            return validate_address(value)
        case "bmc_port":
            return validate_port(value)
        case "bmc_username":
            return validate_username(value)
        case "bmc_password":
            return validate_password(value)
        case "cipher_suites":
            return validate_cipher_suites(value)
        case "privilege":
            return validate_privilege(value)
        case "instance_uuid":
            return validate_instance_uuid(value)
        case "session_mode":
            return validate_session_mode(value)
        case "power_state" | "target_power_state":
            return validate_power_state(field, value)
        case "maintenance":
            if not isinstance(value, bool):
                raise _invalid(field, f"must be true or false, got {value!r}")
            return value
        case "maintenance_reason" | "fault" | "last_error":
            return _optional_text(field, value)
        case "sync_failures":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _invalid(field, f"must be a non-negative integer, got {value!r}")
            return value
        case "last_seen_at":
            return _optional_time(field, value)
    raise _invalid(field, "is not a node field that can be set")


def validate_fields(fields: Mapping[str, object], allowed: frozenset[str]) -> dict[str, object]:
    """Validate a mapping of field updates against the allowed names."""
    clean: dict[str, object] = {}
    for field, value in fields.items():
        if field not in allowed:
            raise _invalid(field, "is not a node field that can be set here")
        clean[field] = validate_field(field, value)
    return clean


def validate_inventory(
    *,
    name: object,
    bmc_address: object,
    bmc_port: object,
    bmc_username: object,
    bmc_password: object,
    cipher_suites: object,
    privilege: object,
    instance_uuid: object,
    session_mode: object,
) -> dict[str, object]:
    """Validate every inventory field of a new node."""
    return validate_fields(
        {
            "name": name,
            "bmc_address": bmc_address,
            "bmc_port": bmc_port,
            "bmc_username": bmc_username,
            "bmc_password": bmc_password,
            "cipher_suites": cipher_suites,
            "privilege": privilege,
            "instance_uuid": instance_uuid,
            "session_mode": session_mode,
        },
        frozenset(INVENTORY_FIELDS),
    )


def validate_history(record: HistoryRecord) -> None:
    validate_power_state("history.from_state", record.from_state)
    validate_power_state("history.to_state", record.to_state)
    if record.cause not in HISTORY_CAUSES:
        raise _invalid(
            "history.cause",
            f"must be one of {', '.join(sorted(HISTORY_CAUSES))}, got {record.cause!r}",
        )
    if not isinstance(record.message, str):
        raise _invalid("history.message", "must be a string")


def validate_notification(value: object) -> str | None:
    if value is not None and value not in NOTIFIABLE_STATES:
        raise _invalid("notification", f"must be 'power on', 'power off' or None, got {value!r}")
    return value


def new_node(fields: Mapping[str, object], *, now: float) -> Node:
    """A fresh Node from validated inventory fields: unknown power state, no reservation."""
    return Node(
        uuid=str(uuid_module.uuid4()),
        name=fields["name"],  # type: ignore[arg-type]
        bmc_address=fields["bmc_address"],  # type: ignore[arg-type]
        bmc_port=fields["bmc_port"],  # type: ignore[arg-type]
        bmc_username=fields["bmc_username"],  # type: ignore[arg-type]
        bmc_password=fields["bmc_password"],  # type: ignore[arg-type]
        cipher_suites=fields["cipher_suites"],  # type: ignore[arg-type]
        privilege=fields["privilege"],  # type: ignore[arg-type]
        session_mode=fields["session_mode"],  # type: ignore[arg-type]
        instance_uuid=fields["instance_uuid"],  # type: ignore[arg-type]
        power_state=None,
        target_power_state=None,
        maintenance=False,
        maintenance_reason=None,
        fault=None,
        reservation=None,
        reservation_expires_at=None,
        last_error=None,
        sync_failures=0,
        last_seen_at=None,
        created_at=now,
        updated_at=now,
    )


def parse_uuid(value: str) -> str | None:
    """The canonical form of ``value`` if it is a UUID, else None."""
    return _parse_uuid(value)
