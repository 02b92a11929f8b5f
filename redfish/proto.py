"""The sans-I/O Redfish core: what the replies mean, and what to ask for.

Bytes (or decoded JSON) go in, plain values come out. Nothing here does I/O, reads a clock
or draws entropy; the client (``redfish.client``) feeds it. Every reply parser raises only
:class:`~redfish.errors.BadReplyError` for a reply it cannot use: a body that is not JSON,
not the resource asked for, or a field without a usable value; it never guesses a power
state. The planning helpers raise ValueError for a caller's mistake (an unknown action)
and UnsupportedActionError when the system allows no way to do it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from redfish.errors import BadReplyError, UnsupportedActionError

SERVICE_ROOT: Final = "/redfish/v1/"
DEFAULT_SESSIONS: Final = "/redfish/v1/SessionService/Sessions"
RESET_ACTION: Final = "#ComputerSystem.Reset"

# Ironic's map: a transition counts as the state it is heading to; anything else
# (Reset, Unknown, null, a vendor word) is not a power state.
POWER_STATES: Final[Mapping[str, bool]] = {
    "On": True,
    "PoweringOn": True,
    "Off": False,
    "PoweringOff": False,
}

# Power action -> the ResetType sequences that do it, best first. Each sequence is tried
# only if every ResetType in it is allowed. ``cycle`` without ForceRestart is Ironic's
# reboot: ForceOff, wait for off, then On.
RESET_PLANS: Final[Mapping[str, tuple[tuple[str, ...], ...]]] = {
    "on": (("On",), ("ForceOn",)),
    "off": (("ForceOff",),),
    "soft": (("GracefulShutdown",),),
    "reset": (("ForceRestart",),),
    "cycle": (("ForceRestart",), ("ForceOff", "On")),
}
POWER_ACTIONS: Final = frozenset(RESET_PLANS)

# The power state a ResetType leaves the system in (what a fresh read must show after a
# 400/409 for the reset to count as done).
RESET_TARGET: Final[Mapping[str, bool]] = {
    "On": True,
    "ForceOn": True,
    "ForceOff": False,
    "GracefulShutdown": False,
    "ForceRestart": True,
    "GracefulRestart": True,
    "PowerCycle": True,
}

TASK_RUNNING: Final = frozenset(
    {"New", "Starting", "Running", "Suspended", "Interrupted", "Pending", "Stopping"}
    | {"Service", "Cancelling"}
)
TASK_FAILED: Final = frozenset({"Exception", "Killed", "Cancelled"})
TASK_STATES: Final = TASK_RUNNING | TASK_FAILED | {"Completed"}
HEALTH_WORDS: Final[Mapping[str, str]] = {"OK": "ok", "Warning": "warning", "Critical": "critical"}
MAX_MESSAGE: Final = 300


# ---- small helpers ----------------------------------------------------------------------


def decode_json(body: bytes, what: str) -> dict[str, Any]:
    """A reply body as a JSON object, or BadReplyError naming ``what`` was asked for."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadReplyError(f"{what}: the reply is not JSON") from None
    if not isinstance(doc, dict):
        raise BadReplyError(f"{what}: the reply is JSON but not an object")
    return doc


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """Collapse whitespace (BMC messages carry newlines) and cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _odata_id(value: Any) -> str | None:
    if isinstance(value, dict):
        ref = value.get("@odata.id")
        if isinstance(ref, str) and ref.startswith("/"):
            return ref
    return None


def resource_path(reference: str) -> str:
    """A Location header or @odata.id as a path on the same service (scheme and host of an
    absolute URL dropped: BMCs often name themselves by an address we do not use)."""
    parts = urlsplit(reference.strip())
    path = parts.path
    if not path.startswith("/"):
        raise BadReplyError(f"reference {one_line(reference, 80)!r} is not a path")
    return path + (f"?{parts.query}" if parts.query else "")


def same_resource(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


# ---- service root, collections ----------------------------------------------------------


@attrs.frozen
class ServiceRoot:
    systems: str  # the Systems collection
    sessions: str | None  # the sessions collection, None when the root names none
    version: str | None


def parse_service_root(doc: Mapping[str, Any]) -> ServiceRoot:
    systems = _odata_id(doc.get("Systems"))
    if systems is None:
        raise BadReplyError("service root: no Systems collection (is this a Redfish service?)")
    links = doc.get("Links")
    sessions = _odata_id(links.get("Sessions")) if isinstance(links, dict) else None
    if sessions is None and _odata_id(doc.get("SessionService")) is not None:
        sessions = DEFAULT_SESSIONS  # the spec's fixed path, when only the service is linked
    version = doc.get("RedfishVersion")
    return ServiceRoot(
        systems=systems, sessions=sessions, version=version if isinstance(version, str) else None
    )


def parse_collection(doc: Mapping[str, Any], what: str = "Systems collection") -> tuple[str, ...]:
    members = doc.get("Members")
    if not isinstance(members, list):
        raise BadReplyError(f"{what}: no Members list")
    paths = []
    for member in members:
        path = _odata_id(member)
        if path is None:
            raise BadReplyError(f"{what}: a member without an @odata.id path")
        paths.append(path)
    return tuple(paths)


def choose_system(paths: Iterable[str], collection: str) -> str:
    """The only system of a service, or an error listing them (system_id is then needed)."""
    found = tuple(paths)
    if len(found) == 1:
        return found[0]
    if not found:
        raise BadReplyError(f"{collection} lists no systems")
    shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    raise BadReplyError(f"{len(found)} systems ({shown}): set system_id to one of them")


def system_path(system_id: str, collection: str) -> str:
    """Ironic's redfish_system_id is a path (/redfish/v1/Systems/1); a bare id is also taken."""
    if system_id.startswith("/"):
        return system_id
    if not system_id or "/" in system_id or system_id in (".", ".."):
        raise ValueError(f"system_id {system_id!r} is neither a path nor an id")
    return collection.rstrip("/") + "/" + system_id


