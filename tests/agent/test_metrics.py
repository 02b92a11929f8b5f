"""The metrics registry's exposition text, and the endpoint over real HTTP on loopback."""

from __future__ import annotations

import math

import httpx
import pytest
import trio

from agent.metrics.registry import (
    CONTENT_TYPE,
    MetricsError,
    Registry,
    answer,
    format_value,
    serve_metrics,
)
from agent.metrics.sync import ServiceMetrics


def build() -> Registry:
    registry = Registry()
    cycles = registry.counter("powersync_sync_cycles_total", "Sync cycles run")
    nodes = registry.gauge("powersync_nodes", "Nodes by power state", ["power_state"])
    rtt = registry.histogram("powersync_bmc_rtt_seconds", "BMC round trip", buckets=[0.001, 0.01])
    cycles.inc()
    cycles.inc(2)
    nodes.labels(power_state="power on").set(3)
    nodes.labels(power_state="power off").set(1)
    for value in (0.0005, 0.001, 0.005, 2.0):
        rtt.observe(value)
    return registry


def test_render_exposition_format() -> None:
    assert build().render() == (
        "# HELP powersync_sync_cycles_total Sync cycles run\n"
        "# TYPE powersync_sync_cycles_total counter\n"
        "powersync_sync_cycles_total 3\n"
        "# HELP powersync_nodes Nodes by power state\n"
        "# TYPE powersync_nodes gauge\n"
        'powersync_nodes{power_state="power off"} 1\n'
        'powersync_nodes{power_state="power on"} 3\n'
        "# HELP powersync_bmc_rtt_seconds BMC round trip\n"
        "# TYPE powersync_bmc_rtt_seconds histogram\n"
        'powersync_bmc_rtt_seconds_bucket{le="0.001"} 2\n'
        'powersync_bmc_rtt_seconds_bucket{le="0.01"} 3\n'
        'powersync_bmc_rtt_seconds_bucket{le="+Inf"} 4\n'
        "powersync_bmc_rtt_seconds_sum 2.0065\n"
        "powersync_bmc_rtt_seconds_count 4\n"
    )


def test_labels_are_escaped_and_histogram_labels_keep_le_last() -> None:
    registry = Registry()
    failures = registry.counter("f_total", 'Failures "by" type\nsecond line', ["kind"])
    failures.labels(kind='no "answer"\\x\n').inc()
    timing = registry.histogram("t_seconds", "t", ["bmc"], buckets=[1])
    timing.labels(bmc="a").observe(0.5)
    text = registry.render()
    assert '# HELP f_total Failures "by" type\\nsecond line\n' in text
    assert 'f_total{kind="no \\"answer\\"\\\\x\\n"} 1\n' in text
    assert 't_seconds_bucket{bmc="a",le="1"} 1\n' in text
    assert 't_seconds_count{bmc="a"} 1\n' in text


def test_gauge_clear_and_collect_callbacks() -> None:
    registry = Registry()
    nodes = registry.gauge("nodes", "n", ["state"])
    nodes.labels(state="gone").set(5)
    state = {"on": 2}

    def refresh() -> None:
        nodes.clear()
        for name, count in state.items():
            nodes.labels(state=name).set(count)

    registry.on_collect(refresh)
    text = registry.render()
    assert "gone" not in text and 'nodes{state="on"} 2' in text
    state["on"] = 9
    assert 'nodes{state="on"} 9' in registry.render()
    assert nodes.value(state="on") == 9


def test_misuse_is_refused() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "c", ["a"])
    with pytest.raises(MetricsError):
        registry.gauge("c_total", "again")
    with pytest.raises(MetricsError):
        counter.labels(b="x")
    with pytest.raises(MetricsError):
        counter.labels(a="x").inc(-1)
    with pytest.raises(MetricsError):
        registry.gauge("bad-name", "x")
    with pytest.raises(MetricsError):
        registry.histogram("h", "x", ["le"])


def test_constant_labels_go_on_every_sample() -> None:
    registry = Registry({"host": 'agent-"a"'})
    registry.counter("c_total", "c").inc()
    registry.gauge("g", "g", ["state"]).labels(state="on").set(2)
    registry.histogram("h_seconds", "h", buckets=[1.0]).observe(0.5)
    samples = [line for line in registry.render().splitlines() if not line.startswith("#")]
    assert samples == [
        'c_total{host="agent-\\"a\\""} 1',
        'g{host="agent-\\"a\\"",state="on"} 2',
        'h_seconds_bucket{host="agent-\\"a\\"",le="1"} 1',
        'h_seconds_bucket{host="agent-\\"a\\"",le="+Inf"} 1',
        'h_seconds_sum{host="agent-\\"a\\""} 0.5',
        'h_seconds_count{host="agent-\\"a\\""} 1',
    ]
    with pytest.raises(MetricsError):
        registry.gauge("clash", "a label that is also constant", ["host"])
    with pytest.raises(MetricsError):
        Registry({"le": "x"})


def test_the_agents_metrics_carry_its_host() -> None:
    metrics = ServiceMetrics(agent_host="agent-b")
    text = metrics.registry.render()
    assert 'powersync_sync_cycle_nodes{host="agent-b"} 0' in text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples and all('host="agent-b"' in line for line in samples)


def test_format_value() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"


def test_answer_status_codes() -> None:
    registry = build()
    assert answer(registry, b"GET /metrics HTTP/1.1\r\nHost: x").startswith(b"HTTP/1.1 200 OK")
    assert answer(registry, b"GET /metrics?x=1 HTTP/1.0").startswith(b"HTTP/1.1 200 OK")
    head = answer(registry, b"HEAD /metrics HTTP/1.1")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    assert answer(registry, b"GET / HTTP/1.1").startswith(b"HTTP/1.1 404")
    assert answer(registry, b"POST /metrics HTTP/1.1").startswith(b"HTTP/1.1 405")
    assert answer(registry, b"garbage").startswith(b"HTTP/1.1 400")


async def test_serve_over_real_http_on_loopback() -> None:
    registry = build()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, registry, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == CONTENT_TYPE
            assert response.text == registry.render()
            registry.counter("late_total", "declared after start").inc()
            assert "late_total 1" in (await client.get("/metrics")).text
            assert (await client.get("/other")).status_code == 404
            assert (await client.post("/metrics", content=b"x")).status_code == 405
        # a raw client that sends a junk request line, then one that sends nothing and leaves
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"NONSENSE\r\n\r\n")
            reply = b""
            while chunk := await stream.receive_some(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 400")
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        await silent.aclose()
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200
        nursery.cancel_scope.cancel()


async def test_serve_on_ipv6_loopback() -> None:
    registry = build()
    async with trio.open_nursery() as nursery:
        try:
            port = await nursery.start(serve_metrics, registry, "::1", 0)
        except OSError:
            pytest.skip("no IPv6 loopback here")
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://[::1]:{port}/metrics")
            assert "powersync_nodes" in response.text
        nursery.cancel_scope.cancel()
