"""powersync ipmi: a native IPMI v2.0 (RMCP+) client on trio, and a BMC fleet simulator.

Exceptions (``ipmi.errors``); every one is a one-line message naming the BMC where known,
and none ever contains a password or key:

IpmiError                   root of everything this package raises
├── NoResponseError         no answer after all retransmissions
├── AuthenticationError     wrong password / K_G: RAKP2 code or RAKP4 check value mismatch,
│                           or the BMC refused the user name
├── NegotiationError        no acceptable cipher suite (only 3 and 17 are ever used), privilege
│                           refused, or the BMC refused to open a session
├── MalformedPacketError    a datagram could not be decoded (the only error decoders raise)
│   └── IntegrityCheckError an authenticated datagram failed its integrity check
├── CompletionCodeError     a command answered with a non-zero completion code (``.code``)
├── ProtocolStateError      the session machine refused an illegal transition (a bug, never
│                           caused by a BMC)
└── SessionLostError        the session is gone (dropped by the BMC and one re-login failed,
                            or poisoned by a protocol violation); a new one must be opened
"""

from ipmi.client import (
    BmcSession,
    ChassisStatus,
    RetryPolicy,
    SessionStatistics,
    open_bmc,
)
from ipmi.errors import (
    AuthenticationError,
    CompletionCodeError,
    IntegrityCheckError,
    IpmiError,
    MalformedPacketError,
    NegotiationError,
    NoResponseError,
    ProtocolStateError,
    SessionLostError,
)
from ipmi.transport import DatagramEndpoint, connect_udp

__all__ = [
    "AuthenticationError",
    "BmcSession",
    "ChassisStatus",
    "CompletionCodeError",
    "DatagramEndpoint",
    "IntegrityCheckError",
    "IpmiError",
    "MalformedPacketError",
    "NegotiationError",
    "NoResponseError",
    "ProtocolStateError",
    "RetryPolicy",
    "SessionLostError",
    "SessionStatistics",
    "connect_udp",
    "open_bmc",
]
