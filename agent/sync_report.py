"""What one sync or recovery pass did: per-node results and the cycle summary."""

from __future__ import annotations

from typing import Any

import attrs

from agent.policy import Action


@attrs.frozen
class NodeResult:
    """What happened to one node in one cycle (the per-node line of ``sync --once``)."""

    name: str
    uuid: str
    recorded: str | None
    observed: str | None = None
    action: str = "skip"
    new_state: str | None = None
    error: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class CycleReport:
    cycle: int
    kind: str  # "sync" | "recovery"
    started_at: float  # wall clock
    duration: float
    results: tuple[NodeResult, ...]
    applied: bool = True
    dropped: tuple[str, ...] = ()  # node names whose change was dropped (changed meanwhile)

    def count(self, *actions: Action | str) -> int:
        names = {a.value if isinstance(a, Action) else a for a in actions}
        return sum(1 for result in self.results if result.action in names)

    def summary(self) -> dict[str, Any]:
        failed = self.count(
            Action.READ_FAILED, Action.FORCE_FAILED, Action.MAINTENANCE, Action.STILL_FAILING
        )
        read_ok = sum(1 for r in self.results if r.observed is not None)
        return {
            "cycle": self.cycle,
            "kind": self.kind,
            "started_at": self.started_at,
            "duration": round(self.duration, 6),
            "nodes": len(self.results),
            "ok": read_ok,
            "failed": failed,
            "changed": sum(1 for r in self.results if r.new_state != r.recorded and r.observed),
            "forced": self.count(Action.FORCED),
            "skipped": self.count("skip"),
            "maintenance": self.count(Action.MAINTENANCE),
            "recovered": self.count(Action.RECOVERED),
            "applied": self.applied,
            "dropped": len(self.dropped),
        }
