"""Can this configuration keep its sync interval for this fleet? And how wide is the failing lane?

The sync service asks at every sync pass, with the pass's numbers, and logs a warning when a
problem appears (at the first cycle, after a reload, or when the fleet changes), not at
every cycle while it lasts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config.options import ConductorConfig

# With sync_failing_node_workers unset, the failing lane holds every failing node at once
# (a dead BMC only waits on timers), within these bounds.
AUTO_FAILING_MIN = 128
AUTO_FAILING_MAX = 1024


def failing_lane_size(configured: int | None, failing: int) -> int:
    """The configured sync_failing_node_workers, or when unset one slot per failing node."""
    if configured is not None:
        return configured
    return max(AUTO_FAILING_MIN, min(failing, AUTO_FAILING_MAX))


def overrun_warning(
    cycle: int, duration: float, conductor: ConductorConfig, failing_workers: int
) -> str:
    """A cycle that took longer than its interval: what to change."""
    return (
        f"sync cycle {cycle} took {duration:.1f} s, longer than sync_power_state_interval "
        f"({conductor.sync_power_state_interval:g} s); raise sync_power_state_workers "
        f"(now {conductor.sync_power_state_workers}) or sync_failing_node_workers "
        f"(now {failing_workers}), lower sync_node_timeout (now "
        f"{conductor.sync_node_timeout:g} s) or raise the interval"
    )


def interval_warnings(
    conductor: ConductorConfig, *, failing: int, failing_workers: int
) -> dict[str, str]:
    """What keeps a cycle from finishing within its interval: {problem: one-line warning}."""
    interval = conductor.sync_power_state_interval
    if interval <= 0:
        return {}
    timeout = conductor.sync_node_timeout
    window = conductor.sync_jitter_window
    warnings: dict[str, str] = {}
    if window + timeout > interval:
        warnings["spread"] = (
            f"sync_jitter_window ({window:g} s) + sync_node_timeout ({timeout:g} s) = "
            f"{window + timeout:g} s is more than sync_power_state_interval ({interval:g} s): "
            "a node started late in the window that does not answer ends its cycle after the "
            f"interval; raise sync_power_state_interval to at least {window + timeout:g} s "
            "or lower one of the two"
        )
    waves = math.ceil(failing / failing_workers) if failing else 0
    if waves > 1:
        cost = waves * timeout
        over = f", more than the interval ({interval:g} s)" if cost > interval else ""
        warnings["waves"] = (
            f"{failing} nodes are failing but sync_failing_node_workers is {failing_workers}: "
            f"they wait out sync_node_timeout ({timeout:g} s) in {waves} waves, up to "
            f"{cost:g} s per cycle{over}; raise sync_failing_node_workers to at least "
            f"{failing}, or leave it unset to size it from the fleet"
        )
    return warnings
