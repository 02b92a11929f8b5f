"""One Nova instance is on one node: every backend refuses a second node naming it."""

from __future__ import annotations

import pytest

from store import DuplicateNode, Store
from tests.store.helpers import INSTANCE, INSTANCE_2, PASSWORD, add

REFUSED = f"instance {INSTANCE} is already on node 'node-1'"


def upsert(store: Store, name: str, instance: str | None) -> None:
    store.upsert_node(
        name=name, bmc_address="127.0.0.1", bmc_username="admin", bmc_password=PASSWORD,
        instance_uuid=instance,
    )  # fmt: skip


def test_add_upsert_and_update_refuse_an_instance_on_another_node(store: Store) -> None:
    add(store, instance_uuid=INSTANCE)
    with pytest.raises(DuplicateNode, match=REFUSED):
        add(store, "node-2", instance_uuid=INSTANCE.upper())
    with pytest.raises(DuplicateNode, match=REFUSED):
        upsert(store, "node-2", INSTANCE)
    add(store, "node-2", instance_uuid=INSTANCE_2)
    with pytest.raises(DuplicateNode, match=REFUSED):
        upsert(store, "node-2", INSTANCE)
    with pytest.raises(DuplicateNode, match=REFUSED):
        store.update_node("node-2", instance_uuid=INSTANCE)
    assert store.get_node("node-2").instance_uuid == INSTANCE_2
    # The node that has it may keep it through an update, and it moves in two steps.
    upsert(store, "node-1", INSTANCE)
    store.update_node("node-1", bmc_port=6231, instance_uuid=INSTANCE)
    store.update_node("node-1", instance_uuid=None)
    store.update_node("node-2", instance_uuid=INSTANCE)
    assert [n.instance_uuid for n in store.list_nodes()] == [None, INSTANCE]


def test_a_batch_naming_one_instance_twice_adds_nothing(store: Store) -> None:
    add(store, "node-0", instance_uuid=INSTANCE_2)
    spec = {"bmc_address": "127.0.0.1", "bmc_username": "admin", "bmc_password": PASSWORD}
    batch = [
        {**spec, "name": "node-1", "instance_uuid": INSTANCE},
        {**spec, "name": "node-2", "instance_uuid": INSTANCE},
    ]
    with pytest.raises(DuplicateNode, match=REFUSED):
        store.add_nodes(batch)
    with pytest.raises(DuplicateNode, match=f"instance {INSTANCE_2} is already on node 'node-0'"):
        store.add_nodes([{**spec, "name": "node-3", "instance_uuid": INSTANCE_2}])
    assert [n.name for n in store.list_nodes()] == ["node-0"]
