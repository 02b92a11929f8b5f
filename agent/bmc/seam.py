"""The protocol-neutral BMC seam: what the pool, lanes, sync and power actions speak to.

A *driver* (``agent.drivers``: IPMI today) turns a node's record into a :class:`BmcEndpoint`,
opens sessions to it and translates its own protocol's errors into :class:`BmcError`, so
nothing above this module knows a protocol::

    BmcError                    root: whatever went wrong talking to one BMC
    ├── BmcNoAnswer             silence: no answer after the driver's retransmissions
    ├── BmcAuthError            the BMC refused the credentials (never retried fast)
    ├── BmcBusy                 the BMC is out of sessions (its table is full)
    └── BmcUnavailable          the pool is closed or the session was given up

The agent catches ``BmcError`` around BMC work, never ``Exception``: a bug anywhere else
(in the sync rules, say) is a bug, not a BMC failure counted toward maintenance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

import attrs

from agent.config.secrets import read_secret_env, read_secret_file
from agent.errors import AgentError, SecretError
from store import POWER_OFF, POWER_ON

if TYPE_CHECKING:
    from store import Node

# The command a session's ``set_power`` takes for a record's power state or a CLI action.
SESSION_ACTIONS = {
    POWER_ON: "on",
    POWER_OFF: "off",
    "on": "on",
    "off": "off",
    "cycle": "cycle",
    "reset": "reset",
    "soft": "soft",
    "soft-off": "soft",
}


def session_action(action: str) -> str:
    try:
        return SESSION_ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown power action {action!r}") from None


def power_word(on: bool) -> str:
    """A session's answer in Ironic's words."""
    return POWER_ON if on else POWER_OFF


class BmcError(AgentError):
    """One BMC could not do what was asked; ``kind`` names the driver's own error type."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind or type(self).__name__


class BmcNoAnswer(BmcError):
    """No answer from the BMC after every retransmission the driver allows."""


class BmcAuthError(BmcError):
    """The BMC refused the user name or password."""


class BmcBusy(BmcError):
    """The BMC has no free session slot."""


class BmcUnavailable(BmcError):
    """The pool is closed or the request was abandoned."""


def describe_error(exc: BaseException) -> str:
    """The error text recorded on a node: the driver's own message, never a password."""
    text = str(exc).strip()
    if isinstance(exc, BmcError):
        return text or exc.kind
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class SessionCounts(Protocol):
    """What a session counts since it logged in (every field may be absent: 0)."""

    @property
    def logins(self) -> int: ...
    @property
    def retransmits(self) -> int: ...
    @property
    def drops(self) -> int: ...


class BmcSession(Protocol):
    """One logged-in session to one BMC; every method raises only :class:`BmcError`.

    A session that reads the hardware's health with the power state also has a ``health``
    attribute: "ok" or the active faults ("main power fault, interlock"), as of the latest
    ``get_power()``; the pool reads it when present.
    """

    async def get_power(self) -> bool: ...
    async def set_power(self, action: str) -> None: ...
    async def keepalive(self) -> None: ...
    def statistics(self) -> SessionCounts: ...


@attrs.frozen
class BmcEndpoint:
    """Where and how to log in to one node's BMC. ``options`` are the driver's own settings."""

    driver: str
    host: str
    port: int
    username: str
    password: str = attrs.field(repr=False)  # "" when the node keeps a reference instead
    session_mode: str = "persistent"
    options: tuple[tuple[str, object], ...] = ()
    password_file: str | None = None  # read at each login (and so again after a reload)
    password_env: str | None = None

    def secret(self) -> str:
        """The password: the stored one, or read now from the node's file or variable.

        A missing, empty or loose (group/world-readable) file fails this node only, with a
        reason that names the file, never the secret.
        """
        try:
            if self.password_file is not None:
                return read_secret_file(self.password_file, what="BMC password")
            if self.password_env is not None:
                return read_secret_env(self.password_env, what="BMC password")
        except SecretError as exc:
            raise BmcError(str(exc), kind="SecretError") from None
        if not self.password:
            raise BmcError("no BMC password: none stored and no password file", kind="SecretError")
        return self.password

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def for_node(
        cls,
        node: Node,
        driver: str,
        *,
        session_mode: str,
        options: tuple[tuple[str, object], ...] = (),
    ) -> BmcEndpoint:
        """The endpoint fields every driver takes from the node (address, user, secret)."""
        info = node.driver_info
        password_file = info.get(f"{driver}_password_file")
        password_env = info.get(f"{driver}_password_env")
        return cls(
            driver=driver,
            host=node.bmc_address,
            port=node.bmc_port,
            username=node.bmc_username,
            password=node.bmc_password,
            password_file=None if password_file is None else str(password_file),
            password_env=None if password_env is None else str(password_env),
            session_mode=session_mode,
            options=options,
        )

    def option(self, name: str, default: object = None) -> object:
        for key, value in self.options:
            if key == name:
                return value
        return default


