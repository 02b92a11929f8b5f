"""Shape checks for every value the store writes into a node.

The store checks only shape: strings are strings, required ones are not empty, lengths have a
sane maximum (against abuse, not a protocol's limit), numbers are in range. What a protocol
allows (IPMI's 16-byte user names and 20-byte passwords, cipher suites 3 and 17, privilege
words) is checked by the agent's driver for that protocol, which knows the rules.

Every function raises InvalidNode "field: problem", naming the field and never a password.
"""

from __future__ import annotations

import ipaddress
import math
import re
import uuid as uuid_module
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

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

SESSION_MODES = ("persistent", "per-cycle")
HISTORY_CAUSES = frozenset({"sync", "action", "recovery", "max-retries", "operator"})
NOTIFICATION_STATUSES = ("pending", "delivered", "dropped", "superseded")

MAX_NAME_LENGTH = 255
MAX_USERNAME_BYTES = 255  # against abuse; protocol limits are the driver's business
MAX_PASSWORD_BYTES = 1024
MAX_TEXT_BYTES = 1024  # provision_state, health, driver_info values
MAX_WORD_LENGTH = 32  # privilege, driver
MAX_DRIVER_INFO_ENTRIES = 64

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_WORD = re.compile(rf"^[A-Za-z][A-Za-z0-9_-]{{0,{MAX_WORD_LENGTH - 1}}}$")
_DRIVER = re.compile(rf"^[a-z0-9_-]{{1,{MAX_WORD_LENGTH}}}$")
_INFO_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# driver_info holds settings, never secrets: the secret is bmc_password (or a *_file path).
_SECRET_KEY = re.compile(r"(password|secret|token)$")


def invalid(field: str, problem: str) -> InvalidNode:
    return InvalidNode(f"{field}: {problem}")


def parse_uuid(value: str) -> str | None:
    """The canonical form of ``value`` if it is a UUID, else None."""
    try:
        return str(uuid_module.UUID(value))
    except ValueError:
        return None


