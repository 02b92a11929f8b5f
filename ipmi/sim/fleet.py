"""Many simulated BMCs in one trio process, each on its own UDP port.

I/O design (why it is not one task per socket): all BMC sockets are registered in one
private epoll set, and a single trio task waits for that epoll descriptor to become
readable, then drains the ready sockets without blocking. An idle BMC therefore costs one
socket and one small Python object, with no task, timer or session state; a BMC's
protocol machine is created on its first datagram. Answers that must be delayed (latency,
jitter, slow BMCs) go through one heap served by one sender task.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import resource
import select
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ipmi.errors import IpmiError
from ipmi.proto.server import BmcProtocol, ServerPolicy, is_session_packet
from ipmi.sim.bmc import PowerTiming, SimBmc
from ipmi.sim.description import BmcDescription
from ipmi.sim.faults import Faults
from simcore import errors as simcore_errors
from simcore.control import serve_control
from simcore.fleet import (
    SimulatedFleet,
    cannot_bind,
    check_address,
    check_fleet_shape,
    port_for,
)

log = logging.getLogger("ipmi.sim")

MAX_DATAGRAM = 4096
DRAIN_PER_SOCKET = 32  # datagrams read from one socket before looking at the others
_GUID_NAMESPACE = uuid.UUID("6f1d2a52-6c1f-4c55-9a53-7b0d3c1e2f40")


class FleetError(IpmiError, simcore_errors.FleetError):
    """The fleet cannot start: address refused, port in use, too many open files."""


def ensure_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to cover ``needed`` descriptors, or explain why not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise FleetError(
                f"{needed} open files needed but the hard limit is {hard}: "
                f"raise it (ulimit -Hn, or LimitNOFILE= in systemd) or simulate fewer BMCs"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class Fleet(SimulatedFleet[SimBmc, Faults]):
    """A running fleet; see :func:`open_fleet`."""

    def __init__(
        self,
        bmcs: list[SimBmc],
        sockets: list[socket.socket],
        *,
        policy: ServerPolicy,
        username: str,
        password: str,
        faults: Faults,
        seed: int | None,
    ) -> None:
        super().__init__(bmcs, faults=faults, seed=seed, log=log)
        self._sockets = sockets
        self._by_fd = {sock.fileno(): bmc for sock, bmc in zip(sockets, bmcs, strict=True)}
        self._policy = policy
        self._username = username.encode()
        self._password = password.encode()
        self._wrong_password = (password + "-not-this-one").encode()
        self._delayed: list[tuple[float, int, socket.socket, bytes, Any]] = []
        self._delayed_order = itertools.count()
        self._wake_sender = trio.Event()
        self.username = username
        self.password = password
        # counters (plain ints: the hot path must stay cheap)
        self.received = 0
        self.answered = 0
        self.lost = 0  # dropped by the loss fault, either direction
        self.ignored = 0  # dead, rebooting or hanging BMCs, undecodable datagrams
        self.send_failures = 0
        self.errors = 0  # exceptions while handling a datagram (bugs; tests assert 0)

    # -- public control --------------------------------------------------------------------
    def describe(
        self,
        username: str | None = None,
        *,
        password_file: str | None = None,
        cipher_suites: Sequence[int] | None = None,
    ) -> list[BmcDescription]:
        """Every BMC as a neutral record (name, host, port, username, password file,
        cipher suites): what an inventory needs, never the password itself.
        ``username`` defaults to the fleet's."""
        suites = tuple(int(s) for s in cipher_suites) if cipher_suites is not None else None
        login = self.username if username is None else username
        return [
            BmcDescription(bmc.name, bmc.address, bmc.port, login, password_file, suites)
            for bmc in self.bmcs
        ]

    def statistics(self) -> dict[str, Any]:
        return {
            **self._power_statistics(),
            "received": self.received,
            "answered": self.answered,
            "lost": self.lost,
            "ignored": self.ignored,
            "send_failures": self.send_failures,
            "errors": self.errors,
            "delayed_pending": len(self._delayed),
        }

    def _credentials(self, bmc: SimBmc) -> Callable[[bytes], bytes | None]:
        def password_for(username: bytes) -> bytes | None:
            if username != self._username:
                return None
            if bmc.index in self._faults.wrong_password:
                return self._wrong_password
            return self._password

        return password_for

    def _protocol_for(self, bmc: SimBmc) -> BmcProtocol:
        protocol = BmcProtocol(
            self._policy,
            guid=uuid.uuid5(_GUID_NAMESPACE, f"{bmc.address}:{bmc.port}").bytes,
            system=bmc,
            credentials=self._credentials(bmc),
            random_bytes=os.urandom,
        )
        bmc.protocol = protocol
        return protocol

    # -- the datagram path -----------------------------------------------------------------
    def _handle(self, bmc: SimBmc, sock: socket.socket, data: bytes, peer: Any) -> None:
        self.received += 1
        faults = self._faults
        now = trio.current_time()
        index = bmc.index
        if self._silent(bmc, faults, now):
            self.ignored += 1
            return
        if faults.loss and self._rng.random() < faults.loss:
            self.lost += 1
            return
        if faults.hanging and index in faults.hanging and is_session_packet(data):
            self.ignored += 1
            return
        protocol = bmc.protocol or self._protocol_for(bmc)
        try:
            answer = protocol.receive(data, now)
        except Exception:  # a simulator bug must not take the whole fleet down
            self.errors += 1
            log.exception("%s: datagram handling failed; the fleet keeps serving", bmc.name)
            return
        if answer is None:
            self.ignored += 1
            return
        if faults.answer_loss and self._rng.random() < faults.answer_loss:
            self.lost += 1
            return
        bmc.requests += 1
        delay = self._answer_delay(bmc, faults)
        if delay > 0:
            heapq.heappush(
                self._delayed, (now + delay, next(self._delayed_order), sock, answer, peer)
            )
            self._wake_sender.set()
            return
        self._send(sock, answer, peer)

    def _send(self, sock: socket.socket, answer: bytes, peer: Any) -> None:
        try:
            sock.sendto(answer, peer)
        except OSError as exc:  # full buffer or unreachable peer: UDP may drop, so do we
            self.send_failures += 1
            if exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED, errno.ENOBUFS):
                log.debug("send to %s failed: %s", peer, exc)
        else:
            self.answered += 1

    async def _receive_loop(self, poller: select.epoll) -> None:
        by_fd = self._by_fd
        sockets = self._sockets
        while True:
            await trio.lowlevel.wait_readable(poller.fileno())
            for fd, _events in poller.poll(0):
                bmc = by_fd[fd]
                sock = sockets[bmc.index]
                for _ in range(DRAIN_PER_SOCKET):
                    try:
                        data, peer = sock.recvfrom(MAX_DATAGRAM)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # e.g. ICMP port unreachable reported on the socket
                        break
                    self._handle(bmc, sock, data, peer)

    async def _delayed_sender(self) -> None:
        while True:
            if not self._delayed:
                await self._wake_sender.wait()
                self._wake_sender = trio.Event()
                continue
            due = self._delayed[0][0]
            with trio.move_on_at(due):
                await self._wake_sender.wait()
                self._wake_sender = trio.Event()
            now = trio.current_time()
            while self._delayed and self._delayed[0][0] <= now:
                _due, _order, sock, answer, peer = heapq.heappop(self._delayed)
                self._send(sock, answer, peer)


