"""The Redfish client's HTTP: one keep-alive HTTP/1.1 connection per BMC, h11 over trio.

A BMC session needs one connection and one request at a time, which is all this does:
h11 frames the request and parses the answer, trio's SSLStream carries it. Going through
httpx's client, pool and trace hooks cost about three times the CPU of a status read on a
live session (docs/benchmarks.md, "Redfish"); its exception types are kept, so the retry
rules of ``redfish.client`` read the same for both connections.

:class:`HttpxConnection` is the same interface over an ``httpx.AsyncBaseTransport`` (the
tests' mock BMCs).
"""

from __future__ import annotations

import select
import ssl
from collections.abc import Mapping
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import h11
import httpx
import trio

from redfish.stats import Counters

RECEIVE_SIZE: Final = 65536
MAX_MADE: Final = 16  # requests kept per connection for reuse


class Reply(Protocol):
    """What the client reads of an answer (an ``httpx.Response`` is one too)."""

    @property
    def status_code(self) -> int: ...
    @property
    def content(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


class Headers(dict[str, str]):
    """Answer headers by lower-cased name; ``get`` ignores case (as httpx.Headers)."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class Answer:
    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content


class Connection(Protocol):
    async def request(
        self, method: str, path: str, *, body: bytes | None, headers: Mapping[str, str] | None
    ) -> Reply: ...
    async def aclose(self) -> None: ...


def _readable(stream: trio.SSLStream[trio.SocketStream]) -> bool:
    """An idle keep-alive connection with data waiting has been closed by the server."""
    poller = select.poll()  # not select(): descriptors above 1024 at 1,000 sessions
    poller.register(stream.transport_stream.socket.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class H11Connection:
    """HTTP/1.1 to one ``host:port`` (TLS for https), reconnecting when the server closed
    the connection. Failures are httpx's exception types, chained to the cause."""

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int,
        context: ssl.SSLContext,
        base_headers: Mapping[str, str],
        timeout: float,
        counters: Counters,
    ) -> None:
        self._scheme = scheme
        self._host = host.strip("[]")
        self._port = port
        self._context = context
        authority = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
        self._head = [("Host", authority), *base_headers.items()]
        self._timeout = timeout
        self._counters = counters
        self._stream: trio.abc.Stream | None = None
        self._h11 = h11.Connection(h11.CLIENT)
        # A status read repeats one GET with one token: h11 validates a Request's headers
        # when it is made, so the same request is made once (a few per session).
        self._made: dict[tuple[str, str, tuple[tuple[str, str], ...]], h11.Request] = {}

    def _head_of(
        self, method: str, path: str, headers: Mapping[str, str] | None, body: bytes | None
    ) -> h11.Request:
        extra = tuple((headers or {}).items())
        if body is not None:
            extra += (("Content-Length", str(len(body))),)
        key = (method, path, extra)
        made = self._made.get(key)
        if made is None:
            if len(self._made) >= MAX_MADE:
                self._made.clear()  # e.g. tokens from many re-logins
            made = h11.Request(method=method, target=path, headers=[*self._head, *extra])
            self._made[key] = made
        return made

    async def request(
        self, method: str, path: str, *, body: bytes | None, headers: Mapping[str, str] | None
    ) -> Answer:
        head = self._head_of(method, path, headers, body)
        done = False
        try:
            with trio.move_on_after(self._timeout):
                stream = await self._ready()
                answer = await self._exchange(stream, head, body)
                done = True
                return answer
            raise httpx.ReadTimeout(f"no answer in {self._timeout:.0f} s")
        finally:
            if not done:
                await self._drop()  # half a request on the wire: never reuse it
            elif self._h11.our_state is h11.MUST_CLOSE or self._h11.their_state is h11.MUST_CLOSE:
                await self._drop()  # "Connection: close" (HTTP/1.0 servers): next one is new
            else:
                self._h11.start_next_cycle()

    async def _ready(self) -> trio.abc.Stream:
        stream = self._stream
        if stream is not None and isinstance(stream, trio.SSLStream) and _readable(stream):
            await self._drop()
            stream = None
        if stream is None:
            stream = await self._connect()
            self._stream, self._h11 = stream, h11.Connection(h11.CLIENT)
        return stream

    async def _connect(self) -> trio.abc.Stream:
        try:
            tcp = await trio.open_tcp_stream(self._host, self._port)
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self._counters.connections += 1
        if self._scheme != "https":
            return tcp
        tls = trio.SSLStream(tcp, self._context, server_hostname=self._host, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(tcp)
            raise httpx.ConnectError("TLS handshake failed") from exc
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        self._counters.tls_handshakes += 1
        return tls

    async def _exchange(
        self, stream: trio.abc.Stream, head: h11.Request, body: bytes | None
    ) -> Answer:
        connection = self._h11
        data = connection.send(head) or b""
        if body:
            data += connection.send(h11.Data(data=body)) or b""
        data += connection.send(h11.EndOfMessage()) or b""
        try:
            await stream.send_all(data)
        except trio.BrokenResourceError as exc:
            raise httpx.WriteError("connection lost while sending") from exc
        status = 0
        headers = Headers()
        content = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(f"bad HTTP answer: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    connection.receive_data(bytes(await stream.receive_some(RECEIVE_SIZE)))
                except trio.BrokenResourceError as exc:
                    raise httpx.ReadError("connection lost while reading") from exc
            elif isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    key, text = name.decode("latin-1"), value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
            elif isinstance(event, h11.Data):
                content += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, headers, bytes(content))
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("the server closed the connection mid-answer")
            # h11.InformationalResponse (1xx): read on

    async def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        await self._drop()


class HttpxConnection:
    """The same interface through ``httpx.AsyncClient`` over a given transport (tests)."""

    def __init__(
        self,
        *,
        base_url: str,
        transport: httpx.AsyncBaseTransport,
        context: ssl.SSLContext,
        base_headers: Mapping[str, str],
        timeout: float,
        counters: Counters,
    ) -> None:
        self._counters = counters
        self._client = httpx.AsyncClient(
            base_url=base_url,
            verify=context,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=httpx.Timeout(timeout),
            headers=dict(base_headers),
            follow_redirects=False,
            trust_env=False,  # no proxies or .netrc from the environment
            transport=transport,
        )
        self._extensions = {"trace": self._trace}

    async def request(
        self, method: str, path: str, *, body: bytes | None, headers: Mapping[str, str] | None
    ) -> httpx.Response:
        return await self._client.request(
            method, path, content=body, headers=headers, extensions=self._extensions
        )

    async def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            self._counters.connections += 1
        elif event == "connection.start_tls.complete":
            self._counters.tls_handshakes += 1

    async def aclose(self) -> None:
        await self._client.aclose()


def connect_lazily(
    base_url: str,
    context: ssl.SSLContext,
    base_headers: Mapping[str, str],
    timeout: float,
    counters: Counters,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Connection:
    """The connection to ``base_url`` (``scheme://host:port``); it connects on first use.
    With a ``transport``, through httpx (the tests' mock BMCs)."""
    if transport is not None:
        return HttpxConnection(
            base_url=base_url,
            transport=transport,
            context=context,
            base_headers=base_headers,
            timeout=timeout,
            counters=counters,
        )
    parts = urlsplit(base_url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{base_url!r} has no host and port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return H11Connection(
        scheme=parts.scheme,
        host=host,
        port=parts.port,
        context=context,
        base_headers=base_headers,
        timeout=timeout,
        counters=counters,
    )
