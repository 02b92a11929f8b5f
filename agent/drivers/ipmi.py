"""The IPMI driver: ``ipmi.open_bmc`` behind the BMC seam, and the IPMI rules for settings.

Every IPMI limit an operator can trip over (user name and password length, cipher suites,
privilege) is checked here, once: config, inventory import, the CLI and the one-shot
``powersync bmc`` call these functions. The store only checks shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Final

import ipmi
from agent.bmc.seam import (
    BmcAuthError,
    BmcBusy,
    BmcEndpoint,
    BmcError,
    BmcNoAnswer,
    BmcSession,
    SessionCounts,
)
from ipmi.transport import Connector

if TYPE_CHECKING:
    from agent.config.options import IpmiConfig
    from store import Node

NAME: Final = "ipmi"
PRIVILEGES: Final = ("user", "operator", "administrator")
CIPHER_SUITES: Final = (17, 3)  # preference order; suite 0 is never offered or accepted
MAX_USERNAME_BYTES: Final = 16  # IPMI v2.0 user name field
MAX_PASSWORD_BYTES: Final = 20  # IPMI v2.0 password (key) field
DEFAULT_PORT: Final = 623


# --- the settings' rules (ValueError says what is wrong, never echoing a password) --------


def check_username(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if len(value.encode()) > MAX_USERNAME_BYTES or "\0" in value:
        raise ValueError(f"must be at most {MAX_USERNAME_BYTES} bytes (the IPMI limit)")
    return value


def check_password(value: str) -> str:
    if not value or "\0" in value:
        raise ValueError("the BMC password must be non-empty, without NUL characters")
    if len(value.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"the BMC password is longer than {MAX_PASSWORD_BYTES} bytes (IPMI limit)")
    return value


def check_privilege(value: object) -> str:
    if not isinstance(value, str) or value.lower() not in PRIVILEGES:
        raise ValueError("must be one of " + ", ".join(repr(p) for p in PRIVILEGES))
    return value.lower()


def check_cipher_suites(value: object) -> tuple[int, ...]:
    """A non-empty preference list of suites 3 and/or 17."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("must be a non-empty list of cipher suite numbers, e.g. [17, 3]")
    suites: list[int] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            # ValueError like the others: callers turn every one into a one-line error.
            raise ValueError("must list cipher suite numbers (integers), e.g. [17, 3]")  # noqa: TRY004
        if item == 0:
            raise ValueError("must not contain cipher suite 0 (no authentication)")
        if item not in CIPHER_SUITES:
            raise ValueError(f"may contain only cipher suites 17 and 3 (not {item})")
        if item in suites:
            raise ValueError(f"lists cipher suite {item} twice")
        suites.append(item)
    return tuple(suites)


# --- the driver ---------------------------------------------------------------------------


def retry_policy(config: IpmiConfig) -> ipmi.RetryPolicy:
    """The ``[ipmi]`` section's retry settings as the client's policy."""
    return ipmi.RetryPolicy(
        first_timeout=config.retry_timeout,
        backoff=config.retry_backoff,
        max_timeout=max(config.retry_max_timeout, config.retry_timeout),
        retries=config.retries,
        adaptive=config.adaptive_retry,
        min_timeout=config.retry_min_timeout,
    )


def translate(exc: ipmi.IpmiError | OSError) -> BmcError:
    """The seam's error for one of the IPMI client's (the text keeps the client's type)."""
    text = f"{type(exc).__name__}: {exc}"
    kind = type(exc).__name__
    if isinstance(exc, ipmi.NoResponseError):
        return BmcNoAnswer(text, kind=kind)
    if isinstance(exc, ipmi.AuthenticationError):
        return BmcAuthError(text, kind=kind)
    if isinstance(exc, ipmi.NegotiationError) and "insufficient resources" in str(exc):
        return BmcBusy(text, kind=kind)
    return BmcError(text, kind=kind)


