"""The seam's Drivers: endpoints for nodes, built once per version of a node."""

from __future__ import annotations

from pathlib import Path

from agent.config.options import AgentConfig
from agent.drivers import configured_drivers
from store import open_store


def test_an_endpoint_is_rebuilt_only_when_its_node_changes(tmp_path: Path) -> None:
    drivers = configured_drivers(AgentConfig(source="test"))
    with open_store(str(tmp_path / "s.sqlite")) as store:
        node = store.add_node(
            name="n1", bmc_address="127.0.0.1", bmc_username="admin", bmc_password="pw", now=1.0
        )
        first = drivers.endpoint(node)
        assert drivers.endpoint(store.get_node("n1")) is first  # the same node, read again
        seen = store.update_node("n1", last_seen_at=1.5, now=1.5)  # state: what cycles write
        assert drivers.endpoint(seen) is first
        moved = store.update_node("n1", bmc_port=6230, now=2.0)
        second = drivers.endpoint(moved)
        assert second is not first and second.port == 6230
        drivers.retain(set())  # the node is gone (or another agent's)
        assert drivers.endpoint(moved) is not second
        again = drivers.endpoint(moved)
        drivers.replace(configured_drivers(AgentConfig(source="reloaded")))
        assert drivers.endpoint(moved) is not again  # a reload may change what endpoints say
