"""The ipmi package's exception tree (see the ``ipmi`` package docstring).

Every message is one line naming the BMC where the caller knows it; none ever contains a
password or key material.
"""

from __future__ import annotations


class IpmiError(Exception):
    """Root of every error raised by the ipmi package."""


class NoResponseError(IpmiError):
    """The BMC did not answer after all retransmissions."""


class AuthenticationError(IpmiError):
    """Wrong password or key: RAKP2/RAKP4 check failed, or the BMC refused the user name."""


class NegotiationError(IpmiError):
    """No acceptable cipher suite or privilege level, or the BMC refused to open a session."""


class MalformedPacketError(IpmiError):
    """A datagram could not be decoded. The only exception the decoders raise."""


class IntegrityCheckError(MalformedPacketError):
    """An authenticated datagram whose integrity code does not verify (dropped, never parsed)."""


class CompletionCodeError(IpmiError):
    """The BMC answered a command with a non-zero completion code."""

    def __init__(self, code: int, message: str | None = None) -> None:
        self.code = code
        super().__init__(message or f"completion code 0x{code:02x}")


class ProtocolStateError(IpmiError):
    """The session machine was asked for a transition its state does not allow: a bug in
    the machine or its driver, never something a BMC can cause."""


class SessionLostError(IpmiError):
    """The session is gone: the BMC dropped it and re-login failed, or a protocol violation
    poisoned it. A new session must be established."""