def _bounded_text(field: str, value: object, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise invalid(field, "must be a non-empty string" if not empty else "must be a string")
    if "\x00" in value or len(value.encode("utf-8", "surrogatepass")) > limit:
        raise invalid(field, f"must be at most {limit} bytes without NUL characters")
    return value


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise invalid("name", "must be a non-empty string")
    if value != value.strip() or len(value) > MAX_NAME_LENGTH or not value.isprintable():
        raise invalid(
            "name",
            f"{value!r} must be printable, at most {MAX_NAME_LENGTH} characters, "
            "without leading or trailing spaces",
        )
    if parse_uuid(value) is not None:
        # get_node() accepts a name or a uuid; a name that is a uuid would be ambiguous.
        raise invalid("name", f"{value!r} looks like a uuid; pick a name that does not")
    return value


def validate_address(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise invalid("bmc_address", "must be an IPv4/IPv6 address or a host name")
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
        raise invalid("bmc_address", f"{value!r} is not an IPv4/IPv6 address or a host name")
    return value


def validate_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise invalid("bmc_port", f"must be an integer from 1 to 65535, got {value!r}")
    return value


def validate_username(value: object) -> str:
    return _bounded_text("bmc_username", value, MAX_USERNAME_BYTES)


def validate_password(value: object) -> str:
    # Never put the value in the message.
    if not isinstance(value, str):
        raise invalid("bmc_password", "must be a string")
    if "\x00" in value or len(value.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise invalid(
            "bmc_password", f"must be at most {MAX_PASSWORD_BYTES} bytes without NUL characters"
        )
    return value


def validate_cipher_suites(value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise invalid("cipher_suites", f"must be a list of suite numbers, got {value!r}")
    suites = tuple(value)
    if (
        not suites
        or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 255 for s in suites)
        or len(set(suites)) != len(suites)
    ):
        raise invalid(
            "cipher_suites",
            f"must be a non-empty list of distinct numbers from 0 to 255, got {list(suites)!r}",
        )
    return suites


def validate_privilege(value: object) -> str:
    if not isinstance(value, str) or not _WORD.match(value):
        raise invalid(
            "privilege", f"must be one word of at most {MAX_WORD_LENGTH} letters, got {value!r}"
        )
    return value


def optional_uuid(field: str, value: object) -> str | None:
    """None, or ``value`` as a canonical UUID (InvalidNode naming ``field`` otherwise)."""
    if value is None:
        return None
    parsed = parse_uuid(value) if isinstance(value, str) else None
    if parsed is None:
        raise invalid(field, f"must be a UUID, got {value!r}")
    return parsed


def validate_instance_uuid(value: object) -> str | None:
    return optional_uuid("instance_uuid", value)


def validate_session_mode(value: object) -> str | None:
    if value is not None and value not in SESSION_MODES:
        raise invalid(
            "session_mode", f"must be one of {', '.join(SESSION_MODES)} or unset, got {value!r}"
        )
    return value


def validate_driver(value: object) -> str:
    if not isinstance(value, str) or not _DRIVER.match(value):
        raise invalid(
            "driver", f"must be 1-{MAX_WORD_LENGTH} characters from a-z 0-9 _ -, got {value!r}"
        )
    return value


Scalar = str | int | float | bool


class DriverInfo(Mapping[str, Scalar]):
    """An immutable, hashable mapping of driver settings (Ironic's driver_info names)."""

    __slots__ = ("_data", "_key")

    def __init__(self, values: Mapping[str, Scalar] | None = None) -> None:
        data = dict(sorted((values or {}).items()))
        self._data = data
        self._key = tuple(data.items())

    def __getitem__(self, key: str) -> Scalar:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:  # the dict's, not Mapping's slower one
        return self._data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DriverInfo):
            return self._key == other._key
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"DriverInfo({self._data!r})"


def validate_driver_info(value: object) -> DriverInfo:
    field = "driver_info"
    if not isinstance(value, Mapping):
        raise invalid(field, f"must be a mapping of setting names to values, got {value!r}")
    if len(value) > MAX_DRIVER_INFO_ENTRIES:
        raise invalid(field, f"has more than {MAX_DRIVER_INFO_ENTRIES} entries")
    for key, item in value.items():
        if not isinstance(key, str) or not _INFO_KEY.match(key):
            raise invalid(field, f"key {key!r} must be an identifier (a-z, 0-9, _)")
        if _SECRET_KEY.search(key):
            raise invalid(
                field, f"key {key!r} would hold a secret: put it in bmc_password or a *_file path"
            )
        if isinstance(item, str):
            _bounded_text(f"{field}.{key}", item, MAX_TEXT_BYTES, empty=True)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not -(2**63) <= item < 2**63:
                raise invalid(f"{field}.{key}", "integer out of the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise invalid(f"{field}.{key}", f"must be a finite number, got {item!r}")
        elif not isinstance(item, bool):
            raise invalid(f"{field}.{key}", f"must be a string, number or boolean, got {item!r}")
    return value if isinstance(value, DriverInfo) else DriverInfo(value)


def optional_word_text(field: str, value: object) -> str | None:
    """None, or a non-empty printable string of bounded length (provision_state, health)."""
    if value is None:
        return None
    text = _bounded_text(field, value, MAX_TEXT_BYTES)
    if not text.isprintable():
        raise invalid(field, f"must be printable, got {text!r}")
    return text


def validate_power_state(field: str, value: object) -> str | None:
    if value is not None and value not in POWER_STATES:
        raise invalid(
            field, f"must be one of {', '.join(sorted(POWER_STATES))} or None, got {value!r}"
        )
    return value


def validate_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, f"must be true or false, got {value!r}")
    return value


def validate_count(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(field, f"must be a non-negative integer, got {value!r}")
    return value


def optional_text(field: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise invalid(field, f"must be a string or None, got {value!r}")
    return value


def optional_time(field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(field, f"must be a finite number of seconds or None, got {value!r}")
    return float(value)


def validate_notification(value: object) -> str | None:
    if value is not None and value not in NOTIFIABLE_STATES:
        raise invalid("notification", f"must be 'power on', 'power off' or None, got {value!r}")
    return value
