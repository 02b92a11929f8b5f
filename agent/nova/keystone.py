"""A small Keystone v3 client on httpx: tokens for Nova and the compute endpoint.

keystoneauth is synchronous, so this is our own, following its rules: the token id comes
from the ``X-Subject-Token`` header, is cached, and is renewed shortly before
``expires_at``; the compute endpoint is chosen from the token's catalog by service type,
interface preference and region, unless ``endpoint_override`` is set. Every HTTP call runs
inside a trio cancel scope of ``[nova] timeout`` seconds. Tokens and secrets are never
logged or put in exception messages.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import trio

from agent.errors import NotificationError
from agent.nova.config import AUTH_APPLICATION_CREDENTIAL, NovaConfig

log = logging.getLogger(__name__)

# keystoneauth renews a token that has fewer than this many seconds left.
REFRESH_MARGIN = 120.0
USER_AGENT = "powersync/0.1"


class ServiceUnavailableError(NotificationError):
    """Keystone or Nova could not be reached, timed out, or answered 5xx: try again later.

    ``maybe_received``: the request may have reached the service, which may still act on it
    (a timeout, or the connection lost once it was open), so its outcome is unknown.
    """

    def __init__(self, message: str, *, maybe_received: bool = False) -> None:
        super().__init__(message)
        self.maybe_received = maybe_received


class ServiceRefusedError(NotificationError):
    """Keystone or Nova refused the agent for a reason an operator must fix.

    ``kind`` names the reason ("credentials", "forbidden", "microversion", ...), so a
    caller can report each distinct problem once instead of on every retry.
    """

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@attrs.frozen
class Token:
    """A Keystone token: the id (never shown), its expiry and the catalog it came with."""

    value: str = attrs.field(repr=False)
    expires_at: float | None  # wall-clock seconds; None = Keystone said it never expires
    refresh_at: float | None
    project_id: str | None
    catalog: tuple[Mapping[str, Any], ...] = attrs.field(repr=False)


def _silence_header_traces() -> None:
    """httpcore's DEBUG traces print response headers, X-Subject-Token (a live token)
    included; keep that logger at INFO even when the agent runs with --debug."""
    traces = logging.getLogger("httpcore")
    if traces.getEffectiveLevel() < logging.INFO or traces.level == logging.NOTSET:
        traces.setLevel(logging.INFO)


def open_http_client(config: NovaConfig) -> httpx.AsyncClient:
    """One client for Keystone and Nova calls; deadlines come from trio cancel scopes."""
    _silence_header_traces()
    verify: ssl.SSLContext | bool
    if config.insecure:
        verify = False
    elif config.cafile is not None:
        verify = ssl.create_default_context(cafile=config.cafile)
    else:
        verify = True
    return httpx.AsyncClient(
        verify=verify,
        timeout=None,  # noqa: S113 (deadlines are trio cancel scopes around each call)
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
    )


def token_url(auth_url: str) -> str:
    """keystoneauth's v3 rule: append ``/auth/tokens`` to a v3 path, else ``/v3/auth/tokens``."""
    base = auth_url.rstrip("/")
    if urlsplit(base).path.rstrip("/").endswith("/v3"):
        return base + "/auth/tokens"
    return base + "/v3/auth/tokens"


def _user(config: NovaConfig) -> dict[str, Any]:
    if config.user_id is not None:
        return {"id": config.user_id}
    domain = (
        {"id": config.user_domain_id}
        if config.user_domain_id is not None
        else {"name": config.user_domain_name}
    )
    return {"name": config.username, "domain": domain}


def auth_request_body(config: NovaConfig) -> dict[str, Any]:
    """The ``POST /v3/auth/tokens`` body (password, project scope; or application credential)."""
    if config.auth_type == AUTH_APPLICATION_CREDENTIAL:
        credential: dict[str, Any] = {"secret": config.application_credential_secret}
        if config.application_credential_id is not None:
            credential["id"] = config.application_credential_id
        else:
            credential["name"] = config.application_credential_name
            credential["user"] = _user(config)
        # No scope: Keystone refuses one; the credential carries its own project.
        return {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": credential,
                }
            }
        }
    user = {**_user(config), "password": config.password}
    if config.project_id is not None:
        project: dict[str, Any] = {"id": config.project_id}
    else:
        domain = (
            {"id": config.project_domain_id}
            if config.project_domain_id is not None
            else {"name": config.project_domain_name}
        )
        project = {"name": config.project_name, "domain": domain}
    return {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": project},
        }
    }


