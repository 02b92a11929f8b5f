"""The store contract: every test here runs against both backends (SQLite and JSON)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from store import (
    DuplicateNode,
    HistoryRecord,
    InvalidNode,
    LeaseLost,
    NodeChange,
    NodeLocked,
    NodeNotFound,
    Store,
    StoreError,
    open_store,
)
from tests.store.conftest import Opener
from tests.store.helpers import FILE_BACKENDS, INSTANCE, INSTANCE_2, PASSWORD, T0, add

# --- inventory ----------------------------------------------------------------------------


def test_add_then_get_by_name_and_uuid(store: Store) -> None:
    node = add(store, instance_uuid=INSTANCE.upper())
    assert node.bmc_port == 6230
    assert node.cipher_suites == (17, 3)
    assert node.privilege == "administrator"
    assert node.instance_uuid == INSTANCE  # normalised to the canonical lower-case form
    assert node.power_state is None
    assert node.maintenance is False
    assert node.reservation is None
    assert node.sync_failures == 0
    assert node.created_at == node.updated_at == T0
    assert store.get_node("node-1") == node
    assert store.get_node(node.uuid) == node
    assert store.get_node(node.uuid.upper()) == node


def test_defaults_and_explicit_inventory(store: Store) -> None:
    node = store.add_node(
        name="n",
        bmc_address="bmc-7.rack2.example.org",
        bmc_username="root",
        bmc_password="",
        cipher_suites=[3],
        privilege="operator",
        session_mode="per-cycle",
    )
    assert node.bmc_port == 623
    assert node.cipher_suites == (3,)
    assert node.privilege == "operator"
    assert node.session_mode == "per-cycle"
    assert node.instance_uuid is None


def test_unknown_node(store: Store) -> None:
    with pytest.raises(NodeNotFound, match="nope"):
        store.get_node("nope")
    with pytest.raises(NodeNotFound):
        store.get_node("00000000-0000-4000-8000-000000000000")


def test_duplicate_name_refused(store: Store) -> None:
    add(store)
    with pytest.raises(DuplicateNode, match="node-1"):
        add(store, bmc_address="::1")
    assert len(store.list_nodes()) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", " padded"),
        ("name", "tab\tname"),
        ("name", "6a0c3f4e-2b8d-4a59-9c61-0d5d8f4e7a11"),
        ("bmc_address", ""),
        ("bmc_address", "300.1.1.1"),
        ("bmc_address", "bad_host!"),
        ("bmc_address", "-leading.example"),
        ("bmc_address", "a" * 64 + ".example"),
        ("bmc_port", 0),
        ("bmc_port", 65536),
        ("bmc_port", "623"),
        ("bmc_port", True),
        ("bmc_username", ""),
        ("bmc_username", "u" * 256),
        ("bmc_username", "é" * 128),  # 256 bytes in UTF-8
        ("bmc_username", "ad\x00min"),
        ("bmc_password", "p" * 1025),
        ("bmc_password", "pass\x00word"),
        ("bmc_password", None),
        ("cipher_suites", []),
        ("cipher_suites", [17, 3, 17]),
        ("cipher_suites", [256]),
        ("cipher_suites", [-1]),
        ("cipher_suites", [True]),
        ("cipher_suites", "17"),
        ("privilege", ""),
        ("privilege", "two words"),
        ("privilege", "p" * 33),
        ("privilege", 4),
        ("driver", ""),
        ("driver", "Redfish"),
        ("driver", "red fish"),
        ("driver", "d" * 33),
        ("driver", None),
        ("driver_info", "redfish_system_id=/x"),
        ("driver_info", {"Bad Key": 1}),
        ("driver_info", {"redfish_system_id": ["a"]}),
        ("driver_info", {"redfish_system_id": "x" * 1025}),
        ("driver_info", {"ratio": float("nan")}),
        ("driver_info", {"redfish_password": "secret"}),  # secrets go in bmc_password
        ("driver_info", {f"k{i}": i for i in range(65)}),
        ("provision_state", ""),
        ("provision_state", "x" * 1025),
        ("provision_state", "line\nbreak"),
        ("provision_state", 3),
        ("instance_uuid", "not-a-uuid"),
        ("session_mode", "sometimes"),
    ],
)
def test_invalid_inventory_names_the_field(store: Store, field: str, value: Any) -> None:
    with pytest.raises(InvalidNode, match=f"^{field}[:.]") as raised:
        add(store, **{field: value})
    assert "secret" not in str(raised.value).replace("a secret", "")
    assert store.list_nodes() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        # Protocol limits are the driver's business, not the store's (IPMI: 16/20 bytes,
        # suites 3 and 17, three privilege words).
        ("bmc_username", "u" * 17),
        ("bmc_username", "é" * 127),
        ("bmc_password", "p" * 21),
        ("bmc_password", "p" * 1024),
        ("cipher_suites", [0]),
        ("cipher_suites", [1, 3, 255]),
        ("privilege", "callback"),
        ("privilege", "ADMINISTRATOR"),
        ("driver", "redfish"),
        ("driver", "idrac-redfish_2"),
        ("provision_state", "deploy wait"),
    ],
)
def test_store_checks_only_shape(store: Store, field: str, value: Any) -> None:
    node = add(store, **{field: value})
    expected = tuple(value) if field == "cipher_suites" else value
    assert getattr(node, field) == expected
    assert getattr(store.get_node(node.uuid), field) == expected


def test_driver_fields(store: Store) -> None:
    plain = add(store, "plain")
    assert (plain.driver, dict(plain.driver_info), plain.provision_state) == ("ipmi", {}, None)
    assert plain.health is None
    info = {
        "redfish_system_id": "/redfish/v1/Systems/1",
        "redfish_verify_ca": False,
        "redfish_port": 8443,
        "timeout": 2.5,
        "ipmi_password_file": "/etc/powersync/bmc.pw",
    }
    node = add(store, "rf", driver="redfish", driver_info=info, provision_state="active")
    again = store.get_node("rf")
    assert again == node and hash(again) == hash(node)
    assert again.driver == "redfish" and dict(again.driver_info) == info
    assert again.driver_info["redfish_verify_ca"] is False
    assert again.driver_info["redfish_port"] == 8443 and again.driver_info["timeout"] == 2.5
    assert again.provision_state == "active"
    assert again.masked()["driver_info"] == info
    with pytest.raises(TypeError):
        again.driver_info["timeout"] = 3  # type: ignore[index]
    updated = store.update_node(
        "rf", driver_info={"redfish_system_id": "/x"}, provision_state="deploy wait", now=T0 + 1
    )
    assert dict(updated.driver_info) == {"redfish_system_id": "/x"}
    assert store.get_node("rf").provision_state == "deploy wait"
    upserted = store.upsert_node(
        name="rf", bmc_address="::1", bmc_username="u", bmc_password="p", driver="redfish"
    )
    assert dict(upserted.driver_info) == {} and upserted.provision_state is None
    [bulk] = store.add_nodes(
        [
            {
                "name": "bulk",
                "bmc_address": "::1",
                "bmc_username": "u",
                "bmc_password": "p",
                "driver": "redfish",
                "driver_info": {"redfish_system_id": "/y"},
            }
        ]
    )
    assert store.get_node("bulk").driver_info == {"redfish_system_id": "/y"} == bulk.driver_info


def test_health_is_a_state_field_set_by_apply(store: Store) -> None:
    node = add(store)
    store.apply([NodeChange(node.uuid, {"health": "fan 2 failed, psu 1 lost"})], now=T0 + 1)
    assert store.get_node(node.uuid).health == "fan 2 failed, psu 1 lost"
    store.apply([NodeChange(node.uuid, {"health": "ok"})], now=T0 + 2)
    assert store.get_node(node.uuid).health == "ok"
    with pytest.raises(InvalidNode, match=r"^health:"):
        store.apply([NodeChange(node.uuid, {"health": ""})])
    with pytest.raises(InvalidNode, match=r"^driver:"):
        store.apply([NodeChange(node.uuid, {"driver": "redfish"})])  # inventory, not state


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "::1", "fe80::1%eth0", "bmc01", "bmc01.example.org.", "Node-7.lab"]
)
def test_valid_addresses(store: Store, address: str) -> None:
    assert add(store, bmc_address=address).bmc_address == address


def test_list_filters_and_order(store: Store) -> None:
    add(store, "c-node", instance_uuid=INSTANCE)
    add(store, "a-node")
    b = add(store, "b-node", instance_uuid=INSTANCE_2)
    store.update_node(b.uuid, maintenance=True, fault="power failure", maintenance_reason="x")
    assert [n.name for n in store.list_nodes()] == ["a-node", "b-node", "c-node"]
    assert [n.name for n in store.list_nodes(maintenance=True)] == ["b-node"]
    assert [n.name for n in store.list_nodes(maintenance=False)] == ["a-node", "c-node"]
    assert [n.name for n in store.list_nodes(fault="power failure")] == ["b-node"]
    assert [n.name for n in store.list_nodes(has_instance=True)] == ["b-node", "c-node"]
    assert [n.name for n in store.list_nodes(has_instance=False)] == ["a-node"]
    assert store.list_nodes(maintenance=False, has_instance=False)[0].name == "a-node"


def test_update_node(store: Store) -> None:
    node = add(store)
    updated = store.update_node(
        "node-1",
        name="renamed",
        bmc_port=623,
        cipher_suites=(3,),
        instance_uuid=INSTANCE,
        maintenance=True,
        maintenance_reason="disk swap",
        now=T0 + 5,
    )
    assert updated.uuid == node.uuid
    assert (updated.name, updated.bmc_port, updated.cipher_suites) == ("renamed", 623, (3,))
    assert updated.maintenance is True and updated.maintenance_reason == "disk swap"
    assert updated.updated_at == T0 + 5 and updated.created_at == T0
    assert store.get_node(node.uuid) == updated
    with pytest.raises(NodeNotFound):
        store.get_node("node-1")


def test_update_node_refuses_bad_values_and_unknown_fields(store: Store) -> None:
    add(store)
    other = add(store, "node-2")
    with pytest.raises(DuplicateNode, match="node-1"):
        store.update_node(other.uuid, name="node-1")
    with pytest.raises(InvalidNode, match=r"^bmc_port:"):
        store.update_node("node-1", bmc_port=-1)
    with pytest.raises(InvalidNode, match=r"^uuid:"):
        store.update_node("node-1", uuid="x")
    with pytest.raises(InvalidNode, match=r"^reservation:"):
        store.update_node("node-1", reservation="me")
    with pytest.raises(NodeNotFound):
        store.update_node("ghost", maintenance=True)
    assert store.get_node("node-2") == other


def test_upsert_adds_then_updates_inventory_keeping_state(store: Store) -> None:
    first = store.upsert_node(
        name="static", bmc_address="127.0.0.1", bmc_username="admin", bmc_password="a", now=T0
    )
    store.apply(
        [NodeChange(first.uuid, {"power_state": "power on", "sync_failures": 2})], now=T0 + 1
    )
    store.acquire_lock(first.uuid, "daemon", ttl=60, now=T0 + 1)
    again = store.upsert_node(
        name="static", bmc_address="::1", bmc_username="admin", bmc_password="b", now=T0 + 2
    )
    assert again.uuid == first.uuid
    assert again.bmc_address == "::1" and again.bmc_password == "b"
    assert again.power_state == "power on" and again.sync_failures == 2
    assert again.reservation == "daemon"
    assert again.created_at == T0 and again.updated_at == T0 + 2
    unchanged = store.upsert_node(
        name="static", bmc_address="::1", bmc_username="admin", bmc_password="b", now=T0 + 3
    )
    assert unchanged == again
    assert len(store.list_nodes()) == 1


IRONIC_UUID = "8c1a7b6e-4f0d-4a4e-9c52-0d3e6f1b2a77"


def test_a_given_uuid_is_kept_and_must_be_free(store: Store) -> None:
    base = {"bmc_address": "::1", "bmc_username": "admin", "bmc_password": "pw"}
    kept = store.upsert_node(name="ironic-1", uuid=IRONIC_UUID.upper(), **base, now=T0)
    assert kept.uuid == IRONIC_UUID  # canonical form, as instance_uuid
    assert store.get_node(IRONIC_UUID).name == "ironic-1"
    # An existing node keeps its identity whatever uuid a later upsert brings.
    again = store.upsert_node(name="ironic-1", uuid=INSTANCE, **base, now=T0 + 1)
    assert again.uuid == IRONIC_UUID
    with pytest.raises(DuplicateNode, match=f"uuid {IRONIC_UUID} is already node 'ironic-1'"):
        store.upsert_node(name="other", uuid=IRONIC_UUID, **base)
    with pytest.raises(DuplicateNode, match=IRONIC_UUID):
        store.add_node(name="other", uuid=IRONIC_UUID, **base)
    with pytest.raises(DuplicateNode, match=IRONIC_UUID):
        store.add_nodes([{"name": "other", "uuid": IRONIC_UUID, **base}])
    with pytest.raises(InvalidNode, match=r"^uuid: must be a UUID"):
        store.upsert_node(name="other", uuid="not-a-uuid", **base)
    with pytest.raises(DuplicateNode, match="twice in the batch"):
        store.add_nodes([{"name": f"x{i}", "uuid": INSTANCE, **base} for i in range(2)])
    added = store.add_node(name="given", uuid=INSTANCE_2, **base)
    assert added.uuid == INSTANCE_2 and store.get_node(INSTANCE_2) == added
    assert sorted(n.name for n in store.list_nodes()) == ["given", "ironic-1"]


def test_delete_cascades_and_is_refused_while_locked(store: Store) -> None:
    node = add(store, instance_uuid=INSTANCE)
    keep = add(store, "node-2", instance_uuid=INSTANCE_2)
    change = NodeChange(
        node.uuid, {"power_state": "power on"}, HistoryRecord(None, "power on", "sync"), "power on"
    )
    other = NodeChange(
        keep.uuid,
        {"power_state": "power off"},
        HistoryRecord(None, "power off", "sync"),
        "power off",
    )
    store.apply([change, other], now=T0)
    assert store.acquire_lock(node.uuid, "cli-1", ttl=30, now=T0)
    with pytest.raises(NodeLocked, match=r"node-1.*cli-1"):
        store.delete_node("node-1", now=T0 + 10)
    assert store.get_node("node-1").uuid == node.uuid
    # Once the reservation has expired the node can go.
    store.delete_node("node-1", now=T0 + 31)
    with pytest.raises(NodeNotFound):
        store.get_node(node.uuid)
    assert [h.node_uuid for h in store.history()] == [keep.uuid]
    assert [n.node_uuid for n in store.due_notifications(now=T0)] == [keep.uuid]
    with pytest.raises(NodeNotFound):
        store.delete_node("node-1")


# --- locks ------------------------------------------------------------------------------


def test_lock_compare_and_set(store: Store) -> None:
    node = add(store)
    assert store.acquire_lock(node.uuid, "daemon", ttl=10, now=T0)
    locked = store.get_node(node.uuid)
    assert (locked.reservation, locked.reservation_expires_at) == ("daemon", T0 + 10)
    assert not store.acquire_lock(node.uuid, "cli", ttl=10, now=T0 + 5)
    assert not store.acquire_lock(node.uuid, "daemon", ttl=10, now=T0 + 5)  # not re-entrant
    assert not store.release_lock(node.uuid, "cli")
    assert not store.renew_lock(node.uuid, "cli", ttl=10, now=T0 + 5)
    assert store.renew_lock(node.uuid, "daemon", ttl=10, now=T0 + 9)
    assert store.get_node(node.uuid).reservation_expires_at == T0 + 19
    assert not store.acquire_lock(node.uuid, "cli", ttl=10, now=T0 + 15)
    assert store.release_lock(node.uuid, "daemon")
    assert not store.release_lock(node.uuid, "daemon")
    assert store.get_node(node.uuid).reservation is None
    assert store.acquire_lock(node.uuid, "cli", ttl=10, now=T0 + 15)


def test_locks_take_a_node_name_as_well_as_its_uuid(store: Store) -> None:
    node = add(store)
    assert store.acquire_lock(node.name, "cli", ttl=10, now=T0)
    assert store.renew_lock(node.name, "cli", ttl=10, now=T0 + 5)
    assert store.get_node(node.uuid).reservation_expires_at == T0 + 15
    assert store.release_lock(node.name, "cli")
    assert store.get_node(node.uuid).reservation is None
    assert not store.renew_lock("no-such-node", "cli", ttl=10, now=T0)
    assert not store.release_lock("no-such-node", "cli")


def test_expired_lock_taken_over_and_logged(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    node = add(store)
    assert store.acquire_lock(node.uuid, "daemon@host:42", ttl=10, now=T0)
    with caplog.at_level(logging.WARNING, logger="store"):
        assert store.acquire_lock(node.uuid, "cli@host:77", ttl=10, now=T0 + 10)
    takeovers = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    assert len(takeovers) == 1
    assert "node-1" in takeovers[0] and "daemon@host:42" in takeovers[0]
    assert store.get_node(node.uuid).reservation == "cli@host:77"
    # The old holder has lost it: it can neither renew nor release.
    assert not store.renew_lock(node.uuid, "daemon@host:42", ttl=10, now=T0 + 11)
    assert not store.release_lock(node.uuid, "daemon@host:42")


def test_lock_errors(store: Store) -> None:
    node = add(store)
    with pytest.raises(NodeNotFound):
        store.acquire_lock("00000000-0000-4000-8000-000000000000", "me", ttl=1)
    with pytest.raises(InvalidNode, match="ttl"):
        store.acquire_lock(node.uuid, "me", ttl=0)
    with pytest.raises(InvalidNode, match="ttl"):
        store.acquire_lock(node.uuid, "me", ttl=float("inf"))
    with pytest.raises(StoreError, match="now"):
        store.acquire_lock(node.uuid, "me", ttl=5, now=float("nan"))
    with pytest.raises(InvalidNode, match="holder"):
        store.acquire_lock(node.uuid, "", ttl=5)
    assert store.get_node(node.uuid).reservation is None


def test_release_locks_held_by(store: Store) -> None:
    nodes = [add(store, f"n{i}") for i in range(3)]
    store.acquire_lock(nodes[0].uuid, "daemon", ttl=60, now=T0)
    store.acquire_lock(nodes[1].uuid, "daemon", ttl=60, now=T0)
    store.acquire_lock(nodes[2].uuid, "cli", ttl=60, now=T0)
    assert store.release_locks_held_by("daemon") == 2
    assert [n.reservation for n in store.list_nodes()] == [None, None, "cli"]
    assert store.release_locks_held_by("daemon") == 0


# --- apply, history, outbox ---------------------------------------------------------------


def test_apply_writes_fields_history_and_outbox(store: Store) -> None:
    node = add(store, instance_uuid=INSTANCE)
    store.apply(
        [
            NodeChange(
                node.uuid,
                {"power_state": "power on", "last_seen_at": T0 + 1, "sync_failures": 0},
                HistoryRecord(None, "power on", "sync", "first observation"),
                "power on",
            )
        ],
        now=T0 + 1,
    )
    after = store.get_node("node-1")
    assert after.power_state == "power on"
    assert after.last_seen_at == T0 + 1
    assert after.updated_at == T0 + 1
    [entry] = store.history("node-1")
    assert (entry.node_uuid, entry.node_name, entry.at) == (node.uuid, "node-1", T0 + 1)
    assert (entry.from_state, entry.to_state, entry.cause) == (None, "power on", "sync")
    assert entry.message == "first observation"
    [note] = store.due_notifications(now=T0 + 1)
    assert (note.node_uuid, note.instance_uuid, note.power_state) == (
        node.uuid,
        INSTANCE,
        "power on",
    )
    assert (note.status, note.attempts, note.next_attempt_at) == ("pending", 0, T0 + 1)
    assert store.notification_counts() == {
        "pending": 1,
        "delivered": 0,
        "dropped": 0,
        "superseded": 0,
    }


def test_apply_compare_and_set_skips_moved_or_locked_nodes_and_reports_them(
    store: Store,
) -> None:
    moved = add(store, name="moved", instance_uuid=INSTANCE)
    locked = add(store, name="locked")
    expired = add(store, name="expired")
    mine = add(store, name="mine")
    plain = add(store, name="plain")
    # Between the pass's read and its write: an operator edit, another holder's lock, an
    # expired lock of someone else, and our own lock.
    store.update_node("moved", maintenance=True)
    assert store.acquire_lock(locked.uuid, "other:1", ttl=60, now=T0)
    assert store.acquire_lock(expired.uuid, "other:1", ttl=5, now=T0)
    assert store.acquire_lock(mine.uuid, "sync:1", ttl=60, now=T0)
    as_read = {"power_state": None, "target_power_state": None, "maintenance": False}
    as_read["fault"] = None

    def change(uuid: str, **extra: Any) -> NodeChange:
        return NodeChange(
            uuid,
            {"power_state": "power on"},
            HistoryRecord(None, "power on", "sync", "first observation"),
            "power on",
            **extra,
        )

    conflicts = store.apply(
        [
            change(moved.uuid, expected=as_read, holder="sync:1"),
            change(locked.uuid, expected=as_read, holder="sync:1"),
            change(expired.uuid, expected=as_read, holder="sync:1"),
            change(mine.uuid, expected=as_read, holder="sync:1"),
            change(plain.uuid),  # no guard: written whatever happened
        ],
        now=T0 + 10,
    )
    assert sorted(conflicts) == sorted([moved.uuid, locked.uuid])
    power = {name: store.get_node(name).power_state for name in ("moved", "locked")}
    assert power == {"moved": None, "locked": None}
    for name in ("expired", "mine", "plain"):
        assert store.get_node(name).power_state == "power on"
    # Nothing of a skipped change is written: no history row, no notification.
    assert store.history("moved") == []
    assert store.notification_counts()["pending"] == 0
    assert {entry.node_name for entry in store.history()} == {"expired", "mine", "plain"}


def test_apply_refuses_an_expectation_on_a_field_it_cannot_guard(store: Store) -> None:
    node = add(store)
    with pytest.raises(InvalidNode, match="last_seen_at: cannot be expected"):
        store.apply([NodeChange(node.uuid, {"sync_failures": 1}, expected={"last_seen_at": 0})])
    assert store.get_node(node.uuid).sync_failures == 0


def test_notification_only_for_nodes_with_an_instance(store: Store) -> None:
    bare = add(store, "bare")
    store.apply([NodeChange(bare.uuid, {"power_state": "power off"}, None, "power off")], now=T0)
    assert store.get_node("bare").power_state == "power off"
    assert store.due_notifications(now=T0) == []
    assert store.next_notification_at() is None


def test_only_on_and_off_are_notified(store: Store) -> None:
    node = add(store, instance_uuid=INSTANCE)
    with pytest.raises(InvalidNode, match="notification"):
        store.apply([NodeChange(node.uuid, {}, None, "rebooting")])
    assert store.notification_counts()["pending"] == 0


def test_newer_notification_supersedes_pending_ones(store: Store) -> None:
    node = add(store, instance_uuid=INSTANCE)
    other = add(store, "other", instance_uuid=INSTANCE_2)
    store.apply([NodeChange(node.uuid, {}, None, "power on")], now=T0)
    store.apply([NodeChange(other.uuid, {}, None, "power on")], now=T0 + 1)
    [first, _] = store.due_notifications(now=T0 + 1)
    store.mark_delivered([first.id])
    # Two more in one batch for the same instance: only the last stays pending.
    store.apply(
        [NodeChange(node.uuid, {}, None, "power off"), NodeChange(node.uuid, {}, None, "power on")],
        now=T0 + 2,
    )
    store.apply([NodeChange(node.uuid, {}, None, "power off")], now=T0 + 3)
    due = store.due_notifications(now=T0 + 10)
    assert [(n.instance_uuid, n.power_state, n.created_at) for n in due] == [
        (INSTANCE_2, "power on", T0 + 1),
        (INSTANCE, "power off", T0 + 3),
    ]
    assert store.notification_counts() == {
        "pending": 2,
        "delivered": 1,
        "dropped": 0,
        "superseded": 2,
    }
    assert store.get_notification(first.id).status == "delivered"


def test_batch_applies_changes_in_order(store: Store) -> None:
    node = add(store)
    store.apply(
        [
            NodeChange(node.uuid, {"power_state": "power on", "last_error": "x"}),
            NodeChange(node.uuid, {"power_state": "power off"}),
            NodeChange(node.uuid, {"sync_failures": 3}),
        ],
        now=T0,
    )
    after = store.get_node(node.uuid)
    assert (after.power_state, after.last_error, after.sync_failures) == ("power off", "x", 3)


def test_invalid_change_rejects_the_whole_batch(store: Store) -> None:
    good = add(store, instance_uuid=INSTANCE)
    batch = [
        NodeChange(good.uuid, {"power_state": "power on"}, HistoryRecord(None, "power on", "sync")),
        NodeChange(good.uuid, {"power_state": "on"}),
    ]
    with pytest.raises(InvalidNode, match=r"^power_state:"):
        store.apply(batch)
    for bad in (
        NodeChange(good.uuid, {"last_seen_at": float("nan")}),
        NodeChange(good.uuid, {"bmc_password": "x"}),  # inventory is not settable by apply
        NodeChange(good.uuid, {"reservation": "x"}),
        NodeChange(good.uuid, {"sync_failures": -1}),
        NodeChange(good.uuid, {"maintenance": "yes"}),
        NodeChange(good.uuid, {}, HistoryRecord(None, "power on", "because")),
    ):
        with pytest.raises(InvalidNode):
            store.apply([batch[0], bad])
    assert store.get_node(good.uuid).power_state is None
    assert store.history() == []


def test_change_for_a_deleted_node_is_skipped(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    node = add(store)
    ghost = "00000000-0000-4000-8000-000000000000"
    with caplog.at_level(logging.WARNING, logger="store"):
        store.apply(
            [
                NodeChange(ghost, {"power_state": "power on"}, HistoryRecord(None, None, "sync")),
                NodeChange(node.uuid, {"power_state": "power on"}),
            ]
        )
    assert store.get_node(node.uuid).power_state == "power on"
    assert any(ghost in r.getMessage() for r in caplog.records)
    assert store.history() == []


def test_history_newest_first_with_limit(store: Store) -> None:
    a = add(store, "a")
    b = add(store, "b")
    for i in range(5):
        store.apply(
            [
                NodeChange(a.uuid, {}, HistoryRecord("power off", "power on", "sync", f"a{i}")),
                NodeChange(b.uuid, {}, HistoryRecord("power on", "error", "max-retries", f"b{i}")),
            ],
            now=T0 + i,
        )
    assert [h.message for h in store.history(limit=3)] == ["b4", "a4", "b3"]
    assert [h.message for h in store.history("a", limit=2)] == ["a4", "a3"]
    assert [h.message for h in store.history(b.uuid)][-1] == "b0"
    assert len(store.history()) == 10
    with pytest.raises(NodeNotFound):
        store.history("ghost")


def test_outbox_lifecycle(store: Store) -> None:
    nodes = [add(store, f"n{i}", instance_uuid=u) for i, u in enumerate([INSTANCE, INSTANCE_2])]
    store.apply([NodeChange(nodes[0].uuid, {}, None, "power on")], now=T0)
    store.apply([NodeChange(nodes[1].uuid, {}, None, "power off")], now=T0 + 1)
    assert store.next_notification_at() == T0
    assert [n.instance_uuid for n in store.due_notifications(now=T0)] == [INSTANCE]
    assert len(store.due_notifications(now=T0 + 1)) == 2
    assert len(store.due_notifications(now=T0 + 1, limit=1)) == 1
    first, second = store.due_notifications(now=T0 + 1)

    store.defer_notification(first.id, next_attempt_at=T0 + 60, error="503 from nova")
    deferred = store.get_notification(first.id)
    assert (deferred.attempts, deferred.next_attempt_at) == (1, T0 + 60)
    assert deferred.last_error == "503 from nova"
    assert [n.id for n in store.due_notifications(now=T0 + 59)] == [second.id]
    assert store.next_notification_at() == T0 + 1

    store.mark_dropped(second.id, "instance not found")
    dropped = store.get_notification(second.id)
    assert (dropped.status, dropped.last_error) == ("dropped", "instance not found")
    assert store.next_notification_at() == T0 + 60
    assert [n.id for n in store.due_notifications(now=T0 + 60)] == [first.id]

    store.mark_delivered([first.id])
    assert store.get_notification(first.id).status == "delivered"
    assert store.get_notification(first.id).attempts == 2
    assert store.due_notifications(now=T0 + 1000) == []
    assert store.next_notification_at() is None
    assert store.notification_counts() == {
        "pending": 0,
        "delivered": 1,
        "dropped": 1,
        "superseded": 0,
    }
    # Finished rows stay finished.
    store.defer_notification(first.id, next_attempt_at=T0, error="late")
    store.mark_dropped(first.id, "late")
    assert store.get_notification(first.id).status == "delivered"
    with pytest.raises(StoreError, match="999"):
        store.mark_dropped(999, "x")
    with pytest.raises(StoreError, match="999"):
        store.get_notification(999)


def test_meta(store: Store) -> None:
    assert store.get_meta("last_cycle") is None
    store.set_meta("last_cycle", '{"nodes": 3}')
    store.set_meta("last_cycle", '{"nodes": 4}')
    assert store.get_meta("last_cycle") == '{"nodes": 4}'


# --- files, persistence, secrets ---------------------------------------------------------


def test_everything_survives_reopen(opener: Opener) -> None:
    with opener() as first:
        node = add(first, instance_uuid=INSTANCE, cipher_suites=[3, 17], session_mode="persistent")
        first.apply(
            [
                NodeChange(
                    node.uuid,
                    {"power_state": "power on", "maintenance": True, "fault": "power failure"},
                    HistoryRecord("power off", "power on", "recovery", "back"),
                    "power on",
                )
            ],
            now=T0 + 1,
        )
        first.acquire_lock(node.uuid, "daemon", ttl=100, now=T0)
        first.set_meta("k", "v")
        expected = (first.get_node(node.uuid), first.history(), first.due_notifications(now=T0 + 1))
    with opener() as second:
        got = (second.get_node(node.uuid), second.history(), second.due_notifications(now=T0 + 1))
        assert got == expected
        assert second.get_meta("k") == "v"
        assert got[0].cipher_suites == (3, 17)


def test_two_handles_on_one_store_see_each_other(opener: Opener) -> None:
    with opener() as daemon, opener() as cli:
        node = add(daemon)
        assert cli.get_node("node-1") == node
        assert cli.acquire_lock(node.uuid, "cli", ttl=30, now=T0)
        assert not daemon.acquire_lock(node.uuid, "daemon", ttl=30, now=T0)
        cli.update_node("node-1", maintenance=True, now=T0)
        assert daemon.get_node("node-1").maintenance is True
        daemon.apply([NodeChange(node.uuid, {"power_state": "power off"})])
        assert cli.get_node(node.uuid).power_state == "power off"


def test_password_never_shown(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        node = add(store, instance_uuid=INSTANCE)
        store.acquire_lock(node.uuid, "a", ttl=1, now=T0)
        store.acquire_lock(node.uuid, "b", ttl=1, now=T0 + 2)
        store.apply([NodeChange("00000000-0000-4000-8000-000000000000", {})])
        with pytest.raises(InvalidNode) as too_long:
            store.update_node(node.uuid, bmc_password=PASSWORD * 70)
    assert PASSWORD not in repr(node)
    assert PASSWORD not in str(node)
    assert PASSWORD not in repr(store.list_nodes())
    assert PASSWORD not in str(too_long.value)
    assert PASSWORD not in caplog.text
    masked = node.masked()
    assert masked["bmc_password"] == "******"
    assert masked["name"] == "node-1" and masked["cipher_suites"] == [17, 3]
    assert PASSWORD not in repr(masked)
    assert store.get_node(node.uuid).bmc_password == PASSWORD  # still stored for the agent


def test_closed_store_refuses_calls(opener: Opener) -> None:
    store = opener()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_nodes()


def test_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="yaml"):
        open_store(str(tmp_path / "x"), "yaml")


def test_backend_name(store: Store, backend: str) -> None:
    assert store.backend == backend
    assert store.path in repr(store)


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_directory_is_not_a_store(tmp_path: Path, backend: str) -> None:
    with pytest.raises(StoreError, match=str(tmp_path)):
        open_store(str(tmp_path), backend)


def test_add_nodes_in_one_batch(store: Store) -> None:
    specs: list[dict[str, object]] = [
        {
            "name": f"bulk-{i}",
            "bmc_address": "127.0.0.1",
            "bmc_port": 7000 + i,
            "bmc_username": "admin",
            "bmc_password": PASSWORD,
        }
        for i in range(3)
    ]
    specs[2]["instance_uuid"] = INSTANCE
    added = store.add_nodes(specs, now=T0)
    assert [n.name for n in store.list_nodes()] == ["bulk-0", "bulk-1", "bulk-2"]
    assert store.get_node("bulk-2") == added[2]
    assert added[0].cipher_suites == (17, 3) and added[2].instance_uuid == INSTANCE
    assert len({n.uuid for n in added}) == 3


@pytest.mark.parametrize(
    ("bad", "error", "pattern"),
    [
        ({"name": "bulk-0"}, DuplicateNode, "bulk-0"),  # exists already
        ({"name": "x-1"}, DuplicateNode, "x-1"),  # twice in the batch
        ({"name": "x-2", "bmc_port": 0}, InvalidNode, r"^node 'x-2': bmc_port:"),
        ({"name": "x-2", "bmc_username": None}, InvalidNode, "bmc_username"),
        ({"name": "x-2", "colour": "red"}, InvalidNode, "colour"),
        ({"name": "x-2", "bmc_password": PASSWORD * 70}, InvalidNode, "bmc_password"),
        ({"name": "x-2", "driver": "Bad"}, InvalidNode, r"^node 'x-2': driver:"),
    ],
)
def test_add_nodes_is_all_or_nothing(
    store: Store, bad: dict[str, object], error: type[Exception], pattern: str
) -> None:
    add(store, "bulk-0")
    base = {"bmc_address": "::1", "bmc_username": "admin", "bmc_password": "pw"}
    batch = [{**base, "name": "x-1"}, {**base, "name": "x-3"}, {**base, **bad}]
    with pytest.raises(error, match=pattern) as raised:
        store.add_nodes(batch)
    assert PASSWORD not in str(raised.value)
    assert [n.name for n in store.list_nodes()] == ["bulk-0"]
    with pytest.raises(InvalidNode, match="bmc_address: is required"):
        store.add_nodes([{"name": "y", "bmc_username": "a", "bmc_password": ""}])


def test_prune_keeps_recent_rows_and_every_pending_notification(store: Store) -> None:
    node = add(store, instance_uuid=INSTANCE)
    other = add(store, "other", instance_uuid=INSTANCE_2)
    record = HistoryRecord("power off", "power on", "sync")
    store.apply([NodeChange(node.uuid, {}, record, "power on")], now=T0)  # superseded below
    store.apply([NodeChange(other.uuid, {}, record, "power on")], now=T0)  # stays pending
    store.apply([NodeChange(node.uuid, {}, record, "power off")], now=T0 + 100)
    [old_pending, recent] = store.due_notifications(now=T0 + 100)
    store.mark_delivered([recent.id])
    assert store.prune(before=T0 + 50) == {"history": 2, "notifications": 1}
    assert [h.at for h in store.history()] == [T0 + 100]
    assert store.get_notification(old_pending.id).status == "pending"
    assert store.get_notification(recent.id).status == "delivered"
    assert store.notification_counts() == {
        "pending": 1,
        "delivered": 1,
        "dropped": 0,
        "superseded": 0,
    }
    assert store.prune(before=T0 + 50) == {"history": 0, "notifications": 0}


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_missing_directory_is_reported(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "no-such-dir" / "store"
    with pytest.raises(StoreError, match=str(path.parent)):
        open_store(str(path), backend)


def test_calls_from_several_threads_are_safe(store: Store) -> None:
    # The agent serialises calls, but the store must not break if two threads overlap.
    # One instance per node (a store refuses one instance on two nodes).
    instances = [f"6a0c3f4e-2b8d-4a59-9c61-0d5d8f4e7a1{i}" for i in range(4)]
    nodes = [add(store, f"t{i}", instance_uuid=instances[i]) for i in range(4)]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            node = nodes[index]
            for round_number in range(25):
                assert store.acquire_lock(node.uuid, f"thread-{index}", ttl=60)
                store.apply(
                    [NodeChange(node.uuid, {"sync_failures": round_number + 1}, None, "power on")]
                )
                assert store.release_lock(node.uuid, f"thread-{index}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [n.sync_failures for n in store.list_nodes()] == [25] * 4
    counts = store.notification_counts()
    assert (counts["pending"], counts["superseded"]) == (4, 96)


# --- several agents on one site: conductors, leases, fencing ------------------------------


def test_server_time_is_the_backends_clock(store: Store) -> None:
    import time

    before = time.time()
    server = store.server_time()
    # Same machine in these tests, so the server's clock agrees with ours to within a second.
    assert before - 1 <= server <= time.time() + 1
    node = store.add_node(name="n", bmc_address="::1", bmc_username="u", bmc_password="p")
    assert before - 1 <= node.created_at <= store.server_time()


def test_conductors_register_heartbeat_list_unregister(store: Store) -> None:
    assert store.list_conductors() == []
    first = store.register_conductor("agent-b", now=T0)
    assert (first.host, first.started_at, first.last_heartbeat, first.info) == (
        "agent-b",
        T0,
        T0,
        None,
    )
    store.heartbeat("agent-a", now=T0 + 1, info='{"nodes": 5}')  # registers an unknown host
    beat = store.heartbeat("agent-b", now=T0 + 10, info='{"nodes": 3}')
    assert (beat.started_at, beat.last_heartbeat, beat.info) == (T0, T0 + 10, '{"nodes": 3}')
    kept = store.heartbeat("agent-b", now=T0 + 20)  # no info: the last one is kept
    assert kept.info == '{"nodes": 3}'
    assert [c.host for c in store.list_conductors()] == ["agent-a", "agent-b"]
    a, b = store.list_conductors()
    # Ironic: heartbeat_timeout 60 s.
    assert b.alive(T0 + 80, timeout=60) and not a.alive(T0 + 80, timeout=60)
    restarted = store.register_conductor("agent-b", now=T0 + 30)
    assert (restarted.started_at, restarted.info) == (T0 + 30, None)
    assert store.unregister("agent-a")
    assert not store.unregister("agent-a")
    assert [c.host for c in store.list_conductors()] == ["agent-b"]
    with pytest.raises(StoreError, match="host"):
        store.heartbeat("")


def test_lease_compare_and_set_with_growing_tokens(store: Store) -> None:
    first = store.acquire_lease("bucket:3", "agent-a", ttl=30, now=T0)
    assert first is not None and (first.holder, first.expires_at) == ("agent-a", T0 + 30)
    assert store.acquire_lease("bucket:3", "agent-b", ttl=30, now=T0 + 29) is None
    renewed = store.renew_lease(first, ttl=30, now=T0 + 20)
    assert renewed is not None
    assert (renewed.token, renewed.expires_at) == (first.token, T0 + 50)
    # Expired: another agent takes it over with a larger token; the old one is fenced off.
    taken = store.acquire_lease("bucket:3", "agent-b", ttl=30, now=T0 + 50)
    assert taken is not None and taken.token > first.token
    assert store.renew_lease(renewed, ttl=30, now=T0 + 51) is None
    assert not store.release_lease(renewed)
    # The same holder acquiring again (a restarted agent) also gets a new token.
    again = store.acquire_lease("bucket:3", "agent-b", ttl=30, now=T0 + 52)
    assert again is not None and again.token > taken.token
    assert store.renew_lease(taken, ttl=30, now=T0 + 53) is None
    assert [(lease.name, lease.holder) for lease in store.list_leases()] == [
        ("bucket:3", "agent-b")
    ]
    assert store.release_lease(again)
    assert store.list_leases() == []
    after = store.acquire_lease("bucket:3", "agent-a", ttl=30, now=T0 + 54)
    assert after is not None and after.token > again.token
    # An expired lease nobody took over is still its holder's: renewing it is safe.
    late = store.renew_lease(after, ttl=30, now=T0 + 100)
    assert late is not None and late.expires_at == T0 + 130


def test_apply_is_fenced_by_the_lease(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    node = add(store, instance_uuid=INSTANCE)
    other = add(store, "node-2")
    lease = store.acquire_lease("bucket:0", "agent-a", ttl=30, now=T0)
    assert lease is not None

    def change(uuid: str, state: str) -> NodeChange:
        record = HistoryRecord(None, state, "sync")
        return NodeChange(uuid, {"power_state": state}, record, state, fence=lease)

    assert store.apply([change(node.uuid, "power on")], now=T0 + 10) == []
    assert store.get_node(node.uuid).power_state == "power on"
    # agent-a is paused past its lease (SIGSTOP); agent-b takes the bucket over.
    taken = store.acquire_lease("bucket:0", "agent-b", ttl=30, now=T0 + 31)
    assert taken is not None
    with caplog.at_level(logging.WARNING, logger="store"):
        skipped = store.apply(
            [change(node.uuid, "power off"), NodeChange(other.uuid, {"sync_failures": 1})],
            now=T0 + 32,
        )
    assert skipped == [node.uuid]
    assert any("bucket:0" in r.getMessage() for r in caplog.records)
    assert store.get_node(node.uuid).power_state == "power on"  # the paused agent wrote nothing
    assert store.get_node(other.uuid).sync_failures == 1  # the unfenced change went in
    assert len(store.history(node.uuid)) == 1
    assert [n.power_state for n in store.due_notifications(now=T0 + 40)] == ["power on"]
    # Even before anyone takes it over, an expired lease fences.
    fresh = store.acquire_lease("bucket:1", "agent-a", ttl=5, now=T0)
    assert fresh is not None
    late = NodeChange(node.uuid, {"sync_failures": 9}, fence=fresh)
    assert store.apply([late], now=T0 + 5) == [node.uuid]
    assert store.get_node(node.uuid).sync_failures == 0


def test_node_lock_and_outbox_drainer_are_fenced(store: Store) -> None:
    node = add(store, instance_uuid=INSTANCE)
    store.apply([NodeChange(node.uuid, {}, None, "power on")], now=T0)
    drainer = store.acquire_lease("outbox", "agent-a", ttl=30, now=T0)
    assert drainer is not None
    assert [n.power_state for n in store.due_notifications(now=T0 + 1, fence=drainer)] == [
        "power on"
    ]
    assert store.acquire_lock(node.uuid, "agent-a:1", ttl=10, now=T0 + 1, fence=drainer)
    assert store.release_lock(node.uuid, "agent-a:1")
    successor = store.acquire_lease("outbox", "agent-b", ttl=30, now=T0 + 31)
    assert successor is not None
    with pytest.raises(LeaseLost, match="outbox"):
        store.due_notifications(now=T0 + 32, fence=drainer)
    assert not store.acquire_lock(node.uuid, "agent-a:1", ttl=10, now=T0 + 32, fence=drainer)
    assert store.get_node(node.uuid).reservation is None
    assert len(store.due_notifications(now=T0 + 32, fence=successor)) == 1


def test_two_agents_share_leases_through_the_store(opener: Opener) -> None:
    with opener() as agent_a, opener() as agent_b:
        got_a = [agent_a.acquire_lease(f"bucket:{i}", "a", ttl=30, now=T0) for i in range(4)]
        got_b = [agent_b.acquire_lease(f"bucket:{i}", "b", ttl=30, now=T0 + 1) for i in range(4)]
        assert all(lease is not None for lease in got_a) and got_b == [None] * 4
        agent_a.heartbeat("a", now=T0)
        agent_b.heartbeat("b", now=T0 + 1)
        assert [c.host for c in agent_a.list_conductors()] == ["a", "b"]
        assert [lease.holder for lease in agent_b.list_leases()] == ["a"] * 4


def test_a_change_that_does_not_supersede_leaves_older_pending_events(store: Store) -> None:
    # Two completed power actions a second apart: Nova must hear both, in order.
    node = add(store, instance_uuid=INSTANCE)
    store.apply([NodeChange(node.uuid, {"power_state": "power off"}, None, "power off",
                            supersede=False)], now=T0)  # fmt: skip
    store.apply([NodeChange(node.uuid, {"power_state": "power on"}, None, "power on",
                            supersede=False)], now=T0 + 1)  # fmt: skip
    pending = store.due_notifications(now=T0 + 2)
    assert [n.power_state for n in pending] == ["power off", "power on"]
    # A sync change (supersede=True, the default) still replaces what is pending.
    store.apply(
        [NodeChange(node.uuid, {"power_state": "power off"}, None, "power off")], now=T0 + 3
    )
    assert [n.power_state for n in store.due_notifications(now=T0 + 4)] == ["power off"]


def test_a_lock_takeover_names_the_expiry_as_a_time(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # Found: the WARNING printed a raw epoch ("expired at 1796297555.750").
    node = add(store)
    assert store.acquire_lock(node.uuid, "agent-a:1:sync", ttl=10, now=T0)
    with caplog.at_level(logging.WARNING):
        assert store.acquire_lock(node.uuid, "agent-b:2:power", ttl=10, now=T0 + 11)
    [line] = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + 10))
    assert f"expired at {expected}.000Z" in line, line