# ---- the ComputerSystem -----------------------------------------------------------------


@attrs.frozen
class ResetAction:
    target: str  # where to POST {"ResetType": ...}
    allowed: frozenset[str] | None  # None: the service does not say (assume any)
    action_info: str | None  # the @Redfish.ActionInfo resource, when that is how it says


@attrs.frozen
class SystemReading:
    path: str | None
    power_on: bool
    power_state: str  # the raw word ("PoweringOn", ...)
    health: str | None  # see parse_health
    reset: ResetAction | None


def _is_computer_system(doc: Mapping[str, Any]) -> bool:
    kind = doc.get("@odata.type")
    if isinstance(kind, str):
        return kind.lstrip("#").startswith("ComputerSystem.")
    actions = doc.get("Actions")
    return "PowerState" in doc and (
        "SystemType" in doc or (isinstance(actions, dict) and RESET_ACTION in actions)
    )


def _allowable(values: Any) -> frozenset[str] | None:
    if not isinstance(values, list):
        return None
    return frozenset(value for value in values if isinstance(value, str))


def parse_reset_action(doc: Mapping[str, Any]) -> ResetAction | None:
    actions = doc.get("Actions")
    if not isinstance(actions, dict):
        return None
    reset = actions.get(RESET_ACTION)
    if not isinstance(reset, dict):
        return None
    target = reset.get("target")
    if not isinstance(target, str) or not target.strip():
        raise BadReplyError("system: the Reset action has no target")
    info = reset.get("@Redfish.ActionInfo")
    return ResetAction(
        target=resource_path(target),
        allowed=_allowable(reset.get("ResetType@Redfish.AllowableValues")),
        action_info=resource_path(info) if isinstance(info, str) and info.strip() else None,
    )


def _health_word(value: Any) -> str | None:
    return HEALTH_WORDS.get(value) if isinstance(value, str) else None


def parse_health(status: Any) -> str | None:
    """``Status`` -> "ok", the problem words ("warning", "critical", "ok, rollup warning"),
    or None when the service reports no health we know."""
    if not isinstance(status, dict):
        return None
    health = _health_word(status.get("Health"))
    rollup = _health_word(status.get("HealthRollup"))
    if health is None:
        return None
    if rollup is None or rollup == "ok" or rollup == health:
        return health
    return f"{health}, rollup {rollup}"


def parse_power_state(value: Any) -> bool:
    if isinstance(value, str) and value in POWER_STATES:
        return POWER_STATES[value]
    shown = "missing" if value is None else one_line(repr(value), 40)
    raise BadReplyError(f"system: PowerState {shown} is not a power state")


