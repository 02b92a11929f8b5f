"""powersync redfish: a Redfish client on trio (HTTP/1.1 by h11), and a Redfish fleet simulator.

    async with open_redfish("https://10.0.0.5", username="admin", password=pw,
                            verify="/etc/powersync/bmc-ca.pem") as bmc:
        on = await bmc.get_power()          # one GET of the ComputerSystem
        await bmc.set_power("off")          # on, off, cycle, reset, soft
        bmc.last_health, bmc.statistics()

The reply parsers are the sans-I/O ``redfish.proto``; the simulator is ``redfish.sim``.

Exceptions (``redfish.errors``); every one is a one-line message naming the BMC (host:port)
where known, and none ever contains a password or a session token:

RedfishError                root of everything this package raises
├── NoResponseError         connection refused, reset or silent, after the bounded retries
├── AuthenticationError     the BMC refused the user name or password (never retried)
├── TLSError                the certificate is not trusted (the message says how to fix it)
├── SessionLimitError       the session service's table is full (503)
├── UnsupportedActionError  the system allows no ResetType that does the power action
├── BadReplyError           a reply that is not JSON, not the resource asked for, or has no
│                           usable value (``PowerState: "Unknown"``)
└── RequestRefusedError     any other error answer (``.status``), a reset refused and not
                            in its target state, a Task that failed
"""

import importlib
from typing import TYPE_CHECKING, Any

from redfish.errors import (
    AuthenticationError,
    BadReplyError,
    NoResponseError,
    RedfishError,
    RequestRefusedError,
    SessionLimitError,
    TLSError,
    UnsupportedActionError,
)
from redfish.retry import RetryPolicy
from redfish.stats import SessionStatistics

if TYPE_CHECKING:
    from redfish.client import RedfishSession, open_redfish
    from redfish.tls import tls_context

# The client and TLS (h11, ssl) are imported on first use: an agent whose fleet is all IPMI
# carries none of it, and a smaller heap makes each garbage collection cheaper.
_LAZY = {"RedfishSession": "redfish.client", "open_redfish": "redfish.client",
         "tls_context": "redfish.tls"}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'redfish' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AuthenticationError",
    "BadReplyError",
    "NoResponseError",
    "RedfishError",
    "RedfishSession",
    "RequestRefusedError",
    "RetryPolicy",
    "SessionLimitError",
    "SessionStatistics",
    "TLSError",
    "UnsupportedActionError",
    "open_redfish",
    "tls_context",
]
