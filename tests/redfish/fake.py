"""A fake Redfish BMC for ``httpx.MockTransport``: the simulator's sans-I/O SimService
(so sessions are counted on the server side), plus per-request hooks that can answer
instead of it (garbage, hangs, scripted statuses) or raise transport errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from redfish import open_redfish
from redfish.client import RedfishSession, RetryPolicy
from redfish.sim import Faults, PowerTiming, ServiceOptions, SimRequest, SimService

PASSWORD = "fake-bmc-password-7"
ADDRESS = "https://127.0.0.1:8443"
PEER = "127.0.0.1:8443"

Hook = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


class FakeBmc:
    def __init__(
        self,
        *,
        options: ServiceOptions | None = None,
        timing: PowerTiming | None = None,
        power_on: bool = False,
    ) -> None:
        self.faults = Faults()
        self.password = PASSWORD
        self.hooks: list[Hook] = []
        self.seen: list[tuple[str, str]] = []
        self._tokens = 0
        self.service = SimService(
            0,
            "127.0.0.1",
            8443,
            clock=trio.current_time,
            timing=timing or PowerTiming(),
            options=options or ServiceOptions(),
            username="admin",
            password_for=lambda _index: self.password,
            faults=lambda: self.faults,
            new_token=self._token,
            power_on=power_on,
        )
        self.transport = httpx.MockTransport(self._handle)

    def _token(self) -> str:
        self._tokens += 1
        return f"token-{self._tokens}"

    @property
    def sessions(self) -> int:
        return self.service.session_count()

    def count(self, method: str, path: str | None = None) -> int:
        return sum(1 for m, p in self.seen if m == method and (path is None or p == path))

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        for hook in list(self.hooks):
            answer = await hook(request)
            if answer is not None:
                return answer
        headers = {name.lower(): value for name, value in request.headers.items()}
        answer_ = self.service.handle(
            SimRequest(request.method, request.url.path, headers, request.content),
            trio.current_time(),
        )
        return httpx.Response(answer_.status, headers=list(answer_.headers), content=answer_.body)

    def open(self, **kwargs: Any) -> Any:
        kwargs.setdefault("username", "admin")
        kwargs.setdefault("password", PASSWORD)
        kwargs.setdefault("retry", RetryPolicy())
        return open_redfish(ADDRESS, transport=self.transport, **kwargs)


def on(method: str, path: str, respond: Callable[[], Awaitable[httpx.Response]]) -> Hook:
    """A hook answering ``method path`` with ``respond()`` (which may sleep or raise)."""

    async def hook(request: httpx.Request) -> httpx.Response | None:
        if request.method == method and request.url.path == path:
            return await respond()
        return None

    return hook


def times(count: int, hook: Hook) -> Hook:
    """``hook``, for its first ``count`` matches only."""
    left = [count]

    async def limited(request: httpx.Request) -> httpx.Response | None:
        if left[0] <= 0:
            return None
        answer = await hook(request)
        if answer is not None:
            left[0] -= 1
        return answer

    return limited


async def hang() -> httpx.Response:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


__all__ = ["ADDRESS", "PASSWORD", "PEER", "FakeBmc", "RedfishSession", "hang", "on", "times"]