def parse_system(doc: Mapping[str, Any]) -> SystemReading:
    """A ComputerSystem, or BadReplyError (wrong resource, or no usable PowerState)."""
    if not _is_computer_system(doc):
        kind = doc.get("@odata.type")
        named = f" ({one_line(kind, 60)})" if isinstance(kind, str) else ""
        raise BadReplyError(f"the reply is not a ComputerSystem{named}")
    power = doc.get("PowerState")
    on = parse_power_state(power)
    assert isinstance(power, str)
    path = doc.get("@odata.id")
    return SystemReading(
        path=path if isinstance(path, str) else None,
        power_on=on,
        power_state=power,
        health=parse_health(doc.get("Status")),
        reset=parse_reset_action(doc),
    )


def parse_action_info(doc: Mapping[str, Any]) -> frozenset[str] | None:
    """The ResetType values an ActionInfo resource allows (None: it does not say)."""
    parameters = doc.get("Parameters")
    if not isinstance(parameters, list):
        raise BadReplyError("ActionInfo: no Parameters list")
    for parameter in parameters:
        if isinstance(parameter, dict) and parameter.get("Name") == "ResetType":
            return _allowable(parameter.get("AllowableValues"))
    return None


def reset_plan(action: str, allowed: frozenset[str] | None) -> tuple[str, ...]:
    """The ResetType values to POST, in order, for a power action.

    ValueError for an action that does not exist; UnsupportedActionError when the system
    allows none of the ways to do it.
    """
    try:
        plans = RESET_PLANS[action]
    except KeyError:
        raise ValueError(f"unknown power action {action!r} (on, off, cycle, reset, soft)") from None
    for plan in plans:
        if allowed is None or all(reset_type in allowed for reset_type in plan):
            return plan
    needs = " or ".join("+".join(plan) for plan in plans)
    offered = ", ".join(sorted(allowed or ())) or "none"
    raise UnsupportedActionError(f"power {action} needs ResetType {needs}; allowed: {offered}")


def reset_body(reset_type: str) -> bytes:
    return json.dumps({"ResetType": reset_type}).encode()


# ---- sessions ---------------------------------------------------------------------------


def login_body(username: str, password: str) -> bytes:
    return json.dumps({"UserName": username, "Password": password}).encode()


# ---- Tasks and errors -------------------------------------------------------------------


@attrs.frozen
class TaskReading:
    state: str
    done: bool
    failed: bool
    message: str | None


def parse_task(doc: Mapping[str, Any]) -> TaskReading:
    """A Task (or a task monitor's Task body): is it done, did it fail, what did it say."""
    state = doc.get("TaskState")
    if not isinstance(state, str) or state not in TASK_STATES:
        shown = "missing" if state is None else one_line(repr(state), 40)
        raise BadReplyError(f"task: TaskState {shown} is not a task state")
    status = doc.get("TaskStatus")
    failed = state in TASK_FAILED or (state == "Completed" and status == "Critical")
    return TaskReading(
        state=state,
        done=state not in TASK_RUNNING,
        failed=failed,
        message=_messages(doc.get("Messages")),
    )


def _messages(items: Any) -> str | None:
    if not isinstance(items, list):
        return None
    texts = []
    for item in items:
        if isinstance(item, dict):
            text = item.get("Message")
            if not isinstance(text, str):
                text = item.get("MessageId")
            if isinstance(text, str) and text.strip():
                texts.append(text.strip())
    return one_line("; ".join(texts)) if texts else None


def error_message(body: bytes) -> str | None:
    """An error body's messages as one line (ExtendedInfo first), or None if it has none."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    error = doc.get("error")
    if not isinstance(error, dict):
        return _messages(doc.get("@Message.ExtendedInfo"))
    extended = _messages(error.get("@Message.ExtendedInfo"))
    if extended:
        return extended
    for key in ("message", "code"):
        text = error.get(key)
        if isinstance(text, str) and text.strip():
            return one_line(text)
    return None


def parse_address(address: str) -> tuple[str, str]:
    """``https://10.0.0.5[:port]`` (or a bare ``host[:port]``) -> (base URL, "host:port")."""
    text = address.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"Redfish address {address!r} is not an https:// URL")
    if parts.username or parts.password:
        raise ValueError("Redfish address: credentials go in username/password, not the URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"Redfish address {address!r} has a bad port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}", f"{host}:{port}"
