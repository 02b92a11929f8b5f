"""Run the real client (``ipmi.open_bmc``) against in-process BMCs over a fake network.

No sockets, no real time: the network is a trio object that carries datagrams between the
client's endpoint and a BMC's sans-I/O protocol machine (``ipmi.proto.server``), and drops,
duplicates, delays or reorders each one as a test's *rule* decides. Delays are
``trio.sleep`` calls, so on trio's MockClock (pytest-trio's ``autojump_clock`` fixture)
every time a test asserts is virtual and exact. Other packages' tests (the agent's) use it
to drive the same client code the daemon runs.

The quick way, for an agent test::

    from ipmi import open_bmc
    from ipmi.testing import open_fake_network

    async def test_power_is_read(autojump_clock):
        async with open_fake_network() as network:
            bmc = network.add_bmc("192.0.2.7", 623, password="pw", power_on=True)
            async with open_bmc(
                "192.0.2.7", 623, username="admin", password="pw", connect=network.connect
            ) as session:
                assert await session.get_power() is True
                bmc.power_on = False        # someone pressed the button
                assert await session.get_power() is False
                bmc.hanging = True          # logs in, then ignores every command
                bmc.silent = True           # answers nothing at all (dead or unplugged)
                bmc.wrong_password = True   # its password no longer matches the fleet's
                bmc.reboot()                # forgets every session

``network.connect`` is an ``ipmi.transport.Connector``: pass it as ``open_bmc(...,
connect=...)`` (or to whatever builds the sessions). An address with no BMC attached is
silence, like an unplugged host. :class:`FakeBmc` is a simulated BMC (``ipmi.sim``'s power
model behind ``ipmi.proto.server.BmcProtocol``): ``.power_on``, ``.actions`` (every Chassis
Control it carried out), ``.protocol.session_count(now)``, ``.label(datagram)``.

Scripted networks: a *rule* is ``rule(direction, label, nth) -> fate or None``, where
direction is ``"to_bmc"`` or ``"to_client"``, label names the datagram as the BMC reads it
(``"v15"`` for the capabilities probe, ``"open"``, ``"rakp1"``, ``"rakp3"``, and in a
session ``"status"``, ``"control"``, ``"device_id"``, ``"privilege"``, ``"close"``; an
answer carries its request's label), and nth counts that (direction, label) from 1. A fate
is the delays at which copies arrive: ``()`` loses it, ``(0,)`` delivers it at once,
``(0, 0)`` duplicates it, ``(1.5,)`` delays it; None means ``(0,)``. ``network.trace``
records every datagram (direction, label, time, fate); ``labels()`` and ``times()`` read
it. A *tap* (``tap(direction, datagram, endpoint)``) sees every datagram before its fate,
and may inject others with ``endpoint.deliver(...)``: forged or stray answers.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from ipmi.errors import IpmiError
from ipmi.proto import wire
from ipmi.proto.constants import Command, NetFn, PayloadType, Privilege
from ipmi.proto.server import BmcProtocol, ServerPolicy, is_session_packet
from ipmi.sim.bmc import PowerTiming, SimBmc
from ipmi.transport import peer_label

__all__ = [
    "FakeBmc",
    "FakeEndpoint",
    "FakeNetwork",
    "Fate",
    "Rule",
    "Tap",
    "Trace",
    "open_fake_network",
]

# The delays (seconds) at which copies of a datagram arrive; () loses it.
Fate = tuple[float, ...]
Rule = Callable[[str, str, int], Fate | None]  # (direction, label, nth of label) -> fate
Tap = Callable[[str, bytes, "FakeEndpoint"], None]  # (direction, datagram, client endpoint)

_COMMAND_LABELS: dict[tuple[int, int], str] = {
    (NetFn.CHASSIS, Command.GET_CHASSIS_STATUS): "status",
    (NetFn.CHASSIS, Command.CHASSIS_CONTROL): "control",
    (NetFn.APP, Command.GET_DEVICE_ID): "device_id",
    (NetFn.APP, Command.SET_SESSION_PRIVILEGE_LEVEL): "privilege",
    (NetFn.APP, Command.CLOSE_SESSION): "close",
    (NetFn.APP, Command.GET_CHANNEL_AUTH_CAPABILITIES): "auth_caps",
}
_PAYLOAD_LABELS: dict[int, str] = {
    PayloadType.OPEN_SESSION_REQUEST: "open",
    PayloadType.RAKP1: "rakp1",
    PayloadType.RAKP3: "rakp3",
}
# The bytes a BMC with the wrong_password fault checks against instead of the real one.
_WRONG_PASSWORD_SUFFIX = b"-not-this-one"


@attrs.define
class Trace:
    direction: str  # "to_bmc" | "to_client"
    label: str
    time: float
    fate: Fate
    peer: str  # the BMC's host:port


class FakeBmc:
    """One simulated BMC for the fake network, with faults a test switches on and off.

    ``power_on`` is the hardware truth (settable: an out-of-band change); ``actions``
    lists every Chassis Control action it carried out; ``silent`` answers nothing,
    ``hanging`` completes logins but ignores every command after them, and
    ``wrong_password`` makes its password differ from ``password``; ``reboot()`` forgets
    every session (the protocol machine starts over)."""

    def __init__(
        self,
        *,
        username: str = "admin",
        password: str,
        cipher_suites: Sequence[int] = (17, 3),
        power_on: bool = False,
        timing: PowerTiming | None = None,
        max_sessions: int = 4,
        idle_timeout: float = 60.0,
        max_privilege: int = Privilege.ADMINISTRATOR,
        kg: bytes | None = None,
        guid: bytes = bytes(range(16)),
    ) -> None:
        self.username = username
        self._password = password.encode()
        self.policy = ServerPolicy(
            cipher_suites=tuple(cipher_suites),
            max_sessions=max_sessions,
            idle_timeout=idle_timeout,
            max_privilege=max_privilege,
            kg=kg,
        )
        self.silent = False
        self.hanging = False
        # Get Chassis Status fault bits: 0x02 overload, 0x04 interlock, 0x08 main power
        # fault, 0x10 power control fault.
        self.fault_bits = 0
        self.wrong_password = False
        self.ignore_soft_off = False
        self.actions: list[int] = []
        self._guid = guid
        self._hardware = SimBmc(
            0,
            "fake",
            0,
            clock=trio.current_time,
            timing=timing or PowerTiming(),
            ignore_soft_off=lambda _index: self.ignore_soft_off,
            power_on=power_on,
        )
        self.protocol = self._new_protocol()

    def __repr__(self) -> str:  # never the password
        return f"<FakeBmc power={'on' if self.power_on else 'off'} actions={len(self.actions)}>"

    @property
    def power_on(self) -> bool:
        return self._hardware.power_on

    @power_on.setter
    def power_on(self, on: bool) -> None:
        self._hardware.set_power(on)

    def reboot(self) -> None:
        """Forget every session, pending login and cached answer (firmware restart)."""
        self.protocol = self._new_protocol()

    # -- what BmcProtocol calls (ipmi.proto.server.ManagedSystem) ------------------------
    def chassis_power(self, now: float) -> bool:
        return self._hardware.chassis_power(now)

    def chassis_faults(self, now: float) -> int:
        return self.fault_bits

    def chassis_control(self, action: int, now: float) -> int:
        self.actions.append(action)
        return self._hardware.chassis_control(action, now)

    # -- what the network calls ---------------------------------------------------------
    def receive(self, datagram: bytes, now: float) -> bytes | None:
        """The answer to one client datagram, or None (silence, a hang, or a drop)."""
        if self.silent:
            return None
        # Hung firmware still finishes a login (Set Session Privilege Level included).
        if self.hanging and is_session_packet(datagram) and self.label(datagram) != "privilege":
            return None
        return self.protocol.receive(datagram, now)

    def label(self, datagram: bytes) -> str:
        """What a client datagram is, read the way this BMC would (decrypting if needed)."""
        try:
            if not wire.is_v2(datagram):
                return "v15"
            session_id = int.from_bytes(datagram[6:10], "little")
            if session_id == 0:
                return _PAYLOAD_LABELS.get(datagram[5] & 0x3F, "other")
            session = self.protocol.sessions.get(session_id)
            if session is None or session.crypto is None:
                return "unknown-session"
            _, payload = session.crypto.open(datagram)
            request = wire.IpmiRequest.decode(payload)
            return _COMMAND_LABELS.get((request.netfn, request.cmd), "other")
        except (IpmiError, IndexError, ValueError):
            return "garbage"

    def _credentials(self, name: bytes) -> bytes | None:
        if name != self.username.encode():
            return None
        return self._password + _WRONG_PASSWORD_SUFFIX if self.wrong_password else self._password

    def _new_protocol(self) -> BmcProtocol:
        return BmcProtocol(
            self.policy,
            guid=self._guid,
            system=self,
            credentials=self._credentials,
            random_bytes=os.urandom,
        )


class FakeEndpoint:
    """The client's end of the fake network (an ``ipmi.transport.DatagramEndpoint``)."""

    def __init__(self, network: FakeNetwork, peer: str) -> None:
        self.peer = peer
        self._network = network
        self._send, self._receive = trio.open_memory_channel[bytes](math.inf)
        self.closed = False

    def __repr__(self) -> str:
        return f"FakeEndpoint({self.peer})"

    async def send(self, datagram: bytes) -> None:
        if self.closed:
            raise trio.ClosedResourceError("send on a closed endpoint")
        await trio.lowlevel.checkpoint_if_cancelled()  # as the UDP endpoint does
        self._network._from_client(self, datagram)

    async def receive(self) -> bytes:
        return await self._receive.receive()

    def deliver(self, datagram: bytes) -> None:
        """Hand ``datagram`` to the client now, as if it had just arrived."""
        if not self.closed:
            self._send.send_nowait(datagram)

    def close(self) -> None:
        self.closed = True


