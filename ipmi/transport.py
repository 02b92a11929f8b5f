"""Datagram endpoints for the client: a connected trio UDP socket, or anything shaped like one.

The client talks to a :class:`DatagramEndpoint`, never to a socket directly, so tests can put
a fake network (drops, duplicates, delays, reordering on trio's MockClock) in its place by
passing ``connect=`` to :func:`ipmi.open_bmc`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

logger = logging.getLogger(__name__)

# The largest RMCP+ datagram we ever expect: a few hundred bytes; leave generous room.
MAX_DATAGRAM = 2048


class DatagramEndpoint(Protocol):
    """One peer's datagrams: what the client needs from a transport."""

    async def send(self, datagram: bytes) -> None:
        """Send one datagram (never blocks for long; loss is the caller's problem)."""

    async def receive(self) -> bytes:
        """The next datagram from the peer; waits until one arrives (cancel to stop)."""

    def close(self) -> None:
        """Release the endpoint; idempotent."""


Connector = Callable[[str, int], Awaitable[DatagramEndpoint]]


def peer_label(host: str, port: int) -> str:
    """``host:port`` for messages, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class UdpEndpoint:
    """A UDP socket connected to one BMC: the kernel filters out datagrams from anyone else."""

    def __init__(self, sock: trio.socket.SocketType, peer: str) -> None:
        self._sock = sock
        self._peer = peer

    def __repr__(self) -> str:
        return f"UdpEndpoint({self._peer})"

    async def send(self, datagram: bytes) -> None:
        try:
            await self._sock.send(datagram)
        except (ConnectionRefusedError, BlockingIOError) as exc:
            # A previous datagram drew an ICMP port-unreachable, or the buffer is full:
            # either way this one is lost, and the retransmission logic deals with it.
            logger.debug("%s: send failed: %s", self._peer, exc)

    async def receive(self) -> bytes:
        while True:
            try:
                return await self._sock.recv(MAX_DATAGRAM)
            except ConnectionRefusedError:
                # ICMP port unreachable (nothing listening right now): the same as silence.
                logger.debug("%s: port unreachable", self._peer)

    def close(self) -> None:
        self._sock.close()


async def connect_udp(host: str, port: int) -> UdpEndpoint:
    """A UDP socket connected to ``host:port`` (IPv4 or IPv6, names resolved once here)."""
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, kind, proto, _, address = infos[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return UdpEndpoint(sock, peer_label(host, port))
