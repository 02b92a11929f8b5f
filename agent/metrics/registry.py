"""A tiny Prometheus registry and a minimal trio HTTP endpoint for it.

Declare metrics once, update them from trio tasks, render on scrape::

    registry = Registry()
    cycles = registry.counter("powersync_sync_cycles_total", "Sync cycles run")
    nodes = registry.gauge("powersync_nodes", "Nodes by power state", ["power_state"])
    rtt = registry.histogram("powersync_bmc_rtt_seconds", "BMC round-trip time")
    cycles.inc(); nodes.labels(power_state="power on").set(812); rtt.observe(0.0004)
    registry.on_collect(refresh_gauges)   # called before every render

``render()`` produces the text exposition format 0.0.4. Updates are meant to come from the
trio thread (no locks on the hot path).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

import trio

from agent.errors import AgentError

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Round-trip times of a status request: from a loopback BMC (~0.1 ms) to a slow one (seconds).
RTT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricsError(ValueError):
    """A metric was declared or used wrongly (a programming error, not an operator's)."""


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _check_label_name(label: str, where: str) -> None:
    if not _LABEL_NAME.match(label) or label.startswith("__") or label == "le":
        raise MetricsError(f"invalid label name {label!r}{where}")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{name}="{_escape_label(value)}"' for name, value in zip(names, values, strict=True)
    )
    return "{" + pairs + "}"


class _Metric:
    kind: str = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        if not _METRIC_NAME.match(name):
            raise MetricsError(f"invalid metric name {name!r}")
        for label in labelnames:
            _check_label_name(label, f" for {name}")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.const_labels: tuple[tuple[str, str], ...] = ()  # the registry's, on every sample

    def _labels(self, names: Sequence[str], values: Sequence[str]) -> str:
        const_names = tuple(name for name, _ in self.const_labels)
        const_values = tuple(value for _, value in self.const_labels)
        return _label_text((*const_names, *names), (*const_values, *values))

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise MetricsError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.labelnames)

    def header(self) -> list[str]:
        return [
            f"# HELP {self.name} {_escape_help(self.documentation)}",
            f"# TYPE {self.name} {self.kind}",
        ]

    def samples(self) -> list[str]:
        raise NotImplementedError


