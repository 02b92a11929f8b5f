"""The Redfish driver: ``redfish.open_redfish`` behind the BMC seam, with Ironic's names.

A node's ``driver_info`` carries Ironic's ``redfish_address`` (a URL), ``redfish_system_id``,
``redfish_verify_ca`` (true, false or a CA file) and ``redfish_auth_type``; its
``bmc_address``/``bmc_port`` are the URL's host and port, ``bmc_username``/``bmc_password``
the credentials. TLS is verified unless a node says ``redfish_verify_ca = false``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Final, cast

import attrs

import redfish
from agent.bmc.seam import (
    BmcAuthError,
    BmcBusy,
    BmcEndpoint,
    BmcError,
    BmcNoAnswer,
    BmcSession,
    SessionCounts,
)
from redfish.proto import parse_address

if TYPE_CHECKING:
    from redfish.client import AuthMode
    from store import Node

NAME: Final = "redfish"
DEFAULT_PORT: Final = 443
AUTH_TYPES: Final = ("auto", "session", "basic")
# A healthy BMC answers a GET in milliseconds; a silent one is retried by the client.
REQUEST_TIMEOUT: Final = 1.0
KEEPALIVE_INTERVAL: Final = 60.0  # BMCs expire idle Redfish sessions after minutes


# --- the settings' rules (ValueError says what is wrong) ----------------------------------


def check_address(value: object) -> tuple[str, int]:
    """``redfish_address`` -> (host, port); an https:// URL (http:// only if written)."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a URL such as https://10.0.0.5")
    _, peer = parse_address(value)
    host, _, port = peer.rpartition(":")
    return host.strip("[]"), int(port)


def check_verify_ca(value: object) -> bool | str:
    """``redfish_verify_ca``: true, false, or the path of a CA file that exists."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        if not os.path.isfile(value):
            raise ValueError(f"CA file {value} does not exist (or use true / false)")
        return os.path.abspath(value)
    raise ValueError("must be true, false or the path of a CA file")


def check_auth_type(value: object) -> str:
    if not isinstance(value, str) or value.lower() not in AUTH_TYPES:
        raise ValueError("must be one of " + ", ".join(repr(a) for a in AUTH_TYPES))
    return value.lower()


# --- the driver ---------------------------------------------------------------------------


def translate(exc: redfish.RedfishError) -> BmcError:
    """The seam's error for one of the Redfish client's (the text keeps the client's type)."""
    text = f"{type(exc).__name__}: {exc}"
    kind = type(exc).__name__
    if isinstance(exc, redfish.NoResponseError):
        return BmcNoAnswer(text, kind=kind)
    if isinstance(exc, redfish.AuthenticationError):
        return BmcAuthError(text, kind=kind)
    if isinstance(exc, redfish.SessionLimitError):
        return BmcBusy(text, kind=kind)
    return BmcError(text, kind=kind)


@attrs.frozen
class _Counts:
    """The client's statistics in the pool's words (a Redfish retry is a retransmission),
    and its own (``powersync bmc --json`` prints them)."""

    logins: int
    retransmits: int
    drops: int = 0
    requests: int = 0
    retries: int = 0
    tls_handshakes: int = 0


class RedfishBmcSession:
    """A ``redfish.RedfishSession`` that raises only the seam's errors."""

    __slots__ = ("_session",)

    def __init__(self, session: redfish.RedfishSession) -> None:
        self._session = session

    async def get_power(self) -> bool:
        try:
            return await self._session.get_power()
        except redfish.RedfishError as exc:
            raise translate(exc) from exc

    async def set_power(self, action: str) -> None:
        try:
            await self._session.set_power(action)
        except redfish.RedfishError as exc:
            raise translate(exc) from exc

    async def keepalive(self) -> None:
        try:
            await self._session.keepalive()
        except redfish.RedfishError as exc:
            raise translate(exc) from exc

    def statistics(self) -> SessionCounts:
        stats = self._session.statistics()
        return _Counts(
            logins=stats.logins,
            retransmits=stats.retries,
            requests=stats.requests,
            retries=stats.retries,
            tls_handshakes=stats.tls_handshakes,
        )

    @property
    def health(self) -> str | None:
        return self._session.last_health


class RedfishDriver:
    """Redfish through the agent's own client on httpx."""

    name = NAME
    request_timeout = REQUEST_TIMEOUT
    keepalive_interval = KEEPALIVE_INTERVAL

    def __init__(self, *, session_mode: str = "persistent") -> None:
        self._session_mode = session_mode
        self._retry = redfish.RetryPolicy()

    @property
    def retry_budget(self) -> float:
        """The client's waits between tries (the requests' own time comes on top)."""
        return sum(self._retry.backoff(retry) for retry in range(self._retry.attempts - 1))

    def endpoint(self, node: Node) -> BmcEndpoint:
        info: Mapping[str, object] = node.driver_info
        address = info.get("redfish_address") or f"https://{node.bmc_address}:{node.bmc_port}"
        options: list[tuple[str, object]] = [("address", address)]
        for key, option in (
            ("redfish_system_id", "system_id"),
            ("redfish_verify_ca", "verify"),
            ("redfish_auth_type", "auth"),
        ):
            if info.get(key) is not None:
                options.append((option, info[key]))
        return BmcEndpoint.for_node(
            node, NAME, session_mode=node.session_mode or self._session_mode, options=tuple(options)
        )

    def open_session(self, endpoint: BmcEndpoint) -> AbstractAsyncContextManager[BmcSession]:
        return self._open(endpoint)

    @asynccontextmanager
    async def _open(self, endpoint: BmcEndpoint) -> AsyncIterator[BmcSession]:
        address = str(endpoint.option("address"))
        system_id = endpoint.option("system_id")
        password = endpoint.secret()  # a referenced file is read at each login
        try:
            verify = check_verify_ca(endpoint.option("verify", True))
            auth = check_auth_type(endpoint.option("auth", "auto"))
            context = redfish.open_redfish(
                address,
                username=endpoint.username,
                password=password,
                system_id=None if system_id is None else str(system_id),
                verify=verify,
                retry=self._retry,
                auth=cast("AuthMode", auth),
            )
        except ValueError as exc:  # settings the inventory let through: say which
            raise BmcError(f"{endpoint.label}: {exc}", kind="ConfigError") from exc
        try:
            session = await context.__aenter__()
        except redfish.RedfishError as exc:
            raise translate(exc) from exc
        try:
            yield RedfishBmcSession(session)
        finally:
            try:  # logout: bounded and shielded by the client
                await context.__aexit__(None, None, None)
            except redfish.RedfishError as exc:
                raise translate(exc) from exc
