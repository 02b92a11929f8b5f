"""Datagram endpoints for the client: a connected UDP socket, or anything shaped like one.

The client talks to a :class:`DatagramEndpoint`, never to a socket directly, so tests can put
a fake network (drops, duplicates, delays, reordering on trio's MockClock) in its place by
passing ``connect=`` to :func:`ipmi.open_bmc`.

:class:`UdpEndpoint` drives a plain non-blocking stdlib socket with trio's I/O waits instead
of wrapping it in ``trio.socket``: with thousands of live sessions, trio's generic wrapper
(an async context manager and two scheduler trips around every ``send`` and ``recv``) was a
fifth of the client's CPU. The checkpoint rules are documented on each method.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

logger = logging.getLogger(__name__)

# The largest RMCP+ datagram we ever expect: a few hundred bytes; leave generous room.
MAX_DATAGRAM = 2048
# A send that still fails after this many tries is a lost datagram.
SEND_ATTEMPTS = 3


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
    """A UDP socket connected to one BMC: the kernel filters out datagrams from anyone else.

    ``sock`` must be a connected datagram socket (made non-blocking here); the endpoint
    owns it."""

    __slots__ = ("_peer", "_sock")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)  # a blocking send or recv would stall the whole trio run
        self._sock = sock
        self._peer = peer

    def __repr__(self) -> str:
        return f"UdpEndpoint({self._peer})"

    async def send(self, datagram: bytes) -> None:
        """Send one datagram. Raises Cancelled if already cancelled; otherwise a datagram
        that fits the socket buffer goes out without a trip through the scheduler (the
        client always awaits an answer right after, and that wait yields). A full buffer
        waits until it drains (cancellable); a send that still fails is a lost datagram,
        which the retransmission logic deals with."""
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self._sock
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                sock.send(datagram)
            except BlockingIOError:
                if attempt < SEND_ATTEMPTS:  # room is only worth waiting for to use it
                    await trio.lowlevel.wait_writable(sock)
            except ConnectionRefusedError:
                # An earlier datagram drew an ICMP port-unreachable; the kernel reports it
                # on this call instead of sending, and clears it: try again.
                logger.debug("%s: port unreachable (reported on send)", self._peer)
            else:
                return
        logger.debug("%s: datagram not sent", self._peer)

    async def receive(self) -> bytes:
        """The next datagram. Always a full checkpoint: it waits for the socket to be
        readable first (the answer to a request is never there yet), so a peer flooding
        datagrams cannot keep this task from yielding, and a cancel always lands."""
        sock = self._sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                continue  # a spurious wake-up
            except ConnectionRefusedError:
                # ICMP port unreachable (nothing listening right now): the same as silence.
                logger.debug("%s: port unreachable", self._peer)

    def close(self) -> None:
        if self._sock.fileno() == -1:
            return
        # Wake (with ClosedResourceError) any task still waiting on this socket, as trio's
        # own socket close does, before the file descriptor is released. Outside trio.run
        # (RuntimeError) nobody can be waiting on it.
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


async def connect_udp(host: str, port: int) -> UdpEndpoint:
    """A UDP socket connected to ``host:port`` (IPv4 or IPv6, names resolved once here)."""
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, kind, proto, _, address = infos[0]
    peer = peer_label(host, port)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        # A UDP connect only records the peer and picks a local port: nothing to wait for.
        # EAGAIN means no local port is free; trio's socket took that for "in progress"
        # and returned an unconnected socket (EDESTADDRREQ on the first send).
        sock.connect(address)
    except BlockingIOError:
        sock.close()
        raise OSError(
            errno.EAGAIN, f"{peer}: no free local UDP port (ephemeral port range exhausted)"
        ) from None
    except BaseException:
        sock.close()
        raise
    return UdpEndpoint(sock, peer)
