"""The JSON store file: its format, how it is read, and how it is replaced atomically.

Format (version 3)::

    {"format": "powersync-store", "version": 3,
     "nodes": [{...Node fields...}, ...],           sorted by name; driver_info an object
     "history": [{"id", "node_uuid", "at", "from_state", "to_state", "cause", "message"}],
     "notifications": [{...Notification fields...}],
     "meta": {"key": "value"},
     "conductors": [{"host", "started_at", "last_heartbeat", "info"}],
     "leases": [{"name", "holder", "token", "expires_at"}],
     "next_ids": {"history": n, "notification": m}}

A write goes to a temporary file (mode 0600) in the same directory, is fsynced, renamed over
the store and the directory is fsynced: a reader or a crash sees the old or the new version.

Versions: 1 had no driver, driver_info, provision_state or health in a node; reading a
version-1 document fills them in (driver "ipmi", driver_info {}, None), and the store rewrites
the file as the current version when it opens it. Version 2 had no conductors or leases.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

import attrs

from store.errors import InvalidNode, NodeNotFound, SchemaTooNew, StoreCorrupt, StoreError
from store.model import UPDATABLE_FIELDS, Conductor, Node, Notification, validate_fields
from store.plan import LeaseRow
from store.rows import node_from_json, node_to_json
from store.validate import parse_uuid

Stamp = tuple[int, int, int, int]

FORMAT = "powersync-store"
CURRENT_VERSION = 3
_HISTORY_KEYS = ("id", "node_uuid", "at", "from_state", "to_state", "cause", "message")
# What a version-1 node lacks, as it is read: the fields schema 3 / format 2 added.
_ADDED_IN_2: dict[str, Any] = {
    "driver": "ipmi",
    "driver_info": {},
    "provision_state": None,
    "health": None,
}


@attrs.define
class JsonState:
    """The parsed file. Mutated only inside a write transaction of the store."""

    nodes: dict[str, Node] = attrs.field(factory=dict)  # by uuid
    history: list[dict[str, Any]] = attrs.field(factory=list)  # oldest first
    notifications: dict[int, Notification] = attrs.field(factory=dict)  # by id, ascending
    meta: dict[str, str] = attrs.field(factory=dict)
    conductors: dict[str, Conductor] = attrs.field(factory=dict)  # by host
    leases: dict[str, LeaseRow] = attrs.field(factory=dict)  # by name
    next_history_id: int = 1
    next_notification_id: int = 1
    # The format version of the document this was read from (older ones are rewritten).
    read_version: int = CURRENT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": CURRENT_VERSION,
            "nodes": [
                node_to_json(node) for node in sorted(self.nodes.values(), key=lambda n: n.name)
            ],
            "history": self.history,
            "notifications": [attrs.asdict(n) for n in self.notifications.values()],
            "meta": self.meta,
            "conductors": [attrs.asdict(c) for c in self.conductors.values()],
            "leases": [{"name": name, **attrs.asdict(row)} for name, row in self.leases.items()],
            "next_ids": {
                "history": self.next_history_id,
                "notification": self.next_notification_id,
            },
        }

    @classmethod
    def from_json(cls, document: Any, version: int = CURRENT_VERSION) -> JsonState:
        """Rebuild the state; KeyError/TypeError/ValueError on a malformed document."""
        state = cls(read_version=version)
        names: set[str] = set()
        for values in document["nodes"]:
            if version < 2:
                values = {**_ADDED_IN_2, **values}
            node = node_from_json(values)
            _check_node(node, names)
            state.nodes[node.uuid] = node
        for row in document["history"]:
            state.history.append({key: row[key] for key in _HISTORY_KEYS})
        for values in document["notifications"]:
            notification = Notification(**values)
            state.notifications[notification.id] = notification
        state.meta = {str(k): str(v) for k, v in dict(document["meta"]).items()}
        for values in document.get("conductors", []) if version < 3 else document["conductors"]:
            conductor = Conductor(**values)
            state.conductors[conductor.host] = conductor
        for values in document.get("leases", []) if version < 3 else document["leases"]:
            values = dict(values)
            name = str(values.pop("name"))
            state.leases[name] = LeaseRow(**values)
        state.next_history_id = int(document["next_ids"]["history"])
        state.next_notification_id = int(document["next_ids"]["notification"])
        return state

    def find(self, name_or_uuid: str) -> Node:
        canonical = parse_uuid(name_or_uuid) if isinstance(name_or_uuid, str) else None
        if canonical is not None:
            node = self.nodes.get(canonical)
            if node is not None:
                return node
        else:
            for node in self.nodes.values():
                if node.name == name_or_uuid:
                    return node
        raise NodeNotFound(f"no node named or with uuid {name_or_uuid!r}")

    def name_taken(self, name: object) -> bool:
        return any(node.name == name for node in self.nodes.values())


@attrs.define
class Transaction:
    """One read-modify-write of the store: saved if ``dirty`` is set."""

    state: JsonState
    dirty: bool = False


def _check_node(node: Node, names: set[str]) -> None:
    """A hand-edited file must hold the same values the store itself would accept."""
    label = f"node {node.name!r}"
    try:
        validate_fields({f: getattr(node, f) for f in UPDATABLE_FIELDS}, UPDATABLE_FIELDS)
    except InvalidNode as exc:
        raise InvalidNode(f"{label}: {exc}") from None
    if parse_uuid(node.uuid) != node.uuid:
        raise InvalidNode(f"{label}: uuid: {node.uuid!r} is not a canonical UUID")
    if node.name in names:
        raise InvalidNode(f"{label}: name: appears twice")
    names.add(node.name)


def file_stamp(path: str) -> Stamp:
    """Identity of the file now at ``path``: inode, size, mtime, ctime."""
    return _stamp(os.stat(path))


def _stamp(stat: os.stat_result) -> Stamp:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@attrs.define
class Version:
    """The file version a store has cached, kept open.

    Holding it open means its inode number cannot be reused by a later version, so "same
    inode, size and times as the path now" reliably means "the file has not changed".
    """

    fd: int
    stamp: Stamp

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def remove_stale_temporaries(path: str) -> None:
    """Delete temporaries a killed writer left. Call only under the exclusive lock."""
    prefix = _temporary_prefix(path)
    directory = os.path.dirname(os.path.abspath(path))
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            if entry.startswith(prefix) and entry.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, entry))


def _corrupt(path: str, problem: str) -> StoreCorrupt:
    return StoreCorrupt(
        f"store {path} is damaged ({problem}); restore it from a backup or move it aside"
    )


def load_state(path: str) -> tuple[JsonState, Version]:
    """Parse the store file; StoreCorrupt / SchemaTooNew name the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"cannot read store {path}: {exc.strerror}") from exc
    version = Version(fd, _stamp(os.fstat(fd)))
    try:
        return _parse(path, _read_all(fd)), version
    except BaseException:
        version.close()
        raise


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(path: str, data: bytes) -> JsonState:
    if not data.strip():
        raise _corrupt(path, "empty file")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StoreCorrupt(f"{path} is a JSON file but not a powersync store")
    number = document.get("version")
    if not isinstance(number, int) or number < 1:
        raise _corrupt(path, f"invalid version {number!r}")
    if number > CURRENT_VERSION:
        raise SchemaTooNew(
            f"store {path} has format version {number}, written by a newer powersync; "
            f"this version understands up to {CURRENT_VERSION}. Upgrade powersync."
        )
    try:
        return JsonState.from_json(document, number)
    except InvalidNode as exc:
        raise _corrupt(path, str(exc)) from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _corrupt(path, f"unexpected content: {exc!r}") from exc


def save_state(path: str, state: JsonState) -> Version:
    """Replace the store file atomically and durably; returns the new version, held open."""
    data = json.dumps(state.to_json(), separators=(",", ":")).encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=directory)
    try:
        view = memoryview(data)  # mkstemp created the file 0600
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.replace(temporary, path)
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
        return Version(fd, _stamp(os.fstat(fd)))
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write store {path}: {exc.strerror}") from exc
        raise