def parse_expires_at(text: object) -> float | None:
    """ISO 8601 ``2015-11-07T02:58:43.578887Z`` to epoch seconds; null means never."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError("expires_at is not a string")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("expires_at has no time zone")
    return moment.timestamp()


def select_endpoint(
    catalog: Sequence[Mapping[str, Any]],
    *,
    interfaces: Sequence[str],
    region: str | None,
    service_type: str = "compute",
) -> str:
    """The first endpoint of the most preferred interface, as keystoneauth chooses it."""
    candidates: dict[str, list[str]] = {interface: [] for interface in interfaces}
    for service in catalog:
        if service.get("type") != service_type:
            continue
        for endpoint in service.get("endpoints") or ():
            if not isinstance(endpoint, Mapping):
                continue
            interface = endpoint.get("interface")
            url = endpoint.get("url")
            endpoint_region = endpoint.get("region_id") or endpoint.get("region")
            if interface not in candidates or not isinstance(url, str) or not url:
                continue
            if region is not None and endpoint_region != region:
                continue
            candidates[interface].append(url)
    for interface in interfaces:
        if candidates[interface]:
            return candidates[interface][0]
    where = f" in region {region}" if region is not None else ""
    raise ServiceRefusedError(
        f"no {'/'.join(interfaces)} endpoint for the {service_type} service{where} in the "
        "Keystone catalog (set [nova] region_name, valid_interfaces or endpoint_override)",
        kind="endpoint",
    )


def _is_v21(path: str) -> bool:
    segments = [segment for segment in path.split("/") if segment]
    return bool(segments) and (
        segments[-1] == "v2.1" or (len(segments) >= 2 and segments[-2] == "v2.1")
    )


class KeystoneSession:
    """Token cache and endpoint lookup; safe for concurrent use from several trio tasks."""

    def __init__(
        self,
        config: NovaConfig,
        http: httpx.AsyncClient | None,
        *,
        wall_clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self._config = config
        self._http = http
        self._wall_clock = wall_clock
        self._refresh_margin = refresh_margin
        self._token: Token | None = None
        self._lock = trio.Lock()
        self._discovered: dict[str, str] = {}
        self.authentications = 0  # how many tokens were issued to us (for tests and metrics)

    def use_http(self, http: httpx.AsyncClient) -> None:
        """Switch to another HTTP client, keeping the cached token."""
        self._http = http

    async def token(self) -> Token:
        """A valid token, authenticating only when there is none or it is about to expire."""
        async with self._lock:
            token = self._token
            now = self._wall_clock()
            if token is None or (token.refresh_at is not None and now >= token.refresh_at):
                token = await self._authenticate()
                self._token = token
            return token

    def invalidate(self, token: Token) -> None:
        """Forget ``token`` (Nova said 401); a newer token fetched meanwhile is kept."""
        if self._token is token:
            self._token = None

    async def compute_endpoint(self, token: Token) -> str:
        """The Nova v2.1 base URL, without a trailing slash."""
        if self._config.endpoint_override is not None:
            return self._config.endpoint_override.rstrip("/")
        url = select_endpoint(
            token.catalog,
            interfaces=self._config.valid_interfaces,
            region=self._config.region_name,
        ).rstrip("/")
        if _is_v21(urlsplit(url).path):
            return url
        if url not in self._discovered:
            self._discovered[url] = await self._discover_v21(url)
        return self._discovered[url]

    async def _authenticate(self) -> Token:
        assert self._config.auth_url is not None
        url = token_url(self._config.auth_url)
        response = await self.request("Keystone", "POST", url, json=auth_request_body(self._config))
        if response.status_code != 201:
            raise self._auth_failure(url, response)
        try:
            value, expires_at, project_id, catalog = _parse_token_response(response)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ServiceRefusedError(
                f"Keystone at {url} gave an unusable token response: {exc}",
                kind="keystone-response",
            ) from None
        now = self._wall_clock()
        refresh_at = None
        if expires_at is not None:
            # Short-lived tokens are renewed half-way rather than on every call.
            refresh_at = expires_at - min(self._refresh_margin, max(0.0, expires_at - now) / 2)
        self.authentications += 1
        log.info("Keystone issued a token for Nova notifications (project %s)", project_id)
        return Token(
            value=value,
            expires_at=expires_at,
            refresh_at=refresh_at,
            project_id=project_id,
            catalog=catalog,
        )

    def _auth_failure(self, url: str, response: httpx.Response) -> NotificationError:
        status = response.status_code
        detail = error_message(response)
        if status >= 500 or status == 429:
            return ServiceUnavailableError(f"Keystone at {url} answered {status}: {detail}")
        if status == 401:
            return ServiceRefusedError(
                f"Keystone at {url} rejected the [nova] credentials (401): {detail}",
                kind="credentials",
            )
        return ServiceRefusedError(
            f"Keystone at {url} refused authentication ({status}): {detail}", kind="keystone"
        )

    async def _discover_v21(self, url: str) -> str:
        """An unversioned (or legacy /v2) catalog URL: ask Nova's root for its v2.1 link."""
        parts = urlsplit(url)
        segments = [segment for segment in parts.path.split("/") if segment]
        tail: list[str] = []
        legacy = ("v2", "v2.0")
        if len(segments) >= 2 and segments[-2] in legacy:  # .../v2/<project_id>
            tail, segments = segments[-1:], segments[:-2]
        elif segments and segments[-1] in legacy:
            segments = segments[:-1]
        root = urlunsplit((parts.scheme, parts.netloc, "/" + "/".join(segments), "", ""))
        response = await self.request("Nova", "GET", root.rstrip("/") + "/")
        try:
            href = _v21_self_link(response)
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            raise ServiceRefusedError(
                f"compute endpoint {url} is not a v2.1 URL and Nova's version document at "
                f"{root} does not list v2.1 (set [nova] endpoint_override to the .../v2.1 URL)",
                kind="endpoint",
            ) from None
        return "/".join([href.rstrip("/"), *tail])

    async def request(
        self,
        service: str,
        method: str,
        url: str,
        *,
        json: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One HTTP call under a ``timeout`` cancel scope; transport failures become
        :class:`ServiceUnavailableError`."""
        if self._http is None:
            raise RuntimeError("KeystoneSession used without an HTTP client")
        with trio.move_on_after(self._config.timeout) as scope:
            try:
                return await self._http.request(method, url, json=json, headers=headers)
            except httpx.TransportError as exc:
                if _caused_by_certificate(exc):
                    raise ServiceRefusedError(
                        f"{service} at {url}: TLS certificate not trusted ({exc}); set [nova] "
                        "cafile to the CA that signed it",
                        kind="tls",
                    ) from None
                raise ServiceUnavailableError(
                    f"{service} at {url}: {type(exc).__name__}: {exc or 'connection failed'}",
                    # Refused or unreachable: nothing was sent. Anything later may have been.
                    maybe_received=not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout),
                ) from None
        assert scope.cancelled_caught
        raise ServiceUnavailableError(
            f"{service} at {url} did not answer within {self._config.timeout:g} s",
            maybe_received=True,
        )


def _caused_by_certificate(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _parse_token_response(
    response: httpx.Response,
) -> tuple[str, float | None, str | None, tuple[Mapping[str, Any], ...]]:
    """(token id, expiry, project id, catalog) from a 201 answer; raises ValueError and kin."""
    value = response.headers.get("X-Subject-Token")
    if not value:
        raise ValueError("no X-Subject-Token header")
    token_body = response.json()["token"]
    expires_at = parse_expires_at(token_body.get("expires_at"))
    catalog = tuple(token_body.get("catalog") or ())
    if not all(isinstance(service, Mapping) for service in catalog):
        raise ValueError("malformed catalog")
    project = token_body.get("project") or {}
    project_id = project.get("id") if isinstance(project, Mapping) else None
    return value, expires_at, project_id if isinstance(project_id, str) else None, catalog


def _v21_self_link(response: httpx.Response) -> str:
    versions = response.json()["versions"]
    entry = next(item for item in versions if item.get("id") == "v2.1")
    href = next(link["href"] for link in entry["links"] if link.get("rel") == "self")
    if not isinstance(href, str) or not href.startswith(("http://", "https://")):
        raise ValueError("bad self link")
    return href


def error_message(response: httpx.Response) -> str:
    """The human part of an OpenStack error body, short and on one line."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].replace("\n", " ") or response.reason_phrase
    if isinstance(body, Mapping):
        for value in body.values():
            if isinstance(value, Mapping) and isinstance(value.get("message"), str):
                return str(value["message"])[:300]
    return str(body)[:200]
