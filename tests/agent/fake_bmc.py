"""Fake BMCs for service tests on trio's MockClock (real BMCs are in the e2e tests).

A :class:`FakeFleet` is a BMC opener (``fleet.opener(endpoint)``) that hands out sessions to
in-memory BMCs which can be switched off out of band, made to fail, or made to hang. It
counts logins, closes, commands and the most requests ever in flight to one BMC at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from agent.bmc.seam import BmcEndpoint, BmcError
from store import Store


class FakeBmcError(BmcError):
    """What a failing fake BMC raises (a driver translates its client's errors to BmcError)."""


@attrs.frozen
class FakeStatistics:
    sent: int = 0
    received: int = 0
    retransmits: int = 0
    drops: int = 0
    logins: int = 0


@attrs.define(eq=False)
class FakeBmc:
    on: bool = True
    hang: bool = False  # every command waits forever
    error: str | None = None  # every command raises FakeBmcError(error)
    login_error: str | None = None
    follows_commands: bool = True  # False: set_power is accepted but nothing changes
    logins: int = 0
    closes: int = 0
    keepalives: int = 0
    commands: list[tuple[float, str]] = attrs.field(factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    command_time: float = 0.01  # virtual seconds per command
    login_time: float = 0.01  # virtual seconds per login
    fleet: FakeFleet | None = attrs.field(default=None, repr=False)


class FakeSession:
    def __init__(self, bmc: FakeBmc) -> None:
        self.bmc = bmc
        self.requests = 0

    async def _command(self, name: str) -> None:
        bmc = self.bmc
        bmc.in_flight += 1
        bmc.max_in_flight = max(bmc.max_in_flight, bmc.in_flight)
        fleet = bmc.fleet
        if fleet is not None:
            fleet.started()
        try:
            bmc.commands.append((trio.current_time(), name))
            if bmc.hang:
                await trio.sleep_forever()
            await trio.sleep(bmc.command_time)
            if bmc.error is not None:
                raise FakeBmcError(bmc.error)
            self.requests += 1
        finally:
            bmc.in_flight -= 1
            if fleet is not None:
                fleet.ended()

    async def get_power(self) -> bool:
        await self._command("status")
        return self.bmc.on

    async def set_power(self, action: str) -> None:
        await self._command(action)
        if self.bmc.follows_commands:
            if action == "on":
                self.bmc.on = True
            elif action in ("off", "soft"):
                self.bmc.on = False

    async def keepalive(self) -> None:
        await self._command("keepalive")
        self.bmc.keepalives += 1

    def statistics(self) -> FakeStatistics:
        return FakeStatistics(sent=self.requests, received=self.requests, logins=1)


class FakeFleet:
    def __init__(self) -> None:
        self.bmcs: dict[tuple[str, int], FakeBmc] = {}
        self.in_flight = 0  # requests (logins included) in flight across the fleet
        self.max_in_flight = 0

    def add(self, port: int, *, on: bool = True, host: str = "127.0.0.1") -> FakeBmc:
        bmc = self.bmcs[(host, port)] = FakeBmc(on=on, fleet=self)
        return bmc

    def started(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def ended(self) -> None:
        self.in_flight -= 1

    def __getitem__(self, port: int) -> FakeBmc:
        return self.bmcs[("127.0.0.1", port)]

    @asynccontextmanager
    async def opener(self, endpoint: BmcEndpoint) -> AsyncIterator[FakeSession]:
        bmc = self.bmcs.get((endpoint.host, endpoint.port))
        self.started()
        try:
            await trio.sleep(bmc.login_time if bmc else 0.01)  # a login is a few round trips
            if bmc is None or bmc.hang:
                await trio.sleep_forever()
        finally:
            self.ended()
        assert bmc is not None
        if bmc.login_error is not None:
            raise FakeBmcError(bmc.login_error)
        bmc.logins += 1
        try:
            yield FakeSession(bmc)
        finally:
            bmc.closes += 1


def add_nodes(
    store: Store,
    fleet: FakeFleet,
    count: int,
    *,
    first_port: int = 10001,
    on: bool = True,
    instance: bool = False,
    session_mode: str | None = None,
) -> list[str]:
    """``count`` nodes in the store, each with its own fake BMC; returns their names."""
    names = []
    for index in range(count):
        port = first_port + index
        fleet.add(port, on=on)
        name = f"node-{index:04d}"
        store.add_node(
            name=name,
            bmc_address="127.0.0.1",
            bmc_port=port,
            bmc_username="admin",
            bmc_password="fake-secret",
            instance_uuid=f"00000000-0000-4000-8000-{index:012d}" if instance else None,
            session_mode=session_mode,
        )
        names.append(name)
    return names