def _bind_all(
    count: int, host: str, family: int, port_base: int, ports: Sequence[int] | None
) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for index in range(count):
            port = port_for(index, port_base, ports)
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.setblocking(False)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise cannot_bind(index, host, port, exc, FleetError) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@asynccontextmanager
async def open_fleet(
    count: int,
    *,
    host: str = "127.0.0.1",
    port_base: int = 0,
    ports: Sequence[int] | None = None,
    username: str = "admin",
    password: str,
    cipher_suites: Sequence[int] = (17, 3),
    faults: Faults | Mapping[str, Any] | None = None,
    timing: PowerTiming | None = None,
    power_on: bool = False,
    max_sessions: int = 4,
    idle_timeout: float = 60.0,
    seed: int | None = None,
    allow_any_address: bool = False,
    control_socket: str | None = None,
) -> AsyncIterator[Fleet]:
    """Serve ``count`` simulated BMCs until the block exits.

    BMC ``i`` listens on ``host:port_base + i`` (``port_base=0``: any free port each, see
    ``Fleet.bmcs[i].port``; or give explicit ``ports``). ``faults`` may be a
    :class:`Faults` or a mapping of its fields. ``control_socket`` also serves the JSON-line
    control interface (simcore.control) on that Unix socket path.
    """
    check_fleet_shape(count, port_base=port_base, ports=ports, password=password, error=FleetError)
    family = check_address(host, allow_any_address=allow_any_address, error=FleetError)
    policy = ServerPolicy(
        cipher_suites=tuple(cipher_suites), max_sessions=max_sessions, idle_timeout=idle_timeout
    )
    initial_faults = faults if isinstance(faults, Faults) else Faults().changed(faults or {})
    ensure_fd_limit(count + 256)
    sockets = _bind_all(count, host, family, port_base, ports)
    timing = timing or PowerTiming()
    fleet: Fleet | None = None

    def ignores_soft_off(index: int) -> bool:
        return fleet is not None and index in fleet.faults.ignore_soft_off

    bmcs = [
        SimBmc(
            index,
            host,
            sock.getsockname()[1],
            clock=trio.current_time,
            timing=timing,
            ignore_soft_off=ignores_soft_off,
            power_on=power_on,
        )
        for index, sock in enumerate(sockets)
    ]
    fleet = Fleet(
        bmcs,
        sockets,
        policy=policy,
        username=username,
        password=password,
        faults=initial_faults,
        seed=seed,
    )
    poller = select.epoll(sizehint=count)
    try:
        for sock in sockets:
            poller.register(sock.fileno(), select.EPOLLIN)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fleet._receive_loop, poller)
            nursery.start_soon(fleet._delayed_sender)
            nursery.start_soon(fleet._flap_forever)
            if control_socket is not None:
                await nursery.start(serve_control, fleet, control_socket)
            log.info("serving %d simulated BMCs on %s", count, host)
            yield fleet
            nursery.cancel_scope.cancel()
    finally:
        poller.close()
        for sock in sockets:
            sock.close()
