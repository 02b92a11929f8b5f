"""Many simulated Redfish services in one trio process, each on its own HTTPS port.

Every port has a listening socket; one ``trio.serve_listeners`` serves them all and each
connection gets a task that speaks HTTP/1.1 (h11, keep-alive) over TLS (one server
context and certificate for the fleet) and hands requests to the sans-I/O
:class:`~redfish.sim.service.SimService` of that port. Faults that are about time
(dead, hanging, slow, latency) are applied here; the rest live in the service.
"""

from __future__ import annotations

import http
import logging
import secrets
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import h11
import trio

from redfish.errors import RedfishError
from redfish.sim.certs import TlsFiles, make_tls_files, server_context
from redfish.sim.faults import Faults
from redfish.sim.service import ServiceOptions, SimRequest, SimResponse, SimService
from simcore import errors as simcore_errors
from simcore.control import serve_control
from simcore.fleet import (
    SimulatedFleet,
    cannot_bind,
    check_address,
    check_fleet_shape,
    port_for,
)
from simcore.power import PowerTiming

log = logging.getLogger("redfish.sim")

MAX_BODY: Final = 64 * 1024
SERVER_HEADER: Final = b"powersync-redfish-sim"
# Root and logins still work on a hanging BMC (as IPMI's "hanging" still logs in).
_HANGING_SERVES: Final = frozenset(
    {("GET", "/redfish/v1"), ("POST", "/redfish/v1/SessionService/Sessions")}
)


class FleetError(RedfishError, simcore_errors.FleetError):
    """The fleet cannot start: address refused, port in use."""


