"""The faults every simulated fleet has, whatever protocol its BMCs speak.

A faults value is immutable; a fleet swaps the whole value when faults change (at start,
from Python with ``set_faults`` or through the control socket), so whatever serves a BMC
reads one consistent snapshot without locks. Each protocol subclasses :class:`SimFaults`
with the faults only it has (IPMI's datagram loss, Redfish's 5xx answers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import attrs

from simcore.selection import index_set, parse_selection

SHARED_INDEX_SET_FIELDS = (
    "dead",
    "hanging",
    "wrong_password",
    "flapping",
    "slow",
    "ignore_soft_off",
)
SHARED_FLOAT_FIELDS = ("latency", "jitter", "flap_interval", "slow_delay")
_INDEX_SET: dict[str, bool] = {"index_set": True}  # field metadata: accepts "0,3-5" too


def index_set_field() -> Any:
    """An index-set fault: BMC indexes, empty by default."""
    return attrs.field(default=frozenset(), converter=index_set, metadata=_INDEX_SET)


def non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0.0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class SimFaults:
    """What goes wrong, and where (what "dead" or "hanging" means is the protocol's).

    latency/jitter  seconds added to every answer: latency + uniform(-jitter, +jitter)
    dead            BMCs that never answer anything
    hanging         BMCs that let clients log in, then ignore everything else
    wrong_password  BMCs whose configured password differs from the fleet's
    flapping        BMCs whose power button is pressed every ``flap_interval`` seconds
    slow            BMCs that answer ``slow_delay`` seconds late
    ignore_soft_off BMCs whose "operating system" ignores a soft power off
    """

    latency: float = attrs.field(default=0.0, converter=float, validator=non_negative)
    jitter: float = attrs.field(default=0.0, converter=float, validator=non_negative)
    dead: frozenset[int] = index_set_field()
    hanging: frozenset[int] = index_set_field()
    wrong_password: frozenset[int] = index_set_field()
    flapping: frozenset[int] = index_set_field()
    flap_interval: float = attrs.field(default=5.0, converter=float, validator=_positive)
    slow: frozenset[int] = index_set_field()
    slow_delay: float = attrs.field(default=2.0, converter=float, validator=non_negative)
    ignore_soft_off: frozenset[int] = index_set_field()

    def delays_answers(self) -> bool:
        return self.latency > 0.0 or self.jitter > 0.0 or bool(self.slow)

    def changed(self, changes: Mapping[str, Any]) -> Self:
        """A copy with ``changes`` applied; unknown names raise ValueError.

        Index sets may be given as iterables of ints or as selector strings ("0,3,10-19").
        """
        known = attrs.fields_dict(type(self))
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(known))})")
            if known[name].metadata.get("index_set") and isinstance(value, str):
                value = parse_selection(value)
            clean[name] = value
        return attrs.evolve(self, **clean)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict (index sets as sorted lists)."""
        out: dict[str, Any] = {}
        for name in attrs.fields_dict(type(self)):
            value = getattr(self, name)
            out[name] = sorted(value) if isinstance(value, frozenset) else value
        return out
