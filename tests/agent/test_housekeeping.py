"""The daemon's hourly prune: old history and finished notifications go, pending ones stay."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from agent.config.options import load_config
from agent.errors import ConfigError
from agent.storeio import AsyncStore
from agent.sync.housekeeping import DAY, prune_loop, prune_once
from store import HistoryRecord, NodeChange, Store, open_store

NOW = 1_800_000_000.0
INSTANCE = "6f9c0a3e-3c1b-4c55-9a53-2b1f0c8f6d11"


def seeded_store(path: Path) -> Store:
    store = open_store(str(path))

    def node(name: str, instance: str | None) -> str:
        return store.add_node(
            name=name,
            bmc_address="127.0.0.1",
            bmc_username="admin",
            bmc_password="secret-pw",
            instance_uuid=instance,
            now=NOW - 400 * DAY,
        ).uuid

    def change(uuid: str, to: str, days_ago: float) -> None:
        record = HistoryRecord(None, to, "sync", f"{days_ago} days ago")
        store.apply(
            [NodeChange(uuid, {"power_state": to}, record, notification=to)],
            now=NOW - days_ago * DAY,
        )

    n1, n2 = node("n1", INSTANCE), node("n2", None)
    change(n1, "power on", 200)  # old, delivered below: pruned
    (delivered,) = store.due_notifications(now=NOW)
    store.mark_delivered([delivered.id])
    change(n1, "power off", 150)  # old history (pruned), its event still pending (kept)
    change(n2, "power off", 10)  # recent history: kept
    return store


async def test_prune_keeps_recent_history_and_every_pending_notification(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = seeded_store(tmp_path / "s.sqlite")
    with store, caplog.at_level(logging.INFO, logger="powersync.store"):
        removed = await prune_once(AsyncStore(store), retention_days=90, wall_clock=lambda: NOW)
        assert removed == {"history": 2, "notifications": 1}
        assert store.history("n1") == []
        assert [entry.message for entry in store.history("n2")] == ["10 days ago"]
        (pending,) = store.due_notifications(now=NOW)
        assert pending.power_state == "power off"  # Nova still owes this one
        assert store.notification_counts()["delivered"] == 0
    assert any("pruned 2 history rows and 1 finished" in r.getMessage() for r in caplog.records)


async def test_zero_retention_keeps_everything(tmp_path: Path) -> None:
    store = seeded_store(tmp_path / "s.sqlite")
    with store:
        with trio.fail_after(1.0):  # returns at once: no loop at all
            await prune_loop(AsyncStore(store), retention_days=0, wall_clock=lambda: NOW)
        assert len(store.history()) == 3


def test_retention_is_configurable_and_validated(tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text("[store]\nhistory_retention_days = 7\n")
    assert load_config(str(config_file), environ={}).store.history_retention_days == 7
    config_file.write_text("[store]\nhistory_retention_days = -1\n")
    with pytest.raises(ConfigError, match=r"\[store\] history_retention_days"):
        load_config(str(config_file), environ={})