class FakeNetwork:
    """Carries datagrams between client endpoints and attached BMCs, as ``rule`` decides.

    Delayed datagrams are delivered by tasks in ``nursery``; use :func:`open_fake_network`
    to have one made and cancelled for you."""

    def __init__(
        self, nursery: trio.Nursery, *, rule: Rule | None = None, tap: Tap | None = None
    ) -> None:
        self.rule = rule
        self.tap = tap
        self._nursery = nursery
        self._bmcs: dict[str, FakeBmc] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self.trace: list[Trace] = []
        self.endpoints: list[FakeEndpoint] = []

    def attach(self, host: str, port: int, bmc: FakeBmc) -> FakeBmc:
        """Put ``bmc`` at ``host:port`` (replacing whatever was there); returns it."""
        self._bmcs[peer_label(host, port)] = bmc
        return bmc

    def add_bmc(self, host: str, port: int = 623, **options: object) -> FakeBmc:
        """A new :class:`FakeBmc` (``options`` are its keyword arguments) at ``host:port``."""
        return self.attach(host, port, FakeBmc(**options))  # type: ignore[arg-type]

    def bmc(self, host: str, port: int = 623) -> FakeBmc | None:
        return self._bmcs.get(peer_label(host, port))

    async def connect(self, host: str, port: int) -> FakeEndpoint:
        """An ``ipmi.transport.Connector``: an endpoint towards ``host:port``."""
        await trio.lowlevel.checkpoint()
        endpoint = FakeEndpoint(self, peer_label(host, port))
        self.endpoints.append(endpoint)
        return endpoint

    def labels(self, direction: str = "to_bmc") -> list[str]:
        return [t.label for t in self.trace if t.direction == direction]

    def times(self, label: str, direction: str = "to_bmc") -> list[float]:
        return [t.time for t in self.trace if t.direction == direction and t.label == label]

    # -- carrying datagrams -----------------------------------------------------------------
    def _fate(self, direction: str, label: str, peer: str) -> Fate:
        key = (direction, label)
        nth = self._counts.get(key, 0) + 1
        self._counts[key] = nth
        fate = self.rule(direction, label, nth) if self.rule else None
        fate = (0.0,) if fate is None else fate
        self.trace.append(Trace(direction, label, trio.current_time(), fate, peer))
        return fate

    def _from_client(self, endpoint: FakeEndpoint, datagram: bytes) -> None:
        bmc = self._bmcs.get(endpoint.peer)
        label = bmc.label(datagram) if bmc is not None else "unreachable"
        if self.tap is not None:
            self.tap("to_bmc", datagram, endpoint)
        for delay in self._fate("to_bmc", label, endpoint.peer):
            self._later(delay, self._at_bmc, endpoint, datagram, label)

    def _at_bmc(self, endpoint: FakeEndpoint, datagram: bytes, label: str) -> None:
        bmc = self._bmcs.get(endpoint.peer)
        if bmc is None:
            return  # nobody at that address: silence
        answer = bmc.receive(datagram, trio.current_time())
        if answer is None:
            return
        if self.tap is not None:
            self.tap("to_client", answer, endpoint)
        for delay in self._fate("to_client", label, endpoint.peer):
            self._later(delay, endpoint.deliver, answer)

    def _later(self, delay: float, function: Callable[..., None], *args: object) -> None:
        if delay <= 0:
            function(*args)
            return

        async def deliver() -> None:
            await trio.sleep(delay)
            function(*args)

        self._nursery.start_soon(deliver)


@asynccontextmanager
async def open_fake_network(
    *, rule: Rule | None = None, tap: Tap | None = None
) -> AsyncIterator[FakeNetwork]:
    """A :class:`FakeNetwork` whose datagrams still in flight are dropped when the block
    exits."""
    async with trio.open_nursery() as nursery:
        yield FakeNetwork(nursery, rule=rule, tap=tap)
        nursery.cancel_scope.cancel()
