"""A real HTTP/1.1 server on loopback that speaks Keystone v3 and Nova's external-events API.

It follows the wire contract in the shared reference (Keystone ``POST /v3/auth/tokens``
with password or application-credential auth, tokens in ``X-Subject-Token`` with a
catalog and an expiry; Nova ``POST /v2.1[/<project>]/os-server-external-events`` with
keystonemiddleware's 401, the microversion rules, the 2.76 body schema, the body size
limit, the policy's 403, and 200/207 with per-event codes), so the agent's client is
tested over real sockets. It can be told to fail: answer a given status, hang, go away
(stop listening), revoke tokens early, or be an old Nova (406). Like a real API it can also
stall a request past the client's timeout and still apply it afterwards, when the client
has long gone; ``power`` is the state Nova ends up holding for each instance.

Paths: Keystone lives under ``/identity`` and each compute endpoint under
``/compute/<label>/``, so a test can see which catalog endpoint the client chose.
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import attrs
import trio

BODY_LIMIT = 114688  # oslo.middleware sizelimit default in Nova's pipeline
MIN_VERSION = (2, 1)
_NETWORK_EVENTS = {"changed", "vif-plugged", "vif-unplugged", "vif-deleted"}
EVENT_NAMES_276 = {f"network-{name}" for name in _NETWORK_EVENTS} | {
    "volume-extended",
    "power-update",
}
TAG_REQUIRED = {"volume-extended", "power-update"}
FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound"}
FAULT_NAMES |= {413: "overLimit", 415: "badMediaType", 503: "serviceUnavailable"}
HEX_ID = re.compile(r"^[0-9a-fA-F-]{32,36}$")


@attrs.define
class User:
    id: str
    name: str
    domain_id: str
    domain_name: str
    password: str


@attrs.define
class Project:
    id: str
    name: str
    domain_id: str
    domain_name: str


@attrs.define
class AppCredential:
    id: str
    name: str
    secret: str
    user_id: str
    project_id: str


@attrs.define
class IssuedToken:
    value: str
    project_id: str
    user_id: str
    roles: tuple[str, ...]
    expires_at: float
    revoked: bool = False


@attrs.define
class Endpoint:
    label: str  # path segment under /compute/
    interface: str
    region: str
    with_project: bool = False  # URL ends in /v2.1/<project_id>
    versioned: bool = True  # False: the unversioned root (needs discovery)


@attrs.frozen
class ReceivedEvent:
    endpoint: str  # the label of the compute endpoint that received it
    server_uuid: str
    tag: str | None
    code: int
    at: float = 0.0  # wall-clock time it was applied


@attrs.frozen
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(
    status: int, body: object, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


def _fault(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    name = FAULT_NAMES.get(status, "computeFault")
    return _json(status, {name: {"code": status, "message": message}})


class FakeOpenStack:
    """State and behaviour of the fake cloud; create it with :func:`open_fake_openstack`."""

    def __init__(self, host: str, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = 0
        self.tls = tls
        self.wall_clock = time.time
        self.users = [User("u-1d2f", "ironic", "default", "Default", "nova-pass-1")]
        self.projects = [
            Project("5f9c1a6e2b7d4c3e8f0a1b2c3d4e5f60", "service", "default", "Default")
        ]
        self.app_credentials = [
            AppCredential("ac-7e1f", "powersync", "appcred-secret-9", "u-1d2f", self.projects[0].id)
        ]
        self.roles: tuple[str, ...] = ("service",)
        self.token_lifetime = 3600.0
        self.endpoints = [
            Endpoint("r1-public", "public", "RegionOne"),
            Endpoint("r1-internal", "internal", "RegionOne", with_project=True),
            Endpoint("r1-admin", "admin", "RegionOne"),
            Endpoint("r2-internal", "internal", "RegionTwo"),
            Endpoint("r2-public", "public", "RegionTwo"),
        ]
        self.tokens: dict[str, IssuedToken] = {}
        self.instances: dict[str, str | None] = {}  # server uuid -> host (None: no host)
        self.max_version = (2, 104)
        self.body_limit = BODY_LIMIT
        self.train_404 = False  # Nova 20.x: whole-request 404 when every event failed
        # Faults.
        # Answer the next Nova requests with these statuses (None: answer normally).
        self.nova_statuses: list[int | None] = []
        self.nova_down_status: int | None = None  # answer every Nova request with this
        self.nova_hang = False
        # Stall the next Nova requests this many seconds each, then apply them anyway (an API
        # keeps processing a request whose client went away).
        self.nova_stalls: list[float] = []
        self.stalled_applied = 0  # stalled requests applied so far
        self.keystone_statuses: list[int] = []
        self.keystone_hang = False
        # What happened.
        self.requests: list[Request] = []
        self.events: list[ReceivedEvent] = []
        self.power: dict[str, str] = {}  # server uuid -> the power-update tag last applied
        self.nova_posts = 0
        self._serve_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    # -- control ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        return self.base_url + "/identity"

    def endpoint_url(self, label: str) -> str:
        return f"{self.base_url}/compute/{label}/v2.1"

    def add_instance(self, host: str | None = "compute-1") -> str:
        server = str(uuid.uuid4())
        self.instances[server] = host
        return server

    def revoke_tokens(self) -> None:
        """Tokens expire early: every token issued so far is now rejected with 401."""
        for token in self.tokens.values():
            token.revoked = True

    def delivered(self, server_uuid: str | None = None) -> list[str]:
        """Tags accepted (code 200) so far, optionally for one server, in arrival order."""
        return [
            f"{event.server_uuid}:{event.tag}" if server_uuid is None else str(event.tag)
            for event in self.events
            if event.code == 200 and server_uuid in (None, event.server_uuid)
        ]

    async def go_away(self) -> None:
        """Stop listening and drop every open connection."""
        if self._serve_scope is not None:
            self._serve_scope.cancel()
            self._serve_scope = None
        await trio.sleep(0)

    async def come_back(self) -> None:
        """Listen again on the same port."""
        assert self._nursery is not None and self._serve_scope is None
        await self._nursery.start(self._serve)

    # -- serving ---------------------------------------------------------------------------

    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        listener = listeners[0]
        self.port = listener.socket.getsockname()[1]
        with trio.CancelScope() as scope:
            self._serve_scope = scope
            async with listener, trio.open_nursery() as connections:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    connections.start_soon(self._connection, stream)

    async def _connection(self, raw: trio.SocketStream) -> None:
        # The client may go away at any time (TLS peers often skip close_notify).
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._exchange(raw)

    async def _exchange(self, raw: trio.SocketStream) -> None:
        buffer = b""
        stream: trio.abc.Stream = raw
        if self.tls is not None:
            stream = trio.SSLStream(raw, self.tls, server_side=True)
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:  # the client rejected our certificate
                await raw.aclose()
                return
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                    if len(buffer) > 65536 and b"\r\n\r\n" not in buffer:
                        return
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                request = Request(method, target.split("?", 1)[0], headers, body)
                self.requests.append(request)
                status, response_headers, payload = await self._dispatch(request)
                reply = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
                response_headers = {**response_headers, "Content-Length": str(len(payload))}
                reply += [f"{name}: {value}" for name, value in response_headers.items()]
                await stream.send_all(("\r\n".join(reply) + "\r\n\r\n").encode("latin-1") + payload)
                if headers.get("connection", "").lower() == "close":
                    return

    async def _dispatch(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        path = request.path
        if path.startswith("/identity"):
            if self.keystone_hang:
                await trio.sleep_forever()
            if self.keystone_statuses:
                return _json(
                    self.keystone_statuses.pop(0), {"error": {"code": 500, "message": "injected"}}
                )
            rest = path.removeprefix("/identity").rstrip("/")
            if request.method == "POST" and rest in ("/v3/auth/tokens", "/auth/tokens"):
                return self._authenticate(request)
            return _json(404, {"error": {"code": 404, "title": "Not Found", "message": "no route"}})
        match = re.fullmatch(r"/compute/([^/]+)(/.*)?", path)
        endpoint = next((e for e in self.endpoints if match and e.label == match.group(1)), None)
        if match is None or endpoint is None:
            return _fault(404, "The resource could not be found.")
        rest = match.group(2) or "/"
        if request.method == "GET" and rest == "/":
            return self._versions(endpoint)
        route = re.fullmatch(r"/v2\.1(?:/([^/]+))?/os-server-external-events", rest)
        if request.method != "POST" or route is None:
            return _fault(404, "The resource could not be found.")
        self.nova_posts += 1
        if self.nova_hang:
            await trio.sleep_forever()
        stall = self.nova_stalls.pop(0) if self.nova_stalls else None
        status = self.nova_statuses.pop(0) if self.nova_statuses else None
        if status is not None:
            return _fault(status, f"injected {status}")
        if self.nova_down_status is not None:
            return _fault(self.nova_down_status, "injected outage")
        if stall is not None:
            await trio.sleep(stall)  # the client times out meanwhile; Nova carries on
            answer = self._external_events(request, endpoint, route.group(1))
            self.stalled_applied += 1
            return answer
        return self._external_events(request, endpoint, route.group(1))

    # -- Keystone --------------------------------------------------------------------------

    def _keystone_401(self, message: str) -> tuple[int, dict[str, str], bytes]:
        body = {"error": {"code": 401, "title": "Unauthorized", "message": message}}
        return _json(401, body, {"WWW-Authenticate": f'Keystone uri="{self.auth_url}"'})

    def _find_user(self, spec: Mapping[str, Any]) -> User | None:
        for user in self.users:
            if "id" in spec:
                if spec["id"] == user.id:
                    return user
            elif spec.get("name") == user.name:
                domain = spec.get("domain") or {}
                if domain.get("id") == user.domain_id or domain.get("name") == user.domain_name:
                    return user
        return None

    def _find_project(self, spec: Mapping[str, Any]) -> Project | None:
        for project in self.projects:
            if "id" in spec:
                if spec["id"] == project.id:
                    return project
            elif spec.get("name") == project.name:
                domain = spec.get("domain") or {}  # required with a project name
                if (
                    domain.get("id") == project.domain_id
                    or domain.get("name") == project.domain_name
                ):
                    return project
        return None

    def _authenticate(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        try:
            auth = json.loads(request.body)["auth"]
            identity = auth["identity"]
            methods = identity["methods"]
        except (ValueError, KeyError, TypeError):
            return _json(
                400, {"error": {"code": 400, "title": "Bad Request", "message": "malformed"}}
            )
        scope = auth.get("scope")
        if methods == ["password"]:
            spec = identity["password"]["user"]
            user = self._find_user(spec)
            if user is None or spec.get("password") != user.password:
                return self._keystone_401("The request you have made requires authentication.")
            project = self._find_project((scope or {}).get("project") or {})
            if project is None:
                return self._keystone_401("Could not find a project scope you have a role on.")
            user_id = user.id
        elif methods == ["application_credential"]:
            if scope is not None:
                return self._keystone_401(
                    "Error authenticating with application credential: "
                    "Application credentials cannot request a scope."
                )
            spec = identity["application_credential"]
            credential = next(
                (
                    c
                    for c in self.app_credentials
                    if spec.get("id") == c.id
                    or (
                        spec.get("name") == c.name
                        and (user := self._find_user(spec.get("user") or {})) is not None
                        and user.id == c.user_id
                    )
                ),
                None,
            )
            if credential is None or spec.get("secret") != credential.secret:
                return self._keystone_401("Invalid application credential.")
            project = next(p for p in self.projects if p.id == credential.project_id)
            user_id = credential.user_id
        else:
            return self._keystone_401("Unsupported authentication method.")
        now = self.wall_clock()
        token = IssuedToken(
            uuid.uuid4().hex, project.id, user_id, self.roles, now + self.token_lifetime
        )
        self.tokens[token.value] = token
        body = {
            "token": {
                "methods": methods,
                "roles": [{"id": uuid.uuid4().hex, "name": role} for role in self.roles],
                "expires_at": _iso(token.expires_at),
                "issued_at": _iso(now),
                "audit_ids": [uuid.uuid4().hex[:22]],
                "is_domain": False,
                "project": {
                    "domain": {"id": project.domain_id, "name": project.domain_name},
                    "id": project.id,
                    "name": project.name,
                },
                "user": {
                    "id": user_id,
                    "name": "ironic",
                    "domain": {"id": "default", "name": "Default"},
                },
                "catalog": self._catalog(project.id),
            }
        }
        return _json(201, body, {"X-Subject-Token": token.value, "Vary": "X-Auth-Token"})

    def _catalog(self, project_id: str) -> list[dict[str, Any]]:
        compute = []
        for endpoint in self.endpoints:
            url = f"{self.base_url}/compute/{endpoint.label}"
            if endpoint.versioned:
                url += "/v2.1"
            if endpoint.with_project:
                url += "/" + project_id
            compute.append(
                {
                    "id": uuid.uuid4().hex,
                    "interface": endpoint.interface,
                    "region_id": endpoint.region,
                    "region": endpoint.region,
                    "url": url,
                }
            )
        legacy = [
            {
                "id": uuid.uuid4().hex,
                "interface": interface,
                "region_id": "RegionOne",
                "region": "RegionOne",
                "url": f"{self.base_url}/compute/legacy/v2/{project_id}",
            }
            for interface in ("public", "internal", "admin")
        ]
        identity = [
            {
                "id": uuid.uuid4().hex,
                "interface": "public",
                "region_id": "RegionOne",
                "region": "RegionOne",
                "url": self.auth_url,
            }
        ]
        return [
            {"type": "identity", "name": "keystone", "id": uuid.uuid4().hex, "endpoints": identity},
            {
                "type": "compute_legacy",
                "name": "nova_legacy",
                "id": uuid.uuid4().hex,
                "endpoints": legacy,
            },
            {"type": "compute", "name": "nova", "id": uuid.uuid4().hex, "endpoints": compute},
        ]

    # -- Nova ------------------------------------------------------------------------------

    def _versions(self, endpoint: Endpoint) -> tuple[int, dict[str, str], bytes]:
        root = f"{self.base_url}/compute/{endpoint.label}"
        return _json(
            200,
            {
                "versions": [
                    {
                        "id": "v2.0",
                        "links": [{"href": root + "/v2/", "rel": "self"}],
                        "status": "DEPRECATED",
                    },
                    {
                        "id": "v2.1",
                        "links": [{"href": root + "/v2.1/", "rel": "self"}],
                        "status": "CURRENT",
                        "version": "{}.{}".format(*self.max_version),
                        "min_version": "2.1",
                    },
                ]
            },
        )

    def _microversion(self, headers: Mapping[str, str]) -> tuple[int, int] | str:
        """The requested version, or an error text ("406:..." or "400:...")."""
        text = None
        modern = headers.get("openstack-api-version")
        if modern:
            for item in modern.split(","):
                service, _, version = item.strip().partition(" ")
                if service == "compute":
                    text = version.strip()
        if text is None:
            text = headers.get("x-openstack-nova-api-version")
        if text is None:
            return MIN_VERSION
        if text == "latest":
            return self.max_version
        found = re.fullmatch(r"(\d+)\.(\d+)", text)
        if found is None:
            return f"400:Invalid API version request string: {text}"
        version = (int(found.group(1)), int(found.group(2)))
        if not MIN_VERSION <= version <= self.max_version:
            return (
                f"406:Version {text} is not supported by the API. Minimum is 2.1 and maximum "
                f"is {self.max_version[0]}.{self.max_version[1]}."
            )
        return version

    def _schema_error(self, body: object, version: tuple[int, int]) -> str | None:
        names = EVENT_NAMES_276 if version >= (2, 76) else EVENT_NAMES_276 - {"power-update"}
        if not isinstance(body, dict) or set(body) != {"events"}:
            return "Invalid input for field/attribute events. Value: must be the only key"
        events = body["events"]
        if not isinstance(events, list) or not events:
            return "Invalid input for field/attribute events. Value: [] is too short"
        for event in events:
            if not isinstance(event, dict) or not set(event) <= {
                "name",
                "server_uuid",
                "status",
                "tag",
            }:
                return "Invalid input for field/attribute events. Additional properties"
            if event.get("name") not in names:
                return f"Invalid input for field/attribute name. Value: {event.get('name')}"
            server = event.get("server_uuid")
            if not isinstance(server, str) or not HEX_ID.fullmatch(server):
                return f"Invalid input for field/attribute server_uuid. Value: {server}"
            if event.get("status", "completed") not in ("failed", "completed", "in-progress"):
                return "Invalid input for field/attribute status."
            tag = event.get("tag")
            if tag is not None and (not isinstance(tag, str) or len(tag) > 255):
                return "Invalid input for field/attribute tag."
        return None

    def _external_events(
        self, request: Request, endpoint: Endpoint, url_project: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        if len(request.body) > self.body_limit:
            return _fault(413, "Request is too large.")
        token = self.tokens.get(request.headers.get("x-auth-token", ""))
        if token is None or token.revoked or token.expires_at <= self.wall_clock():
            body = {
                "error": {
                    "code": 401,
                    "title": "Unauthorized",
                    "message": "The request you have made requires authentication.",
                }
            }
            return _json(401, body, {"WWW-Authenticate": f'Keystone uri="{self.auth_url}"'})
        if url_project is not None:
            if not HEX_ID.fullmatch(url_project):
                return _fault(404, "The resource could not be found.")
            if url_project != token.project_id:
                return _fault(
                    400,
                    f"Malformed request URL: URL's project_id '{url_project}' doesn't match "
                    f"Context's project_id '{token.project_id}'",
                )
        version = self._microversion(request.headers)
        if isinstance(version, str):
            status, message = version.split(":", 1)
            return _fault(int(status), message)
        if not {"service", "admin"} & set(token.roles):
            return _fault(
                403,
                "Policy doesn't allow os_compute_api:os-server-external-events:create"
                " to be performed.",
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in ("application/json", ""):
            return _fault(415, f"Unsupported Content-Type {content_type}")
        try:
            body = json.loads(request.body)
        except ValueError:
            return _fault(400, "Malformed request body")
        problem = self._schema_error(body, version)
        if problem is not None:
            return _fault(400, problem)
        answered = []
        for event in body["events"]:
            server = event["server_uuid"]
            if server not in self.instances:
                code = 404
            elif event["name"] in TAG_REQUIRED and "tag" not in event:
                code = 400
            elif self.instances[server] is None:
                code = 422
            else:
                code = 200
            tag = event.get("tag")
            self.events.append(ReceivedEvent(endpoint.label, server, tag, code, self.wall_clock()))
            if code == 200 and event["name"] == "power-update":
                self.power[server] = tag
            answered.append(
                {**event, "status": "completed" if code == 200 else "failed", "code": code}
            )
        headers = {
            "OpenStack-API-Version": "compute {}.{}".format(*version),
            "X-OpenStack-Nova-API-Version": "{}.{}".format(*version),
            "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
            "x-openstack-request-id": f"req-{uuid.uuid4()}",
        }
        codes = {event["code"] for event in answered}
        if codes == {200}:
            return _json(200, {"events": answered}, headers)
        if self.train_404 and 200 not in codes:
            return _fault(404, "No instances found for any event")
        return _json(207, {"events": answered}, headers)


@asynccontextmanager
async def open_fake_openstack(
    host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[FakeOpenStack]:
    """Serve a :class:`FakeOpenStack` on an ephemeral loopback port until the block exits
    (over TLS when given a server context)."""
    cloud = FakeOpenStack(host, tls)
    async with trio.open_nursery() as nursery:
        cloud._nursery = nursery
        await nursery.start(cloud._serve)
        try:
            yield cloud
        finally:
            nursery.cancel_scope.cancel()


def nova_table(cloud: FakeOpenStack, **overrides: object) -> dict[str, object]:
    """A ``[nova]`` table (as parsed from TOML) that authenticates against ``cloud``;
    an override of None removes the key."""
    table: dict[str, object] = {
        "send_power_notifications": True,
        "auth_url": cloud.auth_url,
        "username": "ironic",
        "user_domain_name": "Default",
        "password": "nova-pass-1",
        "project_name": "service",
        "project_domain_id": "default",
        "timeout": 5.0,
        "retry_delay": 1.0,
        "retry_max_delay": 8.0,
    }
    table.update(overrides)
    return {key: value for key, value in table.items() if value is not None}
