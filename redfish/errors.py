"""The redfish package's exception tree (see the ``redfish`` package docstring).

Every message is one line naming the BMC (host:port) where the raiser knows it; none ever
contains a password, a session token or an Authorization header.
"""

from __future__ import annotations


class RedfishError(Exception):
    """Root of every error raised by the redfish package."""


class NoResponseError(RedfishError):
    """No answer: connection refused or reset, or no reply before the backstop timeout,
    after the bounded retries."""


class AuthenticationError(RedfishError):
    """The BMC refused the credentials (401/403 on login, or on basic auth). Never retried."""


class TLSError(RedfishError):
    """The TLS handshake failed: certificate not trusted, wrong name, or protocol mismatch."""


class SessionLimitError(RedfishError):
    """The session service answered 503: its session table is full (often leaked sessions)."""


class UnsupportedActionError(RedfishError):
    """The system does not allow the ResetType a power action needs."""


class BadReplyError(RedfishError):
    """A reply that is not what Redfish promises: not JSON, not the resource asked for, or a
    field with a value that is not a state (``PowerState: "Unknown"``)."""


class RequestRefusedError(RedfishError):
    """The BMC answered with an error status we do not handle otherwise (a 400/409 to a reset
    whose target state a fresh read does not show, a 404 for the system, ...), or a Task
    ended in failure. ``status`` is the HTTP status (None for a failed Task)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
