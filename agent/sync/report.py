"""What one sync or recovery pass did: per-node progress, results, store changes, summary."""

from __future__ import annotations

from typing import Any

import attrs

from agent.sync.policy import (
    Action,
    Decision,
    Observation,
    health_note,
    lock_is_held,
    needs_recovery,
    skip_reason,
)
from store import HistoryRecord, Lease, Node, NodeChange


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

    def headline(self) -> str:
        """The pass in one line (the daemon's INFO line, and systemd's STATUS=)."""
        s = self.summary()
        return (
            f"{self.kind} pass {self.cycle}: {s['nodes']} nodes, {s['ok']} read, "
            f"{s['failed']} failed, {s['changed']} changed, {s['forced']} forced, "
            f"{s['skipped']} skipped in {self.duration:.2f} s"
        )

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


@attrs.define
class NodeProgress:
    """One node's work in one pass; filled in as it goes so a deadline can finish it."""

    node: Node
    bmc: str
    extra: dict[str, object] = attrs.field(factory=dict)
    observation: Observation | None = None
    decision: Decision | None = None
    force_result: Decision | None = None
    skipped: str | None = None
    seen_at: float | None = None
    health: str | None = None  # as the read saw it (None: the driver reads none)


def fingerprint(node: Node) -> dict[str, object]:
    """The fields a decision depends on; a change is dropped if they moved meanwhile."""
    return {
        "power_state": node.power_state,
        "target_power_state": node.target_power_state,
        "maintenance": node.maintenance,
        "fault": node.fault,
    }


def node_result(progress: NodeProgress) -> NodeResult:
    node = progress.node
    observation = progress.observation
    if progress.skipped is not None or progress.decision is None:
        return NodeResult(
            node.name,
            node.uuid,
            node.power_state,
            observed=observation.power_state if observation else None,
            action="skip",
            new_state=node.power_state,
            detail=progress.skipped,
        )
    final = progress.force_result or progress.decision
    fields = progress.decision.fields
    new_state = fields.get("power_state", node.power_state)
    error = observation.error if observation else None
    if progress.force_result is not None and progress.force_result.action is Action.FORCE_FAILED:
        error = progress.force_result.message
    return NodeResult(
        node.name,
        node.uuid,
        node.power_state,
        observed=observation.power_state if observation else None,
        action=final.action.value,
        new_state=new_state if isinstance(new_state, str) or new_state is None else None,
        error=error,
    )


def node_change(
    progress: NodeProgress, holder: str, *, notify: bool = True, fence: Lease | None = None
) -> NodeChange | None:
    """What the pass writes for this node: only if the node is as the pass read it (its
    fingerprint) and no other holder has locked it, checked in apply()'s transaction.
    ``notify`` False ([nova] send_power_notifications = false) queues no Nova event."""
    node = progress.node
    if progress.skipped is not None or progress.decision is None:
        if progress.extra:
            return NodeChange(
                node.uuid,
                fields=dict(progress.extra),
                expected=fingerprint(node),
                holder=holder,
                fence=fence,
            )
        return None
    fields: dict[str, object] = dict(progress.decision.fields)
    for key, value in progress.extra.items():
        if key == "last_error" and fields.get(key) is not None:
            continue  # this cycle's own error is the more useful one
        fields[key] = value
    note = progress.decision.history
    if progress.force_result is not None:
        fields.update(progress.force_result.fields)
        note = note or progress.force_result.history
    if progress.seen_at is not None:
        fields["last_seen_at"] = progress.seen_at
    if progress.health is not None and progress.health != node.health:
        fields["health"] = progress.health
    health = health_note(node, progress.health)
    if health is not None:
        if note is None:
            note = health
        else:  # one history row for the change: the power note, with the health appended
            note = attrs.evolve(note, message=f"{note.message}; {health.message}")
    if not fields and note is None:
        return None
    history = None
    if note is not None:
        history = HistoryRecord(note.from_state, note.to_state, note.cause, note.message)
    return NodeChange(
        node.uuid,
        fields=fields,
        history=history,
        notification=progress.decision.notification if notify else None,
        expected=fingerprint(node),
        holder=holder,
        fence=fence,
    )


def prepare_pass(nodes: list[Node], kind: str, *, now: float) -> list[NodeProgress]:
    """Each node's work for a pass, with its reason to be left alone (``skipped``) or None.

    A target left by a power action whose lock is gone (its owner died) is cleared: the
    progress carries that change and a ``last_error`` saying so, for the caller to log.
    """
    work: list[NodeProgress] = []
    for node in nodes:
        progress = NodeProgress(node, bmc=f"{node.bmc_address}:{node.bmc_port}")
        work.append(progress)
        if kind == "recovery":
            if not needs_recovery(node, now=now):
                progress.skipped = "busy or not in power-failure maintenance"
            continue
        view = node
        if node.target_power_state is not None and not lock_is_held(node, now=now):
            message = (
                f"power action to {node.target_power_state} was abandoned "
                "(its lock is gone); clearing the target"
            )
            progress.extra = {"target_power_state": None, "last_error": message}
            view = attrs.evolve(node, target_power_state=None)
        progress.skipped = skip_reason(view, now=now)
    return work
