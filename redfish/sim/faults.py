"""Fault injection settings for a simulated Redfish fleet: the shared faults
(:class:`simcore.SimFaults`) plus server errors and a full session table.

BMCs are selected by their 0-based index (BMC ``i`` listens on ``port_base + i`` and is
named ``sim-{i:04d}``).
"""

from __future__ import annotations

import attrs

from simcore.faults import (
    SHARED_FLOAT_FIELDS,
    SHARED_INDEX_SET_FIELDS,
    SimFaults,
    index_set_field,
)

INDEX_SET_FIELDS = (*SHARED_INDEX_SET_FIELDS, "server_errors", "sessions_full")
FLOAT_FIELDS = SHARED_FLOAT_FIELDS
INT_FIELDS = ("error_burst", "error_status")


def _count(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _server_error(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 500 <= value <= 599:
        raise ValueError(f"{attribute.name} must be a 5xx status, got {value!r}")


@attrs.frozen
class Faults(SimFaults):
    """What goes wrong, and where: :class:`simcore.SimFaults`, and

    server_errors   BMCs answering ``error_status`` (default 500) instead of serving: the
                    first ``error_burst`` requests after the fault is set (0: every one)
    sessions_full   BMCs whose session service answers 503, table full (RAC0218-like)

    A dead BMC accepts TCP connections and then says nothing (no TLS); a hanging one
    serves the root and logins, then never answers other requests. ``ignore_soft_off``
    ignores GracefulShutdown.
    """

    server_errors: frozenset[int] = index_set_field()
    error_burst: int = attrs.field(default=0, converter=int, validator=_count)
    error_status: int = attrs.field(default=500, converter=int, validator=_server_error)
    sessions_full: frozenset[int] = index_set_field()