def health_of(status: ipmi.ChassisStatus) -> str:
    """Get Chassis Status's fault bits in words: "ok", or the active faults."""
    faults = [
        word
        for word, active in (
            ("power overload", status.power_overload),
            ("interlock", status.interlock),
            ("main power fault", status.power_fault),
            ("power control fault", status.power_control_fault),
        )
        if active
    ]
    return ", ".join(faults) if faults else "ok"


class IpmiSession:
    """An ``ipmi.BmcSession`` that raises only the seam's errors; each power read also
    records the chassis's health (the same Get Chassis Status answer)."""

    __slots__ = ("_session", "health")

    def __init__(self, session: ipmi.BmcSession) -> None:
        self._session = session
        self.health: str | None = None

    async def get_power(self) -> bool:
        try:
            status = await self._session.chassis_status()
        except (ipmi.IpmiError, OSError) as exc:
            raise translate(exc) from exc
        self.health = health_of(status)
        return status.power_on

    async def set_power(self, action: str) -> None:
        try:
            await self._session.set_power(action)
        except (ipmi.IpmiError, OSError) as exc:
            raise translate(exc) from exc

    async def keepalive(self) -> None:
        try:
            await self._session.keepalive()
        except (ipmi.IpmiError, OSError) as exc:
            raise translate(exc) from exc

    def statistics(self) -> SessionCounts:
        return self._session.statistics()


class IpmiDriver:
    """IPMI v2.0 (RMCP+) through the agent's native client, with ``[ipmi]``'s settings."""

    name = NAME

    def __init__(
        self,
        config: IpmiConfig,
        *,
        connect: Connector | None = None,
        min_datagram_interval: float = 0.0,
    ) -> None:
        self.config = config
        # [conductor] min_command_interval spaces every datagram, the login's included.
        self._min_interval = min_datagram_interval
        self._retry = retry_policy(config)
        self._connect = connect  # None: real UDP sockets; tests pass ipmi.testing's network

    @property
    def request_timeout(self) -> float:
        return self.config.retry_timeout

    @property
    def retry_budget(self) -> float:
        return self._retry.budget()

    @property
    def keepalive_interval(self) -> float:
        return self.config.keepalive_interval

    def endpoint(self, node: Node) -> BmcEndpoint:
        config = self.config
        return BmcEndpoint.for_node(
            node,
            NAME,
            session_mode=node.session_mode or config.session_mode,
            options=(
                ("cipher_suites", tuple(node.cipher_suites) or config.cipher_suites),
                ("privilege", node.privilege or config.privilege),
            ),
        )

    def open_session(self, endpoint: BmcEndpoint) -> AbstractAsyncContextManager[BmcSession]:
        return self._open(endpoint)

    @asynccontextmanager
    async def _open(self, endpoint: BmcEndpoint) -> AsyncIterator[BmcSession]:
        suites = endpoint.option("cipher_suites", CIPHER_SUITES)
        privilege = endpoint.option("privilege", "administrator")
        assert isinstance(suites, tuple) and isinstance(privilege, str)
        password = endpoint.secret()  # a referenced file is read at each login
        try:
            check_password(password)
        except ValueError as exc:
            raise BmcError(f"{endpoint.label}: {exc}", kind="SecretError") from None
        context = ipmi.open_bmc(
            endpoint.host,
            endpoint.port,
            username=endpoint.username,
            password=password,
            privilege=privilege,
            cipher_suites=suites,
            retry=self._retry,
            connect=self._connect,
            min_datagram_interval=self._min_interval,
        )
        try:
            session = await context.__aenter__()
        except (ipmi.IpmiError, OSError) as exc:
            raise translate(exc) from exc
        try:
            yield IpmiSession(session)
        finally:
            try:  # Close Session: bounded and shielded by the client
                await context.__aexit__(None, None, None)
            except (ipmi.IpmiError, OSError) as exc:
                raise translate(exc) from exc
