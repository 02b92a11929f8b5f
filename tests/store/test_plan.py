"""The pure parts shared by every backend: the apply plan, lease decisions, buckets."""

from __future__ import annotations

import pytest

from store import HistoryRecord, Lease, NodeChange, bucket_lease, bucket_of
from store.plan import GuardRow, LeaseRow, check_changes, lease_after_acquire, plan_apply

NODE_A = "11111111-1111-4111-8111-111111111111"
NODE_B = "22222222-2222-4222-8222-222222222222"
RECORD = HistoryRecord(None, "power on", "sync")
FREE = {"power_state": None, "target_power_state": None, "maintenance": False}
ROWS = {
    NODE_A: GuardRow("i-1", None, {**FREE, "fault": None, "reservation": None}),
    NODE_B: GuardRow(None, None, {**FREE, "fault": None, "reservation": None}),
}


def test_plan_merges_fields_and_keeps_only_the_last_notification_pending() -> None:
    changes = check_changes(
        [
            NodeChange(
                NODE_A,
                {"power_state": "power on"},
                HistoryRecord(None, "power on", "sync"),
                "power on",
            ),
            NodeChange(NODE_A, {"sync_failures": 2}, None, "power off"),
            NodeChange(NODE_B, {"power_state": "power off"}, None, "power off"),  # no instance
            NodeChange("33333333-3333-4333-8333-333333333333", {"sync_failures": 1}),
        ]
    )
    plan = plan_apply(changes, ROWS, 100.0)
    assert plan.updates == {
        NODE_A: {"power_state": "power on", "sync_failures": 2},
        NODE_B: {"power_state": "power off"},
    }
    assert [(row.node_uuid, row.at) for row in plan.history] == [(NODE_A, 100.0)]
    assert [(o.power_state, o.status) for o in plan.outbox] == [
        ("power on", "superseded"),
        ("power off", "pending"),
    ]
    assert plan.supersede == ["i-1"]
    assert plan.missing == ["33333333-3333-4333-8333-333333333333"] and plan.conflicts == []


def test_plan_fences_changes_of_a_lost_lease() -> None:
    held = Lease("bucket:1", "a", 4, 200.0)
    rows = {"bucket:1": LeaseRow("b", 5, 300.0)}
    changes = check_changes(
        [
            NodeChange(NODE_A, {"sync_failures": 1}, fence=held),
            NodeChange(NODE_B, {"sync_failures": 1}),
        ]
    )
    plan = plan_apply(changes, ROWS, 150.0, rows)
    assert plan.conflicts == [NODE_A] and plan.fenced == {"bucket:1": 1}
    assert list(plan.updates) == [NODE_B]
    current = plan_apply(changes, ROWS, 150.0, {"bucket:1": LeaseRow("a", 4, 200.0)})
    assert current.conflicts == [] and list(current.updates) == [NODE_A, NODE_B]
    expired = plan_apply(changes, ROWS, 200.0, {"bucket:1": LeaseRow("a", 4, 200.0)})
    assert expired.conflicts == [NODE_A]


def test_lease_decisions() -> None:
    assert lease_after_acquire("x", None, "a", 10.0, 5.0) == Lease("x", "a", 1, 15.0)
    assert lease_after_acquire("x", LeaseRow("b", 3, 11.0), "a", 10.0, 5.0) is None
    assert lease_after_acquire("x", LeaseRow("b", 3, 10.0), "a", 10.0, 5.0) == Lease(
        "x", "a", 4, 15.0
    )
    assert lease_after_acquire("x", LeaseRow(None, 7, None), "a", 10.0, 5.0) == Lease(
        "x", "a", 8, 15.0
    )


def test_buckets_are_stable_and_spread() -> None:
    assert bucket_of(NODE_A, 64) == int(NODE_A.replace("-", ""), 16) % 64
    assert bucket_of(NODE_A.upper(), 64) == bucket_of(NODE_A, 64)
    spread = {bucket_of(f"{i:08x}-0000-4000-8000-{i * 7919:012x}", 8) for i in range(200)}
    assert spread == set(range(8))
    assert bucket_lease(3) == "bucket:3"
    with pytest.raises(ValueError, match="buckets"):
        bucket_of(NODE_A, 0)
