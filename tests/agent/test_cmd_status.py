"""``powersync status`` on a real SQLite store filled through the store's public API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.cli.status import LAST_CYCLE_KEY, LAST_RECOVERY_KEY
from store import HistoryRecord, NodeChange, open_store

INSTANCE_A = "7d8f1c1e-64c5-4b59-9d2b-0e4f1a1b2c3d"
INSTANCE_B = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[store]\npath = "fleet.sqlite"\n[conductor]\nsync_power_state_interval = 60\n'
    )
    config.chmod(0o600)
    return config, tmp_path / "fleet.sqlite"


def fill(store_path: Path, *, cycle_started: float | None) -> None:
    with open_store(str(store_path)) as store:
        nodes = {
            name: store.add_node(
                name=name,
                bmc_address="127.0.0.1",
                bmc_port=20000 + index,
                bmc_username="admin",
                bmc_password="pw",
                instance_uuid=instance,
            )
            for index, (name, instance) in enumerate(
                [("a", INSTANCE_A), ("b", INSTANCE_B), ("c", None), ("d", None)]
            )
        }
        store.apply(
            [
                NodeChange(
                    nodes["a"].uuid,
                    {"power_state": "power on"},
                    HistoryRecord(None, "power on", "sync"),
                    notification="power on",
                ),
                NodeChange(
                    nodes["b"].uuid,
                    {"power_state": "power off"},
                    HistoryRecord(None, "power off", "sync"),
                    notification="power off",
                ),
                NodeChange(nodes["c"].uuid, {"power_state": "power on"}),
                NodeChange(
                    nodes["d"].uuid,
                    {
                        "maintenance": True,
                        "fault": "power failure",
                        "maintenance_reason": "no answer from 127.0.0.1:20003",
                    },
                ),
            ]
        )
        pending = store.due_notifications(now=time.time() + 1)
        store.mark_delivered([pending[0].id])
        store.mark_dropped(pending[1].id, "instance not found")
        store.update_node("c", maintenance=True, maintenance_reason="disk swap")
        if cycle_started is not None:
            summary = {
                "started_at": cycle_started,
                "duration": 1.25,
                "nodes": 4,
                "ok": 3,
                "failed": 1,
                "changed": 2,
                "forced": 0,
            }
            store.set_meta(LAST_CYCLE_KEY, json.dumps(summary))


def test_status_shows_the_service_summaries(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, store_path = setup
    fill(store_path, cycle_started=None)
    now = time.time()
    # What agent/service.py writes (more than the pinned keys), for sync and recovery.
    cycle = {"cycle": 12, "kind": "sync", "started_at": now - 5, "duration": 0.5, "nodes": 4,
             "ok": 3, "failed": 1, "changed": 0, "forced": 0, "skipped": 2, "maintenance": 0,
             "recovered": 0, "applied": 1, "dropped": 0}  # fmt: skip
    recovery = cycle | {"cycle": 3, "kind": "recovery", "nodes": 1, "recovered": 1}
    with open_store(str(store_path)) as store:
        store.set_meta(LAST_CYCLE_KEY, json.dumps(cycle))
        store.set_meta(LAST_RECOVERY_KEY, json.dumps(recovery))
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "last cycle: #12 " in out
    assert "4 nodes: 3 ok, 1 failed, 0 changed, 0 forced, 2 skipped, 0 maintenance, 0 rec" in out
    assert "last recovery: #3 " in out and "1 nodes: " in out and "1 recovered" in out
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["last_cycle"]["skipped"] == 2 and status["last_cycle"]["cycle"] == 12
    assert status["last_recovery"]["recovered"] == 1


def test_status_json(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, store_path = setup
    started = time.time() - 30
    fill(store_path, cycle_started=started)
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["nodes"] == 4
    assert status["power_states"] == {"power off": 1, "power on": 2, "unknown": 1}
    assert status["maintenance"] == [
        {"name": "c", "reason": "disk swap", "fault": None},
        {"name": "d", "reason": "no answer from 127.0.0.1:20003", "fault": "power failure"},
    ]
    assert status["faults"] == {"power failure": 1}
    assert status["notifications"] == {
        "pending": 0,
        "delivered": 1,
        "dropped": 1,
        "superseded": 0,
    }
    cycle = status["last_cycle"]
    assert cycle["started_at"] == started and cycle["duration"] == 1.25
    assert (cycle["ok"], cycle["failed"], cycle["changed"], cycle["forced"]) == (3, 1, 2, 0)
    assert cycle["stale"] is False and 29 <= cycle["age"] < 600


def test_status_text(setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, store_path = setup
    fill(store_path, cycle_started=time.time() - 3600)
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "nodes: 4 (1 power off, 2 power on, 1 unknown)" in out
    assert "maintenance: 2\n  c: disk swap\n" in out
    assert "  d: no answer from 127.0.0.1:20003 [fault: power failure]" in out
    assert "faults: 1 power failure" in out
    assert "took 1.25 s, 4 nodes: 3 ok, 1 failed, 2 changed, 0 forced" in out
    assert "STALE: older than 3 x 60 s" in out  # an hour old with a 60 s interval
    assert "notifications: 0 pending, 1 delivered, 1 dropped" in out
    assert "sending is off" in out
    assert "pw" not in out.split()


def test_status_without_cycle_and_with_unreadable_cycle(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, store_path = setup
    fill(store_path, cycle_started=None)
    assert main(["--config", str(config), "status"]) == 0
    assert "last cycle: none recorded" in capsys.readouterr().out
    with open_store(str(store_path)) as store:
        store.set_meta(LAST_CYCLE_KEY, "{not json")
    assert main(["--config", str(config), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_cycle"] == {"unreadable": True}


def test_status_errors_are_one_line(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config, _ = setup
    assert main(["--config", str(config), "status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fleet.sqlite does not exist yet" in err
    broken = tmp_path / "broken.toml"
    broken.write_text('[store]\nbackend = "mysql"\n')
    assert main(["--config", str(broken), "status"]) == 1
    err = capsys.readouterr().err
    choices = "'sqlite', 'json', 'postgresql'"
    assert err == f"powersync: {broken}: [store] backend must be one of {choices} (got 'mysql')\n"


def test_status_on_an_empty_store(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, store_path = setup
    open_store(str(store_path)).close()
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["nodes"] == 0 and status["power_states"] == {} and status["last_cycle"] is None


def test_damaged_store_is_one_line(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, store_path = setup
    store_path.write_bytes(b"this is not a database, it is a poem\n" * 10)
    assert main(["--config", str(config), "status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("powersync: ")
    assert "fleet.sqlite" in err and "damaged" in err
