"""``powersync demo``: a simulated BMC fleet, the agent on a temporary store, and a story.

Everything runs in this process on 127.0.0.1 with free ports: the simulators serve a few
hundred real RMCP+ BMCs (ipmi.sim, UDP) and, beside them in one index space, Redfish
services over HTTPS (redfish.sim, a certificate verified through its CA file). The agent
talks to both through its drivers, in one pool and one sync, and the store is a throw-away
SQLite file. No root, no apt packages, no network.
"""

from __future__ import annotations

import argparse
import logging
import random
import secrets
import sys
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from agent.bmc.pool import BmcPool, open_bmc_pool
from agent.cli.common import integer_argument
from agent.config.options import AgentConfig, ConductorConfig, IpmiConfig
from agent.drivers import configured_drivers
from agent.errors import AgentError
from agent.nova.config import NovaConfig
from agent.storeio import AsyncStore
from agent.sync.report import CycleReport
from agent.sync.service import SyncService
from store import Store, open_store

DEMO_CONDUCTOR = ConductorConfig(
    sync_power_state_interval=60.0,
    sync_power_state_workers=8,
    force_power_state_during_sync=True,
    power_state_sync_max_retries=1,  # so a dead BMC reaches maintenance in two cycles
    sync_node_timeout=2.5,
    sync_jitter_window=0.0,
    lock_ttl=30.0,
)
DEMO_IPMI = IpmiConfig(retry_timeout=0.3, retry_backoff=2.0, retry_max_timeout=1.0, retries=2)
UUID_NAMESPACE = uuid.UUID("6f1c8a52-3d0e-4a6b-9a57-2b1f0c4e7d90")


class Story:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.step = 0

    def chapter(self, text: str) -> None:
        self.step += 1
        print(f"\n{self.step}. {text}", file=self.out)

    def line(self, text: str) -> None:
        print(f"   {text}", file=self.out)


def _changed(report: CycleReport, action: str) -> list[Any]:
    return [r for r in report.results if r.action == action]


def _names(items: Sequence[Any], limit: int = 6) -> str:
    names = [item.name for item in items]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class MixedFleet:
    """The IPMI fleet's BMCs, then the Redfish fleet's (its indexes follow on), as one."""

    def __init__(self, ipmi_fleet: Any, redfish_fleet: Any) -> None:
        self.ipmi = ipmi_fleet
        self.redfish = redfish_fleet
        self.bmcs: list[Any] = [*ipmi_fleet.bmcs, *redfish_fleet.bmcs]

    def is_redfish(self, index: int) -> bool:
        return index >= len(self.ipmi.bmcs)

    def set_dead(self, indexes: Iterable[int]) -> None:
        dead = frozenset(indexes)  # one index space: each fleet picks its own BMCs
        self.ipmi.set_faults(dead=dead)
        self.redfish.set_faults(dead=dead)


def _mismatches(store: Store, fleet: Any) -> int:
    by_name = {node.name: node for node in store.list_nodes()}
    wrong = 0
    for bmc in fleet.bmcs:
        node = by_name[bmc.name]
        if node.maintenance:
            continue
        if node.power_state != ("power on" if bmc.power_on else "power off"):
            wrong += 1
    return wrong


