"""The two backends are interchangeable: random operation sequences give identical results.

Hypothesis draws a sequence of store calls (including invalid ones); both backends run it on
real files, and every return value, every exception type and the final contents must match.
Node uuids are random per backend, so results are compared with uuids replaced by names.
"""

from __future__ import annotations

import tempfile
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from store import HistoryRecord, NodeChange, Store, StoreError, open_store
from tests.store.helpers import INSTANCE, INSTANCE_2, T0

NAMES = ("a", "b", "c")
HOLDERS = ("daemon", "cli")
STATES = (None, "power on", "power off", "power on", "power off", "rebooting", "error", "bogus")

# Time mostly moves forward: run() adds 2 s per step to this jitter (so small reorderings
# happen too). Locks last 30 s, prune drops what is older than 20 s.
times = st.integers(min_value=0, max_value=3)
names = st.sampled_from(NAMES)

applies = st.tuples(
    st.just("apply"),
    st.lists(
        st.tuples(
            names,
            st.sampled_from(STATES),
            st.booleans(),
            st.sampled_from([None, "power on", "power off"]),
        ),
        max_size=4,
    ),
    st.just(None),
    times,
)
outbox = st.tuples(
    st.just("outbox"),
    st.sampled_from(["deliver", "defer", "drop"]),
    st.integers(0, 3),
    times,
)
locks = st.tuples(
    st.just("lock"),
    names,
    st.tuples(st.sampled_from(["acquire", "renew", "release"]), st.sampled_from(HOLDERS)),
    times,
)
# Weighted: state changes and the outbox are what the backends must agree on most.
operations = st.sampled_from(
    [
        applies,
        applies,
        applies,
        outbox,
        outbox,
        locks,
        locks,
        st.tuples(st.just("add"), names, st.sampled_from([INSTANCE, INSTANCE_2, None]), times),
        st.tuples(
            st.just("add_many"), st.lists(names, min_size=1, max_size=3), st.just(None), times
        ),
        st.tuples(
            st.just("update"),
            names,
            st.sampled_from(
                [
                    {"maintenance": True, "fault": "power failure"},
                    {"maintenance": False, "fault": None},
                    {"instance_uuid": INSTANCE},
                    {"instance_uuid": None},
                    {"bmc_port": 0},
                    {"name": "a"},
                ]
            ),
            times,
        ),
        st.tuples(st.just("delete"), names, st.just(None), times),
        st.tuples(st.just("prune"), st.just(None), st.just(None), times),
    ]
).flatmap(lambda strategy: strategy)


def run(store: Store, step: int, operation: tuple[Any, ...]) -> object:
    kind, first, second, jitter = operation
    now = T0 + 2 * step + jitter
    uuids = {node.name: node.uuid for node in store.list_nodes()}

    def uuid_of(name: str) -> str:
        # An unknown node still gets a well-formed uuid, so both backends see the same input.
        return uuids.get(name, "00000000-0000-4000-8000-000000000000")

    try:
        if kind == "add":
            return view_node(
                store.add_node(
                    name=first,
                    bmc_address="127.0.0.1",
                    bmc_username="admin",
                    bmc_password="pw",
                    instance_uuid=second,
                    now=now,
                )
            )
        if kind == "add_many":
            specs = [
                {"name": n, "bmc_address": "::1", "bmc_username": "u", "bmc_password": ""}
                for n in first
            ]
            return [view_node(n) for n in store.add_nodes(specs, now=now)]
        if kind == "update":
            return view_node(store.update_node(first, now=now, **second))
        if kind == "delete":
            return store.delete_node(first, now=now)
        if kind == "lock":
            action, holder = second
            if action == "acquire":
                return store.acquire_lock(uuid_of(first), holder, ttl=30, now=now)
            if action == "renew":
                return store.renew_lock(uuid_of(first), holder, ttl=30, now=now)
            return store.release_lock(uuid_of(first), holder)
        if kind == "apply":
            changes = [
                NodeChange(
                    uuid_of(name),
                    {"power_state": state, "sync_failures": 1},
                    HistoryRecord(None, state, "sync") if with_history else None,
                    notification,
                )
                for name, state, with_history, notification in first
            ]
            return store.apply(changes, now=now)
        if kind == "outbox":
            due = store.due_notifications(now=now, limit=10)
            if second >= len(due):
                return None
            target = due[second].id
            if first == "deliver":
                return store.mark_delivered([target])
            if first == "defer":
                return store.defer_notification(target, next_attempt_at=now + 5, error="503")
            return store.mark_dropped(target, "gone")
        return store.prune(before=now - 20)
    except StoreError as exc:
        return type(exc).__name__


def view_node(node: Any) -> dict[str, Any]:
    values = node.masked()
    del values["uuid"]
    return values


def snapshot(store: Store) -> object:
    names = {node.uuid: node.name for node in store.list_nodes()}
    history = [
        (h.id, names[h.node_uuid], h.node_name, h.at, h.from_state, h.to_state, h.cause)
        for h in store.history(limit=1000)
    ]
    notifications = []
    for notification_id in range(1, 200):
        try:
            n = store.get_notification(notification_id)
        except StoreError:
            continue
        notifications.append(
            (
                (n.id, names[n.node_uuid], n.instance_uuid, n.power_state, n.attempts, n.status),
                (n.created_at, n.next_attempt_at, n.last_error),
            )
        )
    return (
        [view_node(node) for node in store.list_nodes()],
        history,
        notifications,
        store.notification_counts(),
        store.next_notification_at(),
    )


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(operations, min_size=5, max_size=30))
def test_backends_agree(sequence: list[tuple[Any, ...]]) -> None:
    with (
        tempfile.TemporaryDirectory() as directory,
        open_store(f"{directory}/s.sqlite", "sqlite") as sqlite_store,
        open_store(f"{directory}/s.json", "json") as json_store,
    ):
        # Start from a populated store so most operations have something to act on.
        setup = [("add", "a", INSTANCE, 0), ("add", "b", INSTANCE_2, 0), ("add", "c", None, 0)]
        for step, operation in enumerate(setup + sequence):
            got_sqlite = run(sqlite_store, step, operation)
            got_json = run(json_store, step, operation)
            assert got_sqlite == got_json, (step, operation)
            # Compare everything after every step, before a later prune can hide a difference.
            state = snapshot(sqlite_store)
            assert state == snapshot(json_store), (step, operation)
            event(f"{operation[0]} -> {type(got_sqlite).__name__}")
        event(f"outbox rows ever: {min(state[3]['pending'] + len(state[2]), 3)}+")  # type: ignore[index]
