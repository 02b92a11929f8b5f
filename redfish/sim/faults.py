"""Fault injection settings for a simulated Redfish fleet (the IPMI fleet's set, in HTTP).

A :class:`Faults` value is immutable; the fleet swaps the whole value when faults change
(at start, from Python with ``Fleet.set_faults`` or through the control socket), so every
request reads one consistent snapshot.

BMCs are selected by their 0-based index in ``Fleet.bmcs`` (BMC ``i`` listens on
``port_base + i`` and is named ``sim-{i:04d}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

INDEX_SET_FIELDS = (
    "dead",
    "hanging",
    "wrong_password",
    "flapping",
    "slow",
    "ignore_soft_off",
    "server_errors",
    "sessions_full",
)
FLOAT_FIELDS = ("latency", "jitter", "flap_interval", "slow_delay")
INT_FIELDS = ("error_burst", "error_status")


def _index_set(value: Iterable[int]) -> frozenset[int]:
    result = frozenset(int(item) for item in value)
    if any(item < 0 for item in result):
        raise ValueError("BMC indexes are 0-based and never negative")
    return result


def _non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _count(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0.0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _server_error(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 500 <= value <= 599:
        raise ValueError(f"{attribute.name} must be a 5xx status, got {value!r}")


@attrs.frozen
class Faults:
    """What goes wrong, and where.

    latency/jitter  seconds added to every answer: latency + uniform(-jitter, +jitter)
    dead            BMCs that accept TCP connections and then say nothing (no TLS)
    hanging         BMCs that serve the root and logins, then never answer other requests
    wrong_password  BMCs whose configured password differs from the fleet's
    flapping        BMCs whose power button is pressed every ``flap_interval`` seconds
    slow            BMCs that answer ``slow_delay`` seconds late
    ignore_soft_off BMCs whose "operating system" ignores GracefulShutdown
    server_errors   BMCs answering ``error_status`` (default 500) instead of serving: the
                    first ``error_burst`` requests after the fault is set (0: every one)
    sessions_full   BMCs whose session service answers 503, table full (RAC0218-like)
    """

    latency: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    jitter: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    dead: frozenset[int] = attrs.field(default=frozenset(), converter=_index_set)
    hanging: frozenset[int] = attrs.field(default=frozenset(), converter=_index_set)
    wrong_password: frozenset[int] = attrs.field(default=frozenset(), converter=_index_set)
    flapping: frozenset[int] = attrs.field(default=frozenset(), converter=_index_set)
    flap_interval: float = attrs.field(default=5.0, converter=float, validator=_positive)
    slow: frozenset[int] = attrs.field(default=frozenset(), converter=_index_set)
    slow_delay: float = attrs.field(default=2.0, converter=float, validator=_non_negative)
    ignore_soft_off: frozenset[int] = attrs.field(default=frozenset(), converter=_index_set)
    server_errors: frozenset[int] = attrs.field(default=frozenset(), converter=_index_set)
    error_burst: int = attrs.field(default=0, converter=int, validator=_count)
    error_status: int = attrs.field(default=500, converter=int, validator=_server_error)
    sessions_full: frozenset[int] = attrs.field(default=frozenset(), converter=_index_set)

    def delays_answers(self) -> bool:
        return self.latency > 0.0 or self.jitter > 0.0 or bool(self.slow)

    def changed(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` applied; unknown names raise ValueError.

        Index sets may be given as iterables of ints or as selector strings ("0,3,10-19").
        """
        known = attrs.fields_dict(Faults)
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(known))})")
            if name in INDEX_SET_FIELDS and isinstance(value, str):
                value = parse_selection(value)
            clean[name] = value
        return attrs.evolve(self, **clean)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (index sets as sorted lists)."""
        out: dict[str, Any] = {}
        for name in attrs.fields_dict(Faults):
            value = getattr(self, name)
            out[name] = sorted(value) if isinstance(value, frozenset) else value
        return out


def parse_selection(text: str) -> frozenset[int]:
    """'0,3,10-19' -> {0, 3, 10, ..., 19}; '' -> empty. Raises ValueError with the bad part."""
    result: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(
                f"bad BMC selection {part!r}: use indexes and ranges like 0,3,10-19"
            ) from None
        if low < 0 or high < low:
            raise ValueError(f"bad BMC range {part!r}")
        if high - low >= 1_000_000:
            raise ValueError(f"BMC range {part!r} is too large")
        result.update(range(low, high + 1))
    return frozenset(result)