async def run_demo(
    out: TextIO,
    *,
    nodes: int = 300,
    redfish: int | None = None,
    flips: int = 12,
    dead: int = 3,
    seed: int = 5,
) -> dict[str, Any]:
    """The whole demo; returns the numbers it printed (tests check them).

    The last ``redfish`` (default a fifth) of the ``nodes`` BMCs speak Redfish; each round
    flips and kills one of them beside the IPMI ones.
    """
    from ipmi.sim import open_fleet
    from redfish.sim import open_fleet as open_redfish_fleet

    redfish = max(3, nodes // 5) if redfish is None else redfish
    if redfish < 3:
        raise AgentError("demo: --redfish-nodes must be at least 3 (one per round)")
    if nodes - redfish < flips * 2 + dead + 1:
        raise AgentError(f"demo: --nodes must be at least {flips * 2 + dead + 1 + redfish}")
    story = Story(out)
    rng = random.Random(seed)  # noqa: S311 (which BMCs to flip, not security)
    password = secrets.token_urlsafe(12)[:16]
    started = trio.current_time()
    ipmi_count = nodes - redfish
    numbers: dict[str, Any] = {"nodes": nodes, "redfish_nodes": redfish, "cycles": []}
    with tempfile.TemporaryDirectory(prefix="powersync-demo-") as workdir:
        store_path = str(Path(workdir) / "demo.sqlite")
        async with (
            open_fleet(ipmi_count, host="127.0.0.1", port_base=0, password=password) as ipmi,
            open_redfish_fleet(
                redfish, password=password, tls_dir=workdir, first_index=ipmi_count
            ) as redfish_fleet,
        ):
            fleet = MixedFleet(ipmi, redfish_fleet)
            for bmc in fleet.bmcs:
                bmc.set_power(bmc.index % 4 != 0)
            ports = [bmc.port for bmc in ipmi.bmcs]
            https = [bmc.port for bmc in redfish_fleet.bmcs]
            story.chapter(
                f"Started {ipmi_count} simulated IPMI v2.0 BMCs on 127.0.0.1 (UDP ports "
                f"{min(ports)}-{max(ports)}), cipher suites 17 and 3, and {redfish} Redfish "
                f"services over HTTPS (TCP ports {min(https)}-{max(https)}, a certificate "
                "the agent verifies through the simulator's CA file); 3 in 4 machines are on."
            )
            with open_store(store_path) as store:
                _add_nodes(store, fleet, password)
                story.line(
                    f"Imported them into a temporary SQLite store ({store_path}): "
                    f"{fleet.bmcs[0].name}..{fleet.bmcs[ipmi_count - 1].name} with driver ipmi, "
                    f"{fleet.bmcs[ipmi_count].name}..{fleet.bmcs[-1].name} with driver redfish; "
                    "their recorded power state is unknown. Every other node has a Nova instance."
                )
                config = _config()
                drivers = configured_drivers(config)
                async with open_bmc_pool(drivers.open, keepalive_interval=25.0) as pool:
                    await _story(story, store, fleet, pool, config, rng, flips, dead, numbers)
                counts = store.notification_counts()
        numbers["notifications"] = counts
        numbers["duration"] = trio.current_time() - started
    story.chapter("Summary")
    for cycle in numbers["cycles"]:
        story.line(
            f"{cycle['kind']:8} {cycle['label']:36} {cycle['nodes']:4} nodes  "
            f"{cycle['changed']:3} changed  {cycle['forced']:3} forced  "
            f"{cycle['failed']:3} failed  {cycle['duration']:.2f} s"
        )
    story.line(
        f"Nova outbox: {counts.get('pending', 0)} power-update events pending, "
        f"{counts.get('superseded', 0)} superseded by newer ones (Nova is not configured in "
        "the demo; `powersync run` with [nova] delivers them)."
    )
    story.line(f"Done in {numbers['duration']:.1f} s. The store and the simulator are gone.")
    return numbers


def _add_nodes(store: Store, fleet: MixedFleet, password: str) -> None:
    ca_file = fleet.redfish.ca_file
    for bmc in fleet.bmcs:
        instance = None
        if bmc.index % 2 == 0:
            instance = str(uuid.uuid5(UUID_NAMESPACE, bmc.name))
        redfish: dict[str, Any] = {}
        if fleet.is_redfish(bmc.index):  # Ironic's driver_info names
            info = {"redfish_address": bmc.url, "redfish_system_id": bmc.system_path,
                    "redfish_verify_ca": ca_file}  # fmt: skip
            redfish = {"driver": "redfish", "driver_info": info}
        store.add_node(
            name=bmc.name,
            bmc_address=bmc.address,
            bmc_port=bmc.port,
            bmc_username="admin",
            bmc_password=password,
            instance_uuid=instance,
            **redfish,
        )


def _config() -> AgentConfig:
    # Events are queued as for a site with Nova (the demo runs no Nova to send them to).
    nova = NovaConfig(send_power_notifications=True)
    return AgentConfig(source="<demo>", conductor=DEMO_CONDUCTOR, ipmi=DEMO_IPMI, nova=nova)


def _redfish_results(report: CycleReport, fleet: MixedFleet) -> list[Any]:
    names = {bmc.name for bmc in fleet.redfish.bmcs}
    return [r for r in report.results if r.name in names]


def _record(numbers: dict[str, Any], label: str, report: CycleReport) -> dict[str, Any]:
    summary = dict(report.summary(), label=label)
    numbers["cycles"].append(summary)
    return summary


async def _story(
    story: Story,
    store: Store,
    fleet: MixedFleet,
    pool: BmcPool,
    config: AgentConfig,
    rng: random.Random,
    flips: int,
    dead: int,
    numbers: dict[str, Any],
) -> None:
    astore = AsyncStore(store)
    forcing = SyncService(config, astore, pool, holder="demo:sync")
    recording = SyncService(
        attrs.evolve(
            config,
            conductor=attrs.evolve(DEMO_CONDUCTOR, force_power_state_during_sync=False),
        ),
        astore,
        pool,
        holder="demo:sync",
    )

    report = await forcing.run_cycle()
    summary = _record(numbers, "first look", report)
    numbers["redfish_recorded"] = sum(
        1 for r in _redfish_results(report, fleet) if r.new_state is not None and not r.error
    )
    on = sum(1 for r in report.results if r.new_state == "power on")
    workers = DEMO_CONDUCTOR.sync_power_state_workers
    story.chapter(
        f"Sync cycle 1: read all {summary['nodes']} BMCs with {workers} workers "
        f"in {summary['duration']:.2f} s and recorded their state: {on} on, "
        f"{summary['nodes'] - on} off ({pool.statistics().sessions_opened} sessions opened, "
        f"kept open for the next cycles; {numbers['redfish_recorded']} of them Redfish, "
        "where each later read is one GET on the kept session)."
    )

    # Each round touches one Redfish BMC beside the IPMI ones; the dead list starts with an
    # IPMI BMC (its reason is shown).
    ipmi_order = [i for i in range(len(fleet.bmcs)) if not fleet.is_redfish(i)]
    redfish_order = [i for i in range(len(fleet.bmcs)) if fleet.is_redfish(i)]
    rng.shuffle(ipmi_order)
    rng.shuffle(redfish_order)
    first = [redfish_order[0], *ipmi_order[: flips - 1]]
    second = [redfish_order[1], *ipmi_order[flips - 1 : 2 * flips - 2]]
    start = 2 * flips - 2
    dead_ones = [*ipmi_order[start : start + max(dead - 1, 1)], redfish_order[2]][:dead]
    for index in first:
        bmc = fleet.bmcs[index]
        bmc.set_power(not bmc.power_on)
    story.chapter(
        f"Someone pressed the power button on {flips} machines behind the agent's back: "
        + _names([fleet.bmcs[i] for i in first])
        + "."
    )
    report = await forcing.run_cycle()
    summary = _record(numbers, "force_power_state_during_sync=true", report)
    forced = _changed(report, "forced")
    numbers["redfish_forced"] = len(
        [r for r in _redfish_results(report, fleet) if r.action == "forced"]
    )
    story.line(
        f"Sync cycle 2 (force_power_state_during_sync = true, Ironic's default) found "
        f"{len(forced)} mismatches and drove the hardware back to the recorded state:"
    )
    for result in forced[:5]:
        story.line(
            f"  {result.name}: hardware was {result.observed}, set back to {result.recorded}"
        )
    story.line(f"Mismatches left between store and hardware: {_mismatches(store, fleet)}.")

    for index in second:
        bmc = fleet.bmcs[index]
        bmc.set_power(not bmc.power_on)
    report = await recording.run_cycle()
    summary = _record(numbers, "force_power_state_during_sync=false", report)
    recorded = _changed(report, "record-hardware")
    story.chapter(
        f"{flips} more machines flipped; with force_power_state_during_sync = false the "
        f"agent instead recorded what the hardware says ({len(recorded)} nodes), and queued a "
        "Nova power-update event for each one with an instance:"
    )
    for result in recorded[:5]:
        story.line(f"  {result.name}: recorded {result.recorded} -> {result.new_state}")
    story.line(f"Mismatches left between store and hardware: {_mismatches(store, fleet)}.")

    fleet.set_dead(dead_ones)
    names = _names([fleet.bmcs[i] for i in dead_ones])
    story.chapter(f"{dead} BMCs stop answering ({names}).")
    for attempt in (1, 2):
        report = await forcing.run_cycle()
        _record(numbers, f"dead BMCs, attempt {attempt}", report)
        failed = [r for r in report.results if r.error]
        story.line(
            f"Cycle took {report.duration:.2f} s (each dead BMC costs one "
            f"{DEMO_CONDUCTOR.sync_node_timeout:g} s deadline, in parallel; the others are "
            "not held up): " + ", ".join(f"{r.name} {r.action}" for r in failed)
        )
    node = store.get_node(fleet.bmcs[dead_ones[0]].name)
    story.line(
        f"After power_state_sync_max_retries ({DEMO_CONDUCTOR.power_state_sync_max_retries}) "
        f"{node.name} is in maintenance, fault {node.fault!r}, reason: {node.maintenance_reason}"
    )

    fleet.set_dead(())
    report = await forcing.run_recovery()
    _record(numbers, "recovery", report)
    recovered = _changed(report, "recovered")
    story.chapter(
        f"The BMCs answer again: the recovery pass read {len(recovered)} of them and cleared "
        "their maintenance (an operator's maintenance would never be cleared)."
    )
    report = await forcing.run_cycle()
    _record(numbers, "back to normal", report)
    numbers["mismatches_left"] = _mismatches(store, fleet)
    numbers["in_maintenance"] = len(store.list_nodes(maintenance=True))
    story.line(
        f"Final cycle: {report.summary()['ok']} of {len(report.results)} nodes read, "
        f"{numbers['mismatches_left']} mismatches, {numbers['in_maintenance']} in maintenance."
    )


def _handle(args: argparse.Namespace) -> int:
    if not args.debug:
        # The story is the output; the agent's own warnings would repeat it line by line.
        logging.getLogger("powersync").setLevel(logging.CRITICAL)
        logging.getLogger("ipmi").setLevel(logging.CRITICAL)
        logging.getLogger("redfish").setLevel(logging.CRITICAL)
    numbers = trio.run(
        lambda: run_demo(
            sys.stdout,
            nodes=args.nodes,
            redfish=args.redfish_nodes,
            flips=args.flips,
            dead=args.dead,
        )
    )
    return 0 if numbers["mismatches_left"] == 0 and numbers["in_maintenance"] == 0 else 1


def _count(text: str) -> int:
    value = integer_argument(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="simulated BMC fleet + the agent on a temporary store: watch it notice and fix",
        description=(
            "Start a few hundred simulated IPMI and Redfish BMCs on 127.0.0.1, import them "
            "into a temporary SQLite store, run sync cycles, flip machines out of band, kill "
            "some BMCs, and show the agent noticing and correcting it all. Needs nothing but "
            "this package."
        ),
    )
    parser.add_argument("--nodes", type=_count, default=300, help="simulated BMCs (default 300)")
    parser.add_argument(
        "--redfish-nodes",
        type=_count,
        default=None,
        metavar="M",
        help="how many of them speak Redfish over HTTPS (default a fifth, at least 3)",
    )
    parser.add_argument("--flips", type=_count, default=12, help="machines flipped per round")
    parser.add_argument("--dead", type=_count, default=3, help="BMCs that stop answering")
    parser.set_defaults(handler=_handle)
