"""The trio Redfish client: ``open_redfish`` and :class:`RedfishSession`.

What the replies mean lives in the sans-I/O ``redfish.proto``; this module gives it HTTP
(httpx on trio) and patience:

- one HTTP/1.1 keep-alive connection per BMC (``redfish.http11``: h11 over trio), and never
  more than one request in flight on it; ``Accept-Encoding: identity`` (as sushy sends);
- TLS verified by default, with one shared ``ssl.SSLContext`` per trust setting
  (``redfish.tls``);
- overall deadlines are the caller's cancel scopes; httpx's own timeout is only a generous
  backstop (:data:`BACKSTOP_TIMEOUT`);
- bounded retries with backoff for 5xx answers and connection failures, each one a WARNING
  naming host:port and the attempt, and never a sleep past the caller's deadline; a reset
  that does not end in the same state when run twice is resent only if it never left;
- a Redfish session (X-Auth-Token) from ``SessionService/Sessions``, deleted on close
  (shielded, bounded), or basic auth where the service has no sessions; on a 401 with a
  session, one new login; a refused password is never retried.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, Literal

import httpx
import trio

from redfish import proto
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
from redfish.http11 import Reply, connect_lazily
from redfish.proto import parse_address
from redfish.retry import RetryPolicy
from redfish.stats import Counters, SessionStatistics
from redfish.tls import VerifySetting, describe_failure, failure_message, tls_context

__all__ = ["RedfishSession", "RetryPolicy", "SessionStatistics", "open_redfish"]

logger = logging.getLogger(__name__)

AuthMode = Literal["auto", "session", "basic"]
# A backstop only: a caller without a deadline must not wait forever on a hung BMC.
BACKSTOP_TIMEOUT: Final = 60.0
# Logging out is a courtesy to the BMC's small session table: worth a short wait on the
# way out (a new connection may need a TLS handshake), never a long one.
CLOSE_GRACE: Final = 2.0
# A login answered after the caller's deadline still creates a session on the BMC; we
# wait this much longer for its token so that we can delete it instead of leaking it.
LOGIN_GRACE: Final = 2.0
POLL_INTERVAL: Final = 0.5  # task monitors and ForceOff-then-On
MAX_POLL: Final = 120.0  # a task or a power-off that takes longer is an error
# ResetTypes that end in the same state however often they run: safe to resend.
REPEATABLE_RESETS: Final = frozenset({"On", "ForceOn", "ForceOff"})
_BASE_HEADERS: Final = {
    "Accept": "application/json",
    "Accept-Encoding": "identity",
    "OData-Version": "4.0",
}
_JSON: Final = {"Content-Type": "application/json"}


class RedfishSession:
    """An authenticated conversation with one Redfish service. Get one from
    :func:`open_redfish`.

    ``system`` is the ComputerSystem's path; ``last_health`` the health of the latest read
    (``redfish.proto.parse_health``); ``auth`` is "session" or "basic" once open.
    """

    def __init__(
        self,
        base_url: str,
        peer: str,
        *,
        username: str,
        password: str,
        system_id: str | None,
        verify: VerifySetting,
        retry: RetryPolicy,
        auth: AuthMode,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.base_url = base_url
        self.peer = peer
        self.auth: str = auth
        self.system: str | None = None
        self.last_health: str | None = None
        self.last_power_state: str | None = None
        self._username = username
        self._password = password
        self._system_id = system_id
        self._verify = verify
        self._retry = retry
        self._lock = trio.Lock()
        self._counters = Counters()
        self._token: str | None = None
        self._session_url: str | None = None
        self._sessions_path: str | None = None
        self._basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self._reset: proto.ResetAction | None = None
        self._allowed: frozenset[str] | None = None
        self._closed = False
        self._connection = connect_lazily(
            base_url,
            tls_context(verify),
            _BASE_HEADERS,
            BACKSTOP_TIMEOUT,
            self._counters,
            transport,
        )

    def __repr__(self) -> str:
        return f"RedfishSession({self.peer}, system={self.system!r}, auth={self.auth!r})"

    # ---- public operations -------------------------------------------------------------

    async def get_power(self) -> bool:
        """True when the system's power is on (or powering on). One GET of the system."""
        async with self._lock:
            return (await self._read_system()).power_on

    async def set_power(self, action: str) -> None:
        """``"on"``, ``"off"``, ``"cycle"``, ``"reset"`` or ``"soft"`` (graceful shutdown).

        Returns once the service accepted the reset (and its Task, if it answered with
        one, completed). UnsupportedActionError when the system allows no ResetType that
        does it; ValueError for an unknown action.
        """
        if action not in proto.POWER_ACTIONS:
            proto.reset_plan(action, None)  # raises the ValueError naming the actions
        async with self._lock:
            if self._reset is None:
                await self._read_system()
            reset = self._reset
            if reset is None:
                raise UnsupportedActionError(f"{self.peer}: {self.system} has no Reset action")
            allowed = reset.allowed if reset.allowed is not None else await self._action_info()
            try:
                plan = proto.reset_plan(action, allowed)
            except UnsupportedActionError as exc:
                raise UnsupportedActionError(f"{self.peer}: {exc}") from None
            for step, reset_type in enumerate(plan):
                if step:
                    await self._wait_for_power(on=False)
                await self._post_reset(reset.target, reset_type)

    async def keepalive(self) -> None:
        """One cheap authenticated GET (the session resource, else the system): keeps the
        session from idling out and proves the BMC answers."""
        async with self._lock:
            path = self._session_url or self.system or proto.SERVICE_ROOT
            response = await self._authed("GET", path, "keepalive")
            self._check(response, "keepalive")

    def statistics(self) -> SessionStatistics:
        c = self._counters
        return SessionStatistics(
            requests=c.requests,
            retries=c.retries,
            logins=c.logins,
            sessions_opened=c.sessions_opened,
            sessions_closed=c.sessions_closed,
            connections=c.connections,
            tls_handshakes=c.tls_handshakes,
            last_rtt=c.last_rtt,
            rtt_sum=c.rtt_sum,
        )

    # ---- the system ---------------------------------------------------------------------

    async def _read_system(self) -> proto.SystemReading:
        assert self.system is not None
        response = await self._authed("GET", self.system, "read the system")
        self._check(response, "read the system")
        try:
            reading = proto.parse_system(proto.decode_json(response.content, "system"))
        except BadReplyError as exc:
            raise BadReplyError(f"{self.peer}: {self.system}: {exc}") from None
        self.last_health = reading.health
        self.last_power_state = reading.power_state
        if reading.reset != self._reset:
            self._reset, self._allowed = reading.reset, None
        return reading

    async def _action_info(self) -> frozenset[str] | None:
        reset = self._reset
        if reset is None or reset.action_info is None:
            return None  # the service does not say: assume any ResetType (as sushy does)
        if self._allowed is None:
            response = await self._authed("GET", reset.action_info, "read the ActionInfo")
            self._check(response, "read the ActionInfo")
            try:
                doc = proto.decode_json(response.content, "ActionInfo")
                self._allowed = proto.parse_action_info(doc) or frozenset()
            except BadReplyError as exc:
                raise BadReplyError(f"{self.peer}: {reset.action_info}: {exc}") from None
        return self._allowed or None

    async def _post_reset(self, target: str, reset_type: str) -> None:
        what = f"Reset {reset_type}"
        response = await self._authed(
            "POST",
            target,
            what,
            body=proto.reset_body(reset_type),
            repeatable=reset_type in REPEATABLE_RESETS,
        )
        status = response.status_code
        if status in (200, 204):
            return
        if status == 202:
            await self._follow_task(response, what)
            return
        if status in (400, 409):
            # Often "already in that state" (or iDRAC's busy power-on): done only if a
            # fresh read shows the state the reset leads to.
            reading = await self._read_system()
            if reading.power_on == proto.RESET_TARGET.get(reset_type):
                logger.info(
                    "%s: %s answered %d, and the system is %s: done",
                    self.peer,
                    what,
                    status,
                    reading.power_state,
                )
                return
            raise RequestRefusedError(
                f"{self.peer}: {what} refused ({status}"
                f"{self._reason(response)}); the system is {reading.power_state}",
                status,
            )
        self._check(response, what)
        raise BadReplyError(f"{self.peer}: {what}: unexpected HTTP {status}")

    async def _follow_task(self, accepted: Reply, what: str) -> None:
        location = accepted.headers.get("Location")
        if not location:
            return  # accepted without a monitor: nothing more to learn
        monitor = proto.resource_path(location)
        with trio.move_on_after(MAX_POLL):
            while True:
                await trio.sleep(POLL_INTERVAL)
                response = await self._authed("GET", monitor, f"{what} task")
                if response.status_code == 404:
                    return  # some services drop the monitor once the task is over
                self._check(response, f"{what} task")
                if not response.content:
                    return
                try:
                    task = proto.parse_task(proto.decode_json(response.content, "task"))
                except BadReplyError:
                    if response.status_code == 202:
                        raise
                    return  # a finished monitor answers with the action's own result
                if task.failed:
                    detail = f": {task.message}" if task.message else ""
                    raise RequestRefusedError(f"{self.peer}: {what}: task {task.state}{detail}")
                if task.done:
                    return
        raise RequestRefusedError(f"{self.peer}: {what}: task still running after {MAX_POLL} s")

    async def _wait_for_power(self, *, on: bool) -> None:
        settled = "On" if on else "Off"
        with trio.move_on_after(MAX_POLL):
            for _ in range(int(MAX_POLL / POLL_INTERVAL) + 1):
                if (await self._read_system()).power_state == settled:
                    return
                await trio.sleep(POLL_INTERVAL)
        raise RequestRefusedError(f"{self.peer}: the system did not reach {settled} in time")

    # ---- sessions -----------------------------------------------------------------------

    async def _open(self) -> None:
        async with self._lock:
            root = await self._service_root()
            self._sessions_path = root.sessions if self.auth != "basic" else None
            if self.auth == "session" and self._sessions_path is None:
                self._sessions_path = proto.DEFAULT_SESSIONS
            if self._sessions_path is not None:
                await self._login()
            else:
                self.auth = "basic"
            if self._system_id is not None:
                self.system = proto.system_path(self._system_id, root.systems)
            else:
                response = await self._authed("GET", root.systems, "list the systems")
                self._check(response, "list the systems")
                try:
                    doc = proto.decode_json(response.content, "Systems collection")
                    members = proto.parse_collection(doc)
                    self.system = proto.choose_system(members, root.systems)
                except BadReplyError as exc:
                    raise BadReplyError(f"{self.peer}: {exc}") from None

    async def _service_root(self) -> proto.ServiceRoot:
        # The root is readable without credentials (the spec says so; sushy relies on it).
        response = await self._exchange("GET", proto.SERVICE_ROOT, "read the service root")
        if response.status_code == 401:
            response = await self._authed("GET", proto.SERVICE_ROOT, "read the service root")
        self._check(response, "read the service root")
        try:
            return proto.parse_service_root(proto.decode_json(response.content, "service root"))
        except BadReplyError as exc:
            raise BadReplyError(f"{self.peer}: {exc}") from None

    async def _login(self) -> None:
        assert self._sessions_path is not None
        self._counters.logins += 1
        # Shielded past the caller's deadline by LOGIN_GRACE: once the POST has left, the
        # BMC makes a session whether or not we wait; we want its token to delete it.
        deadline = trio.current_effective_deadline() + LOGIN_GRACE
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            response = await self._exchange(
                "POST",
                self._sessions_path,
                "log in",
                body=proto.login_body(self._username, self._password),
                headers=_JSON,
                retry_statuses=frozenset({500, 502, 504}),
            )
        if scope.cancelled_caught:
            raise NoResponseError(f"{self.peer}: no answer to the login")
        self._take_login(response)
        # The caller's deadline may have passed while we were shielded: honour it now,
        # with the token kept, so that close deletes the session.
        await trio.lowlevel.checkpoint_if_cancelled()

    def _take_login(self, response: Reply) -> None:
        status = response.status_code
        if status in (200, 201):
            token = response.headers.get("X-Auth-Token")
            location = response.headers.get("Location")
            if location is None and response.content:
                odata_id = proto.decode_json(response.content, "session").get("@odata.id")
                location = odata_id if isinstance(odata_id, str) else None
            if not token:
                raise BadReplyError(f"{self.peer}: the login answer has no X-Auth-Token")
            self._token, self.auth = token, "session"
            self._session_url = proto.resource_path(location) if location else None
            self._counters.sessions_opened += 1
            return
        if status in (404, 405) and self.auth == "auto":
            self.auth, self._sessions_path = "basic", None
            logger.info("%s: no session service (%d): using basic auth", self.peer, status)
            return
        if status in (401, 403):
            raise AuthenticationError(
                f"{self.peer}: the BMC refused user {self._username!r} or its password "
                f"(HTTP {status}; not retried: BMCs lock users out)"
            )
        if status == 503:
            raise SessionLimitError(
                f"{self.peer}: the session table is full (503 from the session service"
                f"{self._reason(response)}): other clients hold or leaked sessions; they "
                "expire after the BMC's idle timeout"
            )
        self._check(response, "log in")
        raise BadReplyError(f"{self.peer}: log in: unexpected HTTP {status}")

    async def _logout(self) -> None:
        token, url = self._token, self._session_url
        self._token = None
        if token is None or url is None:
            return
        try:
            response = await self._exchange(
                "DELETE", url, "log out", headers={"X-Auth-Token": token}, repeatable=False
            )
        except RedfishError as exc:
            logger.info("%s: log out failed (%s); the BMC will expire the session", self.peer, exc)
            return
        if response.status_code < 300 or response.status_code == 404:
            self._counters.sessions_closed += 1
        else:
            logger.info("%s: log out answered %d", self.peer, response.status_code)

    async def aclose(self) -> None:
        """Delete the Redfish session (shielded, at most CLOSE_GRACE) and the connection."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            try:
                with trio.move_on_after(CLOSE_GRACE):
                    async with self._lock:
                        await self._logout()
            finally:
                await self._connection.aclose()

    # ---- HTTP ---------------------------------------------------------------------------

    async def _authed(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: bytes | None = None,
        repeatable: bool = True,
    ) -> Reply:
        """A request with our credentials; one new login if the session was dropped."""
        for relogin in (False, True):
            if self._token is not None:
                headers = {"X-Auth-Token": self._token}
            else:
                headers = {"Authorization": self._basic}
            if body is not None:
                headers.update(_JSON)
            response = await self._exchange(
                method, path, what, body=body, headers=headers, repeatable=repeatable
            )
            if response.status_code != 401:
                return response
            if self._token is None or relogin:
                raise AuthenticationError(
                    f"{self.peer}: {what}: the BMC refused the credentials of user "
                    f"{self._username!r} (HTTP 401; not retried)"
                )
            logger.info("%s: %s: session no longer valid (401): logging in again", self.peer, what)
            self._token = self._session_url = None
            await self._login()  # may also find the session service gone: basic auth then
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        repeatable: bool = True,
        retry_statuses: frozenset[int] | None = None,
    ) -> Reply:
        """One request, with the bounded retries. Returns any answer but a retried 5xx."""
        policy = self._retry
        counters = self._counters
        for attempt in range(1, policy.attempts + 1):
            started = trio.current_time()
            try:
                response = await self._connection.request(method, path, body=body, headers=headers)
            except httpx.ConnectError as exc:
                tls = describe_failure(exc)
                if tls is not None:
                    raise TLSError(failure_message(self.peer, tls, self._verify)) from exc
                error: RedfishError = NoResponseError(f"{self.peer}: {what}: cannot connect")
                reason, retry = _short(exc) or "connect failed", True  # never sent: safe
            except httpx.TimeoutException as exc:
                raise NoResponseError(
                    f"{self.peer}: {what}: no answer in {BACKSTOP_TIMEOUT:.0f} s"
                ) from exc
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                tls = describe_failure(exc)
                if tls is not None:
                    raise TLSError(failure_message(self.peer, tls, self._verify)) from exc
                error = NoResponseError(f"{self.peer}: {what}: connection lost ({_short(exc)})")
                reason, retry = _short(exc) or "connection lost", repeatable
            else:
                rtt = trio.current_time() - started
                counters.requests += 1
                counters.last_rtt = rtt
                counters.rtt_sum += rtt
                status = response.status_code
                retryable = retry_statuses if retry_statuses is not None else _RETRY_5XX
                if status not in retryable:
                    return response
                error = RequestRefusedError(
                    f"{self.peer}: {what}: HTTP {status}{self._reason(response)}", status
                )
                reason, retry = f"HTTP {status}", repeatable
            if not retry or attempt == policy.attempts:
                raise error
            wait = policy.backoff(attempt)
            if trio.current_time() + wait >= trio.current_effective_deadline():
                raise error  # the caller's deadline would cut the sleep: say why now
            logger.warning(
                "%s: %s: %s; attempt %d of %d failed, retrying in %.1f s",
                self.peer,
                what,
                reason,
                attempt,
                policy.attempts,
                wait,
            )
            counters.retries += 1
            await trio.sleep(wait)
        raise AssertionError("unreachable")

    def _check(self, response: Reply, what: str) -> None:
        """Raise the error a non-2xx answer means (401s are handled before this)."""
        status = response.status_code
        if status < 300:
            return
        raise RequestRefusedError(
            f"{self.peer}: {what}: HTTP {status}{self._reason(response)}", status
        )

    @staticmethod
    def _reason(response: Reply) -> str:
        message = proto.error_message(response.content)
        return f": {message}" if message else ""


_RETRY_5XX: Final = frozenset({500, 502, 503, 504})


def _short(exc: BaseException) -> str:
    return proto.one_line(str(exc), 120)


def open_redfish(
    address: str,
    *,
    username: str,
    password: str,
    system_id: str | None = None,
    verify: VerifySetting = True,
    retry: RetryPolicy | None = None,
    auth: AuthMode = "auto",
    transport: httpx.AsyncBaseTransport | None = None,
) -> AbstractAsyncContextManager[RedfishSession]:
    """Open a session with the Redfish service at ``address`` on enter; log out on exit.

    ``address`` is Ironic's redfish_address (``https://host[:port]``); ``system_id`` its
    redfish_system_id (a path, or the id within the Systems collection; None: the only
    system). ``verify``: True (system CAs), False, or a CA file path. ``auth``: "auto"
    (a session, else basic auth), "session" or "basic". ``transport`` is for tests.
    Raises the ``redfish.errors`` types; every message names host:port, never a secret.
    """
    base_url, peer = parse_address(address)
    if not username:
        raise ValueError("a user name is needed")
    if not password:
        raise ValueError("a password is needed")
    if auth not in ("auto", "session", "basic"):
        raise ValueError(f"auth must be auto, session or basic, not {auth!r}")
    policy = retry or RetryPolicy()

    @asynccontextmanager
    async def session() -> AsyncIterator[RedfishSession]:
        bmc = RedfishSession(
            base_url,
            peer,
            username=username,
            password=password,
            system_id=system_id,
            verify=verify,
            retry=policy,
            auth=auth,
            transport=transport,
        )
        try:
            await bmc._open()
            yield bmc
        finally:
            await bmc.aclose()

    return session()
