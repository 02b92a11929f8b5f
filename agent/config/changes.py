"""What differs between two configurations (a SIGHUP reload), computed from the attrs fields.

Nothing here knows an option: a new option shows up in a reload's line by itself. Fields
whose repr is off (passwords) are reported as changed, never with their values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final, TypeVar

import attrs

T = TypeVar("T")

# Options a running daemon cannot take: they keep their old value until a restart.
RESTART_ONLY: Final = frozenset(
    {
        "store.backend",
        "store.path",
        "store.dsn",
        "store.password_file",
        "store.password_env",
        "metrics.listen",
        "conductor.host",
        "conductor.heartbeat_interval",
        "conductor.heartbeat_timeout",
    }
)
_IGNORED: Final = frozenset({"source"})


@attrs.frozen
class Change:
    path: str  # "conductor.sync_power_state_interval", "nodes[n1].bmc_port"
    old: object
    new: object
    secret: bool = False

    def __str__(self) -> str:
        if self.secret:
            return f"{self.path} changed"
        return f"{self.path} {_show(self.old)} -> {_show(self.new)}"


def config_changes(old: object, new: object) -> list[Change]:
    """Every leaf field that differs, by dotted path (both must be the same attrs class)."""
    return list(_diff(old, new, "", secret=False))


def restart_needed(changes: Iterable[Change]) -> list[Change]:
    return [change for change in changes if change.path in RESTART_ONLY]


def keep_running(new: T, old: T, paths: Iterable[str]) -> T:
    """``new`` with the fields at ``paths`` (``section.field``) taken back from ``old``."""
    for path in paths:
        section, _, name = path.partition(".")
        part = attrs.evolve(getattr(new, section), **{name: getattr(getattr(old, section), name)})
        new = attrs.evolve(new, **{section: part})  # type: ignore[misc]
    return new


def _diff(old: object, new: object, prefix: str, *, secret: bool) -> Iterator[Change]:
    if old == new:
        return
    if attrs.has(type(old)) and type(old) is type(new):
        for field in attrs.fields(type(old)):  # type: ignore[arg-type]
            if not prefix and field.name in _IGNORED:
                continue
            yield from _diff(
                getattr(old, field.name),
                getattr(new, field.name),
                f"{prefix}.{field.name}" if prefix else field.name,
                secret=secret or not field.repr,
            )
        return
    if isinstance(old, tuple) and isinstance(new, tuple) and _named(old) and _named(new):
        # [[nodes]]: by name, so a node added, removed or changed is said as such.
        yield from _diff_named(old, new, prefix)
        return
    yield Change(prefix, old, new, secret)


def _named(items: tuple[Any, ...]) -> bool:
    """A tuple of attrs records with a ``name`` each (or an empty one)."""
    return all(attrs.has(type(item)) and hasattr(item, "name") for item in items)


def _diff_named(old: tuple[Any, ...], new: tuple[Any, ...], prefix: str) -> Iterator[Change]:
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    for name in sorted(before.keys() - after.keys()):
        yield Change(f"{prefix}[{name}]", "present", "removed")
    for name, item in after.items():
        if name not in before:
            yield Change(f"{prefix}[{name}]", "absent", "added")
        else:
            yield from _diff(before[name], item, f"{prefix}[{name}]", secret=False)


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple) and not value:
        return "()"
    return "none" if value is None else str(value)