BmcOpener = Callable[[BmcEndpoint], AbstractAsyncContextManager[BmcSession]]
"""Logs in on enter, logs out on exit.

The pool enters the context in one task (the first caller's) and leaves it in another (a
closing task of its own), so the context must not hold a cancel scope or a nursery across
its ``yield``. An ``asynccontextmanager`` that only awaits before and after its ``yield`` is
fine. If entering fails or is cancelled, the context must clean up after itself.
"""


class BmcDriver(Protocol):
    """One protocol's way to a BMC."""

    @property
    def name(self) -> str: ...

    @property
    def request_timeout(self) -> float:
        """How long one request may go unanswered before the driver tries again."""
        ...

    @property
    def retry_budget(self) -> float:
        """How long the driver waits on one silent request before giving up."""
        ...

    @property
    def keepalive_interval(self) -> float:
        """How long a long-lived session may sit idle before it needs a keepalive."""
        ...

    def endpoint(self, node: Node) -> BmcEndpoint: ...
    def open_session(self, endpoint: BmcEndpoint) -> AbstractAsyncContextManager[BmcSession]: ...


class Drivers:
    """The drivers a site uses, by name: endpoints for nodes, and the pool's opener."""

    def __init__(self, drivers: Mapping[str, BmcDriver]) -> None:
        self._drivers = dict(drivers)
        # node uuid -> (what the endpoint is made of, the endpoint): it changes only when the
        # node's inventory does, and building one per node per cycle is measurable.
        self._endpoints: dict[str, tuple[tuple[object, ...], BmcEndpoint]] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._drivers)

    def replace(self, other: Drivers) -> None:
        """Take ``other``'s drivers (a reload): openers bound to this set see them at once."""
        self._drivers = dict(other._drivers)
        self._endpoints.clear()

    def retain(self, uuids: Iterable[str]) -> None:
        """Forget the endpoints of nodes not in ``uuids`` (deleted, or now another agent's)."""
        keep = set(uuids)
        self._endpoints = {u: e for u, e in self._endpoints.items() if u in keep}

    def driver(self, name: str) -> BmcDriver:
        try:
            return self._drivers[name]
        except KeyError:
            known = ", ".join(self._drivers) or "none"
            raise BmcError(f"unknown driver {name!r} (this agent has: {known})") from None

    def endpoint(self, node: Node) -> BmcEndpoint:
        made_of = _endpoint_fields(node)
        known = self._endpoints.get(node.uuid)
        if known is not None and known[0] == made_of:
            return known[1]
        endpoint = self.driver(node.driver).endpoint(node)
        self._endpoints[node.uuid] = (made_of, endpoint)
        return endpoint

    def open(self, endpoint: BmcEndpoint) -> AbstractAsyncContextManager[BmcSession]:
        """A :data:`BmcOpener` over every driver."""
        return self.driver(endpoint.driver).open_session(endpoint)

    def request_timeout(self, names: Iterable[str] | None = None) -> float:
        """The longest one-request timeout of the drivers ``names`` (default: all)."""
        chosen = self._drivers if names is None else {n: self.driver(n) for n in names}
        return max((d.request_timeout for d in chosen.values()), default=1.0)

    @property
    def retry_budget(self) -> float:
        return max((d.retry_budget for d in self._drivers.values()), default=0.0)

    @property
    def keepalive_interval(self) -> float:
        return min((d.keepalive_interval for d in self._drivers.values()), default=25.0)


def _endpoint_fields(node: Node) -> tuple[object, ...]:
    """The node's fields a driver's endpoint is built from (not its state, which every cycle
    writes)."""
    return (
        node.driver,
        node.bmc_address,
        node.bmc_port,
        node.bmc_username,
        node.bmc_password,
        node.cipher_suites,
        node.privilege,
        node.session_mode,
        node.driver_info,
    )