class Fleet(SimulatedFleet[SimService, Faults]):
    """A running fleet; see :func:`open_fleet`. ``bmcs[i]`` is BMC i's SimService."""

    def __init__(
        self,
        bmcs: list[SimService],
        *,
        username: str,
        password: str,
        faults: Faults,
        tls: TlsFiles,
        seed: int | None,
        first_index: int = 0,
    ) -> None:
        super().__init__(bmcs, faults=faults, seed=seed, log=log, first_index=first_index)
        self._by_port = {bmc.port: bmc for bmc in bmcs}
        self.username = username
        self.password = password
        self.tls = tls
        # counters
        self.connections = 0
        self.tls_failures = 0
        self.protocol_errors = 0
        self.errors = 0  # exceptions while serving a request (bugs; tests assert 0)

    @property
    def ca_file(self) -> str:
        return self.tls.ca_file

    def _faults_replaced(self) -> None:
        for bmc in self.bmcs:
            bmc.errors_sent = 0  # a 5xx burst starts again from zero for every BMC

    def statistics(self) -> dict[str, Any]:
        return {
            **self._power_statistics(),
            "requests": sum(bmc.requests for bmc in self.bmcs),
            "logins": sum(bmc.logins for bmc in self.bmcs),
            "logouts": sum(bmc.logouts for bmc in self.bmcs),
            "connections": self.connections,
            "tls_handshakes": sum(bmc.tls_handshakes for bmc in self.bmcs),
            "tls_failures": self.tls_failures,
            "protocol_errors": self.protocol_errors,
            "errors": self.errors,
        }

    # ---- serving ------------------------------------------------------------------------

    async def serve(self, stream: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.connections += 1
        bmc = self._by_port[stream.socket.getsockname()[1]]
        bmc.connections += 1
        if self._silent(bmc, self._faults, trio.current_time()):
            await _drain(stream)  # a black hole: no TLS, no answer, until the client leaves
            return
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            self.tls_failures += 1  # e.g. a client that does not trust our CA
            await stream.aclose()
            return
        bmc.tls_handshakes += 1
        try:
            await self._http(bmc, tls)
        except trio.BrokenResourceError:
            pass  # the client went away mid-request
        finally:
            await tls.aclose()

    async def _http(self, bmc: SimService, stream: trio.SSLStream[trio.SocketStream]) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        while True:
            try:
                request = await _read_request(connection, stream, bmc.options.idle_timeout)
            except h11.RemoteProtocolError:
                self.protocol_errors += 1
                return
            if request is None:
                return
            faults = self._faults
            if self._silent(bmc, faults, trio.current_time()) or (
                bmc.index in faults.hanging
                and (request.method, request.path.rstrip("/")) not in _HANGING_SERVES
            ):
                await _drain(stream)
                return
            try:
                response = bmc.handle(request, trio.current_time())
            except Exception:  # a simulator bug must not take the fleet down
                self.errors += 1
                log.exception("%s: request handling failed; the fleet keeps serving", bmc.name)
                response = SimResponse(500)
            delay = self._answer_delay(bmc, faults)
            if delay > 0:
                await trio.sleep(delay)
            await _send(connection, stream, response)
            if connection.our_state is h11.MUST_CLOSE:
                return
            connection.start_next_cycle()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    """Read and ignore everything until the peer closes."""
    try:
        while await stream.receive_some(4096):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _read_request(
    connection: h11.Connection, stream: trio.abc.Stream, idle_timeout: float
) -> SimRequest | None:
    """The next request, or None when the client closed or stayed idle too long."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data: bytes | bytearray = b""
            with trio.move_on_after(idle_timeout if head is None else 30.0):
                data = await stream.receive_some(16384)
            if not data and head is None and connection.their_state is h11.IDLE:
                return None  # closed or idle: a BMC closes idle keep-alive connections
            connection.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            headers = {
                name.decode().lower(): value.decode("latin-1") for name, value in head.headers
            }
            path = head.target.decode("latin-1").split("?", 1)[0]
            return SimRequest(head.method.decode(), path, headers, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send(connection: h11.Connection, stream: trio.abc.Stream, response: SimResponse) -> None:
    headers = [(name.encode(), value.encode()) for name, value in response.headers]
    headers += [
        (b"Content-Length", str(len(response.body)).encode()),
        (b"Server", SERVER_HEADER),
        (b"OData-Version", b"4.0"),
    ]
    try:
        reason = http.HTTPStatus(response.status).phrase.encode()
    except ValueError:
        reason = b""
    head = h11.Response(status_code=response.status, headers=headers, reason=reason)
    data = connection.send(head)
    if response.body:
        data = (data or b"") + (connection.send(h11.Data(data=response.body)) or b"")
    data = (data or b"") + (connection.send(h11.EndOfMessage()) or b"")
    await stream.send_all(data)


async def _bind_all(
    count: int, host: str, family: int, port_base: int, ports: Sequence[int] | None
) -> list[trio.SocketListener]:
    listeners: list[trio.SocketListener] = []
    try:
        for index in range(count):
            port = port_for(index, port_base, ports)
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                await sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise cannot_bind(index, host, port, exc, FleetError) from None
            sock.listen(64)
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            await listener.aclose()
        raise
    return listeners


@asynccontextmanager
async def open_fleet(
    count: int,
    *,
    host: str = "127.0.0.1",
    port_base: int = 0,
    ports: Sequence[int] | None = None,
    username: str = "admin",
    password: str,
    tls_dir: str | None = None,
    faults: Faults | Mapping[str, Any] | None = None,
    timing: PowerTiming | None = None,
    options: ServiceOptions | None = None,
    power_on: bool = False,
    seed: int | None = None,
    allow_any_address: bool = False,
    control_socket: str | None = None,
    first_index: int = 0,
) -> AsyncIterator[Fleet]:
    """Serve ``count`` simulated Redfish services over HTTPS until the block exits.

    BMC ``i`` listens on ``host:port_base + i`` (``port_base=0``: any free port each, see
    ``Fleet.bmcs[i].port``; or give explicit ``ports``). A fresh CA and server certificate
    are written into ``tls_dir`` (``Fleet.ca_file`` is its ca.pem; without ``tls_dir`` a
    temporary directory that is removed on exit). ``faults`` may be a :class:`Faults` or a
    mapping of its fields; ``options`` say how the services behave (sessions, ActionInfo,
    Tasks). ``control_socket`` also serves the JSON-line control interface there.
    ``first_index`` numbers the BMCs from there (names, fault selections, control requests),
    so a Redfish fleet can follow an IPMI fleet of ``first_index`` BMCs in one index space.
    """
    check_fleet_shape(count, port_base=port_base, ports=ports, password=password, error=FleetError)
    if first_index < 0:
        raise ValueError("first_index must be >= 0")
    family = check_address(host, allow_any_address=allow_any_address, error=FleetError)
    initial_faults = faults if isinstance(faults, Faults) else Faults().changed(faults or {})
    with tempfile.TemporaryDirectory(prefix="redfish-sim-") as scratch:
        tls = make_tls_files(tls_dir or scratch, hosts=(host,))
        context = server_context(tls)
        listeners = await _bind_all(count, host, family, port_base, ports)
        fleet: Fleet | None = None
        wrong = password + "-not-this-one"

        def password_for(index: int) -> str:
            assert fleet is not None
            return wrong if index in fleet.faults.wrong_password else password

        def current_faults() -> Faults:
            assert fleet is not None
            return fleet.faults

        bmcs = [
            SimService(
                first_index + index,
                host,
                listener.socket.getsockname()[1],
                clock=trio.current_time,
                timing=timing or PowerTiming(),
                options=options or ServiceOptions(),
                username=username,
                password_for=password_for,
                faults=current_faults,
                new_token=lambda: secrets.token_hex(16),
                power_on=power_on,
            )
            for index, listener in enumerate(listeners)
        ]
        fleet = Fleet(
            bmcs,
            username=username,
            password=password,
            faults=initial_faults,
            tls=tls,
            seed=seed,
            first_index=first_index,
        )
        try:
            async with trio.open_nursery() as nursery:

                async def handler(stream: trio.SocketStream) -> None:
                    assert fleet is not None
                    await fleet.serve(stream, context)

                await nursery.start(trio.serve_listeners, handler, listeners)
                nursery.start_soon(fleet._flap_forever)
                if control_socket is not None:
                    await nursery.start(serve_control, fleet, control_socket)
                log.info("serving %d simulated Redfish services on %s", count, host)
                yield fleet
                nursery.cancel_scope.cancel()
        finally:
            for listener in listeners:
                listener.socket.close()
