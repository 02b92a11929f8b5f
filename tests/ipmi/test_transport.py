"""The real UDP transport (ipmi/transport.py) on loopback: trio semantics and socket errors.

The peer here is a plain stdlib socket owned by the test; the whole client over this
transport is exercised against ipmi_sim, pyghmi and the simulator elsewhere.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest
import trio

from ipmi.transport import UdpEndpoint, connect_udp
from tests.conftest import free_udp_ports


@contextmanager
def udp_peer(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    peer = socket.socket(family, socket.SOCK_DGRAM)
    try:
        peer.bind((host, 0))
        peer.settimeout(5.0)  # a bound on a broken test, never a timing assertion
        yield peer
    finally:
        peer.close()


class NoNames(trio.abc.HostnameResolver):
    """Answers every name lookup with "name or service not known"."""

    async def getaddrinfo(self, host: object, port: object, *args: object) -> NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, sockaddr: object, flags: int) -> NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def connected_pair(host: str = "127.0.0.1") -> tuple[UdpEndpoint, socket.socket]:
    """An endpoint connected to a fresh peer socket, and the peer connected back to it."""
    peer = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((host, 0))
    peer.settimeout(5.0)
    endpoint = await connect_udp(host, peer.getsockname()[1])
    peer.connect(endpoint._sock.getsockname()[:2])
    return endpoint, peer


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_datagrams_go_both_ways(host: str) -> None:
    endpoint, peer = await connected_pair(host)
    with peer:
        await endpoint.send(b"request")
        assert peer.recv(100) == b"request"
        peer.send(b"answer-1")
        peer.send(b"answer-2")
        assert await endpoint.receive() == b"answer-1"
        assert await endpoint.receive() == b"answer-2"
        endpoint.close()


async def test_datagrams_from_anyone_else_are_filtered_out() -> None:
    endpoint, peer = await connected_pair()
    with peer, udp_peer() as stranger:
        stranger.sendto(b"forged", endpoint._sock.getsockname())
        peer.send(b"genuine")
        assert await endpoint.receive() == b"genuine"
        endpoint.close()


async def test_receive_is_cancellable_while_waiting() -> None:
    endpoint, peer = await connected_pair()
    with peer:
        with trio.move_on_after(0.05) as scope:
            await endpoint.receive()
        assert scope.cancelled_caught
        # Nothing was lost or left registered: the next datagram still arrives.
        peer.send(b"later")
        assert await endpoint.receive() == b"later"
        endpoint.close()


async def test_receive_and_send_are_cancellation_points_even_when_they_need_not_wait() -> None:
    endpoint, peer = await connected_pair()
    with peer:
        peer.send(b"queued")
        await trio.sleep(0.01)  # let loopback deliver it (not a timing assertion)
        with trio.CancelScope() as scope:
            scope.cancel()
            await endpoint.receive()
        assert scope.cancelled_caught
        assert await endpoint.receive() == b"queued"  # a cancelled receive consumed nothing
        with trio.CancelScope() as scope:
            scope.cancel()
            await endpoint.send(b"never sent")
        assert scope.cancelled_caught
        await endpoint.send(b"sent")
        assert peer.recv(100) == b"sent"  # the cancelled one never went out
        endpoint.close()


async def test_a_flood_of_datagrams_does_not_starve_other_tasks() -> None:
    endpoint, peer = await connected_pair()
    endpoint._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    flood = 100
    with peer:
        for number in range(flood):
            peer.send(number.to_bytes(2, "big"))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(0)

        received = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.sleep(0)
            # Every datagram is already queued: a receive that never yielded would run
            # this whole loop without letting the ticker run once.
            for _ in range(flood):
                received.append(int.from_bytes(await endpoint.receive(), "big"))
            nursery.cancel_scope.cancel()
        assert received == list(range(flood))
        assert ticks >= flood // 2
        endpoint.close()


async def test_an_icmp_port_unreachable_is_silence_not_an_error() -> None:
    port = free_udp_ports(1)[0]
    endpoint = await connect_udp("127.0.0.1", port)
    # Nothing listens: each send draws an ICMP port-unreachable, which Linux reports on the
    # socket's next receive or send as ConnectionRefusedError. None of them may escape.
    for _ in range(3):
        await endpoint.send(b"anyone there?")
    with trio.move_on_after(0.1) as scope:
        await endpoint.receive()
    assert scope.cancelled_caught  # silence: no datagram, no exception
    await endpoint.send(b"still nobody")
    # The BMC comes (back) to life on that port: the same endpoint works again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as revived:
        revived.bind(("127.0.0.1", port))
        revived.settimeout(5.0)
        await endpoint.send(b"hello again")
        data, address = revived.recvfrom(100)
        assert data == b"hello again"
        revived.sendto(b"welcome back", address)
        assert await endpoint.receive() == b"welcome back"
    endpoint.close()


async def test_send_to_a_full_buffer_waits_for_room_and_never_raises() -> None:
    # A UDP socket on loopback practically never fills (the kernel drops at the receiver
    # instead), so a Unix datagram pair stands in: it blocks while the reader is full.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    endpoint = UdpEndpoint(ours, "unix-pair")
    with theirs:
        filled = 0
        with pytest.raises(BlockingIOError):
            while True:
                ours.send(b"x" * 64)
                filled += 1
        with trio.move_on_after(0.05) as scope:
            await endpoint.send(b"waits")  # no BlockingIOError escapes; it waits for room
        assert scope.cancelled_caught
        async with trio.open_nursery() as nursery:
            nursery.start_soon(endpoint.send, b"last")
            await trio.sleep(0.01)
            theirs.setblocking(False)
            drained = []
            with trio.fail_after(5):
                while not drained or drained[-1] != b"last":
                    try:
                        drained.append(theirs.recv(100))
                    except BlockingIOError:
                        await trio.sleep(0.001)
        assert len(drained) == filled + 1  # the cancelled send never went out
        endpoint.close()


async def test_close_is_idempotent_and_wakes_a_waiting_receiver() -> None:
    endpoint, peer = await connected_pair()
    with peer:
        async with trio.open_nursery() as nursery:

            async def receive_until_closed() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await endpoint.receive()

            nursery.start_soon(receive_until_closed)
            await trio.sleep(0.01)
            endpoint.close()
        endpoint.close()
    assert endpoint._sock.fileno() == -1


def test_close_outside_trio_and_repr() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    endpoint = UdpEndpoint(sock, "127.0.0.1:623")
    assert not sock.getblocking()  # never a blocking call inside trio
    assert repr(endpoint) == "UdpEndpoint(127.0.0.1:623)"
    endpoint.close()
    endpoint.close()
    assert sock.fileno() == -1


async def test_connect_resolves_names_and_rejects_the_unresolvable() -> None:
    with udp_peer() as peer:
        endpoint = await connect_udp("localhost", peer.getsockname()[1])
        await endpoint.send(b"by name")
        assert peer.recv(100) == b"by name"
        assert repr(endpoint) == f"UdpEndpoint(localhost:{peer.getsockname()[1]})"
        endpoint.close()
    # An unknown name: the resolver here is a name service that knows no names, because a
    # real lookup would ask the machine's DNS server, which is not on loopback.
    previous = trio.socket.set_custom_hostname_resolver(NoNames())
    try:
        with pytest.raises(OSError):
            await connect_udp("no-such-host.invalid", 623)
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


async def test_no_free_local_port_is_a_clear_error_not_an_unconnected_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Exhausting the machine's ephemeral ports in a test would hurt everyone else on it,
    # so the kernel's EAGAIN from connect() is injected here.
    opened: list[socket.socket] = []

    def connect_without_a_free_port(self: socket.socket, address: object) -> None:
        opened.append(self)
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(socket.socket, "connect", connect_without_a_free_port)
    with pytest.raises(OSError, match=r"127\.0\.0\.1:623: no free local UDP port") as caught:
        await connect_udp("127.0.0.1", 623)
    assert caught.value.errno == errno.EAGAIN
    assert opened and opened[0].fileno() == -1  # closed, not leaked