class _Value:
    """One labelled child of a counter or gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Counter(_Metric):
    """A value that only goes up; name it ``..._total``."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._children: dict[tuple[str, ...], _Value] = {}
        if not self.labelnames:
            self._children[()] = _Value()

    def labels(self, **labels: str) -> CounterChild:
        key = self._key(labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Value()
        return CounterChild(child)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def value(self, **labels: str) -> float:
        child = self._children.get(self._key(labels))
        return 0.0 if child is None else child.value

    def samples(self) -> list[str]:
        return [
            f"{self.name}{self._labels(self.labelnames, key)} {format_value(child.value)}"
            for key, child in sorted(self._children.items())
        ]


class CounterChild:
    __slots__ = ("_value",)

    def __init__(self, value: _Value) -> None:
        self._value = value

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise MetricsError("a counter cannot go down")
        self._value.value += amount


class Gauge(_Metric):
    """A value that goes up and down; ``clear()`` forgets every labelled child."""

    kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._children: dict[tuple[str, ...], _Value] = {}
        if not self.labelnames:
            self._children[()] = _Value()

    def labels(self, **labels: str) -> GaugeChild:
        key = self._key(labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Value()
        return GaugeChild(child)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self.labels().inc(-amount)

    def value(self, **labels: str) -> float:
        child = self._children.get(self._key(labels))
        return 0.0 if child is None else child.value

    def clear(self) -> None:
        """Drop all labelled values (e.g. before re-filling "nodes by power state")."""
        self._children.clear()
        if not self.labelnames:
            self._children[()] = _Value()

    def samples(self) -> list[str]:
        return [
            f"{self.name}{self._labels(self.labelnames, key)} {format_value(child.value)}"
            for key, child in sorted(self._children.items())
        ]


class GaugeChild:
    __slots__ = ("_value",)

    def __init__(self, value: _Value) -> None:
        self._value = value

    def set(self, value: float) -> None:
        self._value.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self._value.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self._value.value -= amount


class _Buckets:
    __slots__ = ("count", "counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; summed on render
        self.count = 0
        self.sum = 0.0


class Histogram(_Metric):
    """Observations counted into fixed buckets (``le`` upper bounds) plus sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = RTT_BUCKETS,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = sorted(float(bound) for bound in buckets)
        if not bounds or len(set(bounds)) != len(bounds) or any(math.isnan(b) for b in bounds):
            raise MetricsError(f"{name}: buckets must be distinct numbers")
        if not math.isinf(bounds[-1]):
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        self._children: dict[tuple[str, ...], _Buckets] = {}
        if not self.labelnames:
            self._children[()] = _Buckets(len(self.bounds))

    def labels(self, **labels: str) -> HistogramChild:
        key = self._key(labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Buckets(len(self.bounds))
        return HistogramChild(self.bounds, child)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def samples(self) -> list[str]:
        lines: list[str] = []
        for key, child in sorted(self._children.items()):
            cumulative = 0
            for bound, count in zip(self.bounds, child.counts, strict=True):
                cumulative += count
                labels = self._labels((*self.labelnames, "le"), (*key, format_value(bound)))
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            plain = self._labels(self.labelnames, key)
            lines.append(f"{self.name}_sum{plain} {format_value(child.sum)}")
            lines.append(f"{self.name}_count{plain} {child.count}")
        return lines


class HistogramChild:
    __slots__ = ("_bounds", "_buckets")

    def __init__(self, bounds: tuple[float, ...], buckets: _Buckets) -> None:
        self._bounds = bounds
        self._buckets = buckets

    def observe(self, value: float) -> None:
        buckets = self._buckets
        for index, bound in enumerate(self._bounds):
            if value <= bound:
                buckets.counts[index] += 1
                break
        buckets.count += 1
        buckets.sum += value


class Registry:
    """The set of metrics one process exposes, rendered in declaration order."""

    def __init__(self, const_labels: Mapping[str, str] | None = None) -> None:
        """``const_labels`` go on every sample (e.g. the agent's host, so the series of
        several agents on one site stay apart)."""
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[], None]] = []
        self.const_labels = tuple((const_labels or {}).items())
        for label, _ in self.const_labels:
            _check_label_name(label, " (constant)")

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise MetricsError(f"metric {metric.name} declared twice")
        if set(metric.labelnames) & {label for label, _ in self.const_labels}:
            raise MetricsError(f"{metric.name}: a label is also a constant label")
        metric.const_labels = self.const_labels
        self._metrics[metric.name] = metric

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = Counter(name, documentation, labelnames)
        self._add(metric)
        return metric

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, documentation, labelnames)
        self._add(metric)
        return metric

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = RTT_BUCKETS,
    ) -> Histogram:
        metric = Histogram(name, documentation, labelnames, buckets)
        self._add(metric)
        return metric

    def on_collect(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` before every render, to refresh gauges computed from state."""
        self._collectors.append(callback)

    def render(self) -> str:
        for callback in self._collectors:
            callback()
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n" if lines else ""


# --------------------------------------------------------------------------------------------
# the HTTP endpoint

MAX_REQUEST_HEAD: Final = 8192
REQUEST_DEADLINE: Final = 10.0  # a client that sends nothing is dropped after this
MAX_CONNECTIONS: Final = 32


def _response(status: str, body: bytes, content_type: str, *, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head if head_only else head + body


def answer(registry: Registry, request_head: bytes) -> bytes:
    """The full HTTP response to one request head (everything up to the blank line)."""
    request_line = request_head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response("400 Bad Request", b"bad request\n", "text/plain")
    method, target, _version = parts
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"only GET\n", "text/plain")
    if target.split("?", 1)[0] != "/metrics":
        return _response("404 Not Found", b"not found: try /metrics\n", "text/plain")
    body = registry.render().encode("utf-8")
    return _response("200 OK", body, CONTENT_TYPE, head_only=method == "HEAD")


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_REQUEST_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        buffer += chunk
    return buffer.split(b"\r\n\r\n", 1)[0]


async def _serve_one(
    registry: Registry, limiter: trio.CapacityLimiter, stream: trio.abc.Stream
) -> None:
    async with limiter, stream:
        try:
            with trio.move_on_after(REQUEST_DEADLINE):
                head = await _read_head(stream)
                if head is None:
                    await stream.send_all(
                        _response("400 Bad Request", b"bad request\n", "text/plain")
                    )
                else:
                    await stream.send_all(answer(registry, head))
        except trio.BrokenResourceError:
            pass  # the scraper went away; nothing to tell it


async def serve_metrics(
    registry: Registry,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``GET /metrics`` on host:port until cancelled; reports the bound port when started.

    One request per connection (``Connection: close``); anything else is 404/405/400.
    AgentError naming ``[metrics] listen`` when the address cannot be listened on (a port
    another process holds, an address not on this host).
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = exc.strerror or str(exc)
        raise AgentError(f"[metrics] listen {address}: {reason[:1].lower()}{reason[1:]}") from exc
    bound_port: int = listeners[0].socket.getsockname()[1]
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_one(registry, limiter, stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound_port)
