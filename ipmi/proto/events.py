"""What the sans-I/O :class:`ipmi.proto.session.ClientSession` tells its driver.

``receive()`` returns one of these events (or None for a datagram it dropped); ``State`` is
where the machine is. Like h11's events: the driver (``ipmi.client``) decides what to do
with each, and does the I/O.
"""

from __future__ import annotations

import enum

import attrs

from ipmi.proto.constants import Privilege


class State(enum.Enum):
    IDLE = "idle"
    AWAIT_AUTH_CAP = "await-auth-cap"
    AWAIT_OPEN = "await-open"
    AWAIT_RAKP2 = "await-rakp2"
    AWAIT_RAKP4 = "await-rakp4"
    AWAIT_PRIV = "await-priv"
    ESTABLISHED = "established"
    CLOSED = "closed"
    POISONED = "poisoned"


@attrs.frozen
class LoginStep:
    """Send ``datagram`` next (login is still in progress)."""

    datagram: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")


@attrs.frozen
class LoginLost:
    """The BMC no longer knows this half-made session (it timed the login out while a step
    was on its way): begin the login again, as after an unanswered step."""

    reason: str


@attrs.frozen
class LoginComplete:
    suite: int
    privilege: Privilege


@attrs.frozen
class Response:
    request_id: int
    netfn: int  # the response NetFn (request NetFn + 1)
    cmd: int
    completion_code: int
    data: bytes


Event = LoginStep | LoginComplete | LoginLost | Response
