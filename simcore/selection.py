"""BMC selections: the 0-based indexes that fault options and control requests name.

BMC ``i`` of a fleet listens on ``port_base + i`` and is named ``sim-{i:04d}``; a
selection is a set of such indexes, written ``"0,3,10-19"`` on command lines and in
control requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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


def index_set(value: Iterable[int]) -> frozenset[int]:
    """Indexes as a frozenset (the converter of every index-set fault)."""
    result = frozenset(int(item) for item in value)
    if any(item < 0 for item in result):
        raise ValueError("BMC indexes are 0-based and never negative")
    return result


def requested_indexes(value: Any, first: int, count: int) -> list[int]:
    """A control request's ``"bmcs"`` (a selection string or a list of ints), sorted and
    checked against a fleet of ``count`` BMCs numbered from ``first``."""
    if isinstance(value, str):
        indexes = parse_selection(value)
    elif isinstance(value, list) and all(isinstance(item, int) for item in value):
        indexes = frozenset(value)
    else:
        raise ValueError('"bmcs" must be a selection string like "0,3-5" or a list of indexes')
    last = first + count - 1
    bad = sorted(index for index in indexes if not first <= index <= last)
    if bad:
        raise ValueError(f"no BMC with index {bad[0]} (the fleet has {count}: {first}..{last})")
    return sorted(indexes)
