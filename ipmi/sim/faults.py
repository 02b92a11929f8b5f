"""Fault injection settings for a simulated IPMI fleet: the shared faults
(:class:`simcore.SimFaults`) plus datagram loss in either direction.

BMCs are selected by their 0-based index in ``Fleet.bmcs`` (BMC ``i`` listens on
``port_base + i`` and is named ``sim-{i:04d}``).
"""

from __future__ import annotations

import attrs

from simcore.faults import SHARED_FLOAT_FIELDS, SHARED_INDEX_SET_FIELDS, SimFaults

INDEX_SET_FIELDS = SHARED_INDEX_SET_FIELDS
FLOAT_FIELDS = ("loss", "answer_loss", *SHARED_FLOAT_FIELDS)


def _probability(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


@attrs.frozen
class Faults(SimFaults):
    """What goes wrong, and where: :class:`simcore.SimFaults`, and

    loss            probability that a datagram sent to a BMC is dropped before it arrives
    answer_loss     probability that a BMC's answer is dropped on its way back

    A dead BMC never answers anything (not even the capabilities probe); a hanging one
    completes logins, then ignores every in-session request.
    """

    loss: float = attrs.field(default=0.0, converter=float, validator=_probability)
    answer_loss: float = attrs.field(default=0.0, converter=float, validator=_probability)
