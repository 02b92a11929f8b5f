"""One simulated Redfish service, sans-I/O: a request and ``now`` in, a response out.

The HTTP server (``redfish.sim.fleet``) parses bytes with h11 and hands each request to
:meth:`SimService.handle`; the client tests hand it requests from ``httpx.MockTransport``
instead, so the same service logic answers both. Clocks and entropy are passed in.

Power transitions take time (:class:`simcore.PowerTiming`): while a change is scheduled
the system reads ``PoweringOn`` / ``PoweringOff``. The schedule is the simulators' shared
power model (:class:`simcore.SimulatedPower`), applied lazily on every read, so an idle
service costs no timer or task.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from redfish.sim.faults import Faults
from simcore.power import PowerTiming, SimulatedBmc

ALL_RESET_TYPES: Final = (
    "On",
    "ForceOff",
    "GracefulShutdown",
    "ForceRestart",
    "GracefulRestart",
    "ForceOn",
    "PushPowerButton",
    "PowerCycle",
    "Nmi",
)
ROOT: Final = "/redfish/v1"
SESSIONS: Final = f"{ROOT}/SessionService/Sessions"
TASKS: Final = f"{ROOT}/TaskService/Tasks"


@attrs.frozen
class ServiceOptions:
    """How each service of a fleet behaves (the same for all of them).

    session_service  False: no SessionService (404, basic auth only, like sushy-tools)
    action_info      True: the Reset action names only an @Redfish.ActionInfo resource
                     (OpenBMC's bmcweb) instead of inline AllowableValues
    reset_types      the ResetType values allowed (drop ForceRestart to mimic IBM's bmcweb)
    tasks            True: resets answer 202 with a Task that completes with the transition
    conflicts        True: a reset to the state the system is in answers 409 (iDRAC-like)
    """

    max_sessions: int = 4
    idle_timeout: float = 60.0
    session_service: bool = True
    action_info: bool = False
    reset_types: tuple[str, ...] = ALL_RESET_TYPES
    tasks: bool = False
    conflicts: bool = False
    system_id: str = "1"

    def __attrs_post_init__(self) -> None:
        if self.max_sessions < 1 or not self.idle_timeout > 0:
            raise ValueError("max_sessions must be >= 1 and idle_timeout > 0")
        unknown = sorted(set(self.reset_types) - set(ALL_RESET_TYPES))
        if unknown:
            raise ValueError(f"unknown ResetType {unknown[0]!r}")
        if not self.system_id or "/" in self.system_id:
            raise ValueError("system_id is one path segment")


@attrs.frozen
class SimRequest:
    method: str
    path: str  # without the query
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""


@attrs.frozen
class SimResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@attrs.define
class SimSession:
    id: str
    token: str
    last_used: float


def _json(status: int, doc: Any, headers: tuple[tuple[str, str], ...] = ()) -> SimResponse:
    body = json.dumps(doc).encode()
    return SimResponse(status, (("Content-Type", "application/json"), *headers), body)


def _error(status: int, message_id: str, message: str) -> SimResponse:
    info = {"MessageId": message_id, "Message": message, "Severity": "Critical"}
    doc = {"error": {"code": message_id, "message": message, "@Message.ExtendedInfo": [info]}}
    return _json(status, doc)


class SimService(SimulatedBmc):
    """A Redfish service with one ComputerSystem.

    ``power_on`` is the hardware truth; ``set_power`` changes it out of band (the front
    panel button). Counters: ``requests`` (every HTTP request answered), ``methods``
    (per method), ``logins`` / ``logouts`` (sessions created / deleted), and
    :meth:`session_count` (live sessions now).
    """

    def __init__(
        self,
        index: int,
        address: str,
        port: int,
        *,
        clock: Callable[[], float],
        timing: PowerTiming,
        options: ServiceOptions,
        username: str,
        password_for: Callable[[int], str],
        faults: Callable[[], Faults],
        new_token: Callable[[], str],
        power_on: bool = False,
    ) -> None:
        super().__init__(index, address, port, clock=clock, timing=timing, power_on=power_on)
        self.options = options
        self.health = "OK"
        self._username = username
        self._password_for = password_for
        self._faults = faults
        self._new_token = new_token
        self._sessions: dict[str, SimSession] = {}  # by token
        self._session_ids = 0
        self._tasks: dict[str, float] = {}  # task id -> when it completes
        self.errors_sent = 0  # answers of the server_errors fault since it was set
        self.requests = 0
        self.methods: dict[str, int] = {}
        self.logins = 0
        self.logouts = 0
        self.connections = 0
        self.tls_handshakes = 0
        self.last_reset: str | None = None

    def __repr__(self) -> str:
        return f"<SimService {self.name} {self.address}:{self.port} power={self.power_state}>"

    @property
    def system_path(self) -> str:
        return f"{ROOT}/Systems/{self.options.system_id}"

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}"

    # ---- the hardware truth --------------------------------------------------------------

    @property
    def power_state(self) -> str:
        now = self._clock()
        pending = self.next_power(now)
        if pending is not None:
            return "PoweringOn" if pending else "PoweringOff"
        return "On" if self.power_at(now) else "Off"

    # ---- sessions ---------------------------------------------------------------------------

    def session_count(self, now: float | None = None) -> int:
        self._expire(self._clock() if now is None else now)
        return len(self._sessions)

    def drop_sessions(self) -> None:
        self._sessions.clear()

    def control_details(self, now: float) -> dict[str, Any]:
        """What the control socket's ``list`` says beyond the fields every BMC has."""
        return {
            "url": self.url,
            "system_id": self.system_path,
            "power_state": self.power_state,
            "requests": self.requests,
        }

    def _expire(self, now: float) -> None:
        limit = self.options.idle_timeout
        stale = [t for t, s in self._sessions.items() if now - s.last_used >= limit]
        for token in stale:
            del self._sessions[token]

    def _authorized(self, request: SimRequest, now: float) -> bool:
        token = request.headers.get("x-auth-token")
        if token is not None:
            self._expire(now)
            session = self._sessions.get(token)
            if session is not None:
                session.last_used = now
                return True
            return False
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, _, password = decoded.partition(":")
        return self._credentials_ok(username, password)

    def _credentials_ok(self, username: Any, password: Any) -> bool:
        if not isinstance(username, str) or not isinstance(password, str):
            return False
        expected = self._password_for(self.index)
        name_ok = hmac.compare_digest(username.encode(), self._username.encode())
        return hmac.compare_digest(password.encode(), expected.encode()) and name_ok

    # ---- requests ---------------------------------------------------------------------------

    def handle(self, request: SimRequest, now: float) -> SimResponse:
        self.requests += 1
        self.methods[request.method] = self.methods.get(request.method, 0) + 1
        faults = self._faults()
        if self.index in faults.server_errors and (
            faults.error_burst == 0 or self.errors_sent < faults.error_burst
        ):
            self.errors_sent += 1
            return _error(faults.error_status, "Base.1.16.InternalError", "simulated failure")
        path = request.path.rstrip("/") or "/"
        method = request.method
        if path == ROOT:
            return self._only(method, "GET") or _json(200, self._root())
        if path == SESSIONS and method == "POST":
            if not self.options.session_service:
                return _error(404, "Base.1.16.ResourceNotFound", "no session service")
            return self._login(request, now, faults)
        if not self._authorized(request, now):
            return _error(401, "Base.1.16.NoValidSession", "authentication required")
        return self._route(method, path, request, now, faults)

    def _route(
        self, method: str, path: str, request: SimRequest, now: float, faults: Faults
    ) -> SimResponse:
        system = self.system_path
        if path == system:
            return self._only(method, "GET") or _json(200, self._system(now))
        if path == f"{system}/Actions/ComputerSystem.Reset":
            return self._only(method, "POST") or self._reset(request, now, faults)
        if path == f"{system}/ResetActionInfo" and self.options.action_info:
            return self._only(method, "GET") or _json(200, self._action_info())
        if path == f"{ROOT}/Systems":
            members = [{"@odata.id": system}]
            doc = {
                "@odata.id": f"{ROOT}/Systems",
                "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
                "Members": members,
                "Members@odata.count": 1,
            }
            return self._only(method, "GET") or _json(200, doc)
        if self.options.session_service and path.startswith(SESSIONS + "/"):
            return self._session_resource(method, path, now)
        if path.startswith(TASKS + "/"):
            return self._only(method, "GET") or self._task(path.rsplit("/", 1)[1], now)
        return _error(404, "Base.1.16.ResourceNotFound", f"no resource at {path}")

    @staticmethod
    def _only(method: str, allowed: str) -> SimResponse | None:
        if method == allowed:
            return None
        return _error(405, "Base.1.16.OperationNotAllowed", f"{method} is not allowed here")

    def _root(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "@odata.id": f"{ROOT}/",
            "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "Id": "RootService",
            "Name": f"powersync simulated Redfish service {self.name}",
            "RedfishVersion": "1.15.0",
            "Systems": {"@odata.id": f"{ROOT}/Systems"},
        }
        if self.options.session_service:
            doc["SessionService"] = {"@odata.id": f"{ROOT}/SessionService"}
            doc["Links"] = {"Sessions": {"@odata.id": SESSIONS}}
        return doc

    def _system(self, now: float) -> dict[str, Any]:
        self.power_at(now)
        reset: dict[str, Any] = {"target": f"{self.system_path}/Actions/ComputerSystem.Reset"}
        if self.options.action_info:
            reset["@Redfish.ActionInfo"] = f"{self.system_path}/ResetActionInfo"
        else:
            reset["ResetType@Redfish.AllowableValues"] = list(self.options.reset_types)
        return {
            "@odata.id": self.system_path,
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": self.options.system_id,
            "Name": self.name,
            "SystemType": "Physical",
            "PowerState": self.power_state,
            "Status": {"State": "Enabled", "Health": self.health, "HealthRollup": self.health},
            "Actions": {"#ComputerSystem.Reset": reset},
        }

    def _action_info(self) -> dict[str, Any]:
        parameter = {
            "Name": "ResetType",
            "Required": True,
            "DataType": "String",
            "AllowableValues": list(self.options.reset_types),
        }
        return {
            "@odata.id": f"{self.system_path}/ResetActionInfo",
            "@odata.type": "#ActionInfo.v1_1_2.ActionInfo",
            "Id": "ResetActionInfo",
            "Name": "Reset Action Info",
            "Parameters": [parameter],
        }

    def _login(self, request: SimRequest, now: float, faults: Faults) -> SimResponse:
        try:
            doc = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            return _error(400, "Base.1.16.MalformedJSON", "the body is not a JSON object")
        if not self._credentials_ok(doc.get("UserName"), doc.get("Password")):
            return _error(401, "Base.1.16.NoValidSession", "wrong user name or password")
        self._expire(now)
        if self.index in faults.sessions_full or len(self._sessions) >= self.options.max_sessions:
            return _error(
                503,
                "Base.1.16.SessionLimitExceeded",
                "the number of user sessions exceeds the maximum number allowed",
            )
        self._session_ids += 1
        session = SimSession(str(self._session_ids), self._new_token(), now)
        self._sessions[session.token] = session
        self.logins += 1
        location = f"{SESSIONS}/{session.id}"
        body = {
            "@odata.id": location,
            "@odata.type": "#Session.v1_7_0.Session",
            "Id": session.id,
            "UserName": self._username,
        }
        return _json(201, body, (("Location", location), ("X-Auth-Token", session.token)))

    def _session_resource(self, method: str, path: str, now: float) -> SimResponse:
        session_id = path.rsplit("/", 1)[1]
        self._expire(now)
        found = next((s for s in self._sessions.values() if s.id == session_id), None)
        if found is None:
            return _error(404, "Base.1.16.ResourceNotFound", f"no session {session_id}")
        if method == "DELETE":
            del self._sessions[found.token]
            self.logouts += 1
            return SimResponse(204)
        body = {"@odata.id": path, "Id": found.id, "UserName": self._username}
        return self._only(method, "GET") or _json(200, body)

    def _reset(self, request: SimRequest, now: float, faults: Faults) -> SimResponse:
        try:
            doc = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        reset_type = doc.get("ResetType") if isinstance(doc, dict) else None
        if not isinstance(reset_type, str) or reset_type not in self.options.reset_types:
            return _error(
                400,
                "Base.1.16.ActionParameterNotSupported",
                f"ResetType {reset_type!r} is not supported",
            )
        answer = self._apply_reset(reset_type, now, faults)
        if answer is not None:
            return answer
        self.last_reset = reset_type
        if not self.options.tasks:
            return SimResponse(204)
        task_id = str(len(self._tasks) + 1)
        done_at = self.settles_at(now)
        self._tasks[task_id] = done_at
        location = f"{TASKS}/{task_id}"
        return _json(202, self._task_doc(task_id, now), (("Location", location),))

    def _apply_reset(self, reset_type: str, now: float, faults: Faults) -> SimResponse | None:
        on = self.power_at(now)
        wants = {"On": True, "ForceOn": True, "ForceOff": False, "GracefulShutdown": False}
        settled = self.next_power(now) is None
        if self.options.conflicts and wants.get(reset_type) == on and settled:
            return _error(
                409,
                "Base.1.16.ActionParameterValueConflict",
                f"ResetType {reset_type} conflicts with the current power state",
            )
        if reset_type in ("On", "ForceOn"):
            self.start_power_on(now)
        elif reset_type == "ForceOff":
            self.start_power_off(now)
        elif reset_type == "GracefulShutdown":
            if on and self.index not in faults.ignore_soft_off:
                self.start_soft_off(now)
        elif reset_type in ("ForceRestart", "GracefulRestart", "PowerCycle"):
            if not on:
                return _error(
                    409,
                    "Base.1.16.ActionParameterValueConflict",
                    f"ResetType {reset_type}: the system is off",
                )
            self.start_cycle(now)
        elif reset_type == "PushPowerButton":
            self.press_button(now)
        return None

    def _task_doc(self, task_id: str, now: float) -> dict[str, Any]:
        done = now >= self._tasks[task_id]
        return {
            "@odata.id": f"{TASKS}/{task_id}",
            "@odata.type": "#Task.v1_7_0.Task",
            "Id": task_id,
            "Name": f"Reset task {task_id}",
            "TaskState": "Completed" if done else "Running",
            "TaskStatus": "OK",
            "Messages": [],
        }

    def _task(self, task_id: str, now: float) -> SimResponse:
        if task_id not in self._tasks:
            return _error(404, "Base.1.16.ResourceNotFound", f"no task {task_id}")
        doc = self._task_doc(task_id, now)
        return _json(200 if doc["TaskState"] == "Completed" else 202, doc)
