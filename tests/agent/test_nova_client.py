"""The Nova power-update client against the fake Keystone + Nova on loopback (real HTTP)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.nova.client import NovaClient, PowerEvent, Verdict, chunk_events
from agent.nova.config import NovaConfig, parse_nova_section
from agent.nova.keystone import (
    KeystoneSession,
    ServiceRefusedError,
    ServiceUnavailableError,
    open_http_client,
)
from tests.agent.fake_openstack import FakeOpenStack, nova_table, open_fake_openstack


@pytest.fixture
async def cloud() -> AsyncIterator[FakeOpenStack]:
    async with open_fake_openstack() as cloud:
        yield cloud


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with open_http_client(NovaConfig()) as client:
        yield client


def client_for(cloud: FakeOpenStack, http: httpx.AsyncClient, **overrides: object) -> NovaClient:
    config = parse_nova_section(nova_table(cloud, **overrides), source="test.toml", environ={})
    return NovaClient(config, KeystoneSession(config, http))


def events_for(servers: list[str], state: str = "power off") -> list[PowerEvent]:
    return [PowerEvent(index, server, state) for index, server in enumerate(servers)]


async def test_one_event_delivered_with_the_real_contract(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    server = cloud.add_instance()
    nova = client_for(cloud, http)
    [result] = await nova.send([PowerEvent(7, server, "power on")])
    assert result.verdict is Verdict.DELIVERED and result.event.key == 7
    assert cloud.delivered() == [f"{server}:POWER_ON"]
    post = next(r for r in cloud.requests if r.method == "POST" and "os-server" in r.path)
    assert post.headers["openstack-api-version"] == "compute 2.76"
    assert post.headers["x-openstack-nova-api-version"] == "2.76"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-openstack-request-id"].startswith("req-")
    assert json.loads(post.body) == {
        "events": [{"name": "power-update", "server_uuid": server, "tag": "POWER_ON"}]
    }


async def test_batch_with_per_event_codes(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    good = cloud.add_instance()
    no_host = cloud.add_instance(host=None)
    unknown = "0e7c4c36-5d2b-4b8e-9d5e-5b1f3c1f0a11"
    also_good = cloud.add_instance()
    nova = client_for(cloud, http)
    results = await nova.send(events_for([good, no_host, unknown, also_good]))
    assert nova.requests == 1  # one request for the whole batch (answered 207)
    assert [r.verdict for r in results] == [
        Verdict.DELIVERED,
        Verdict.DROPPED,
        Verdict.DROPPED,
        Verdict.DELIVERED,
    ]
    assert "no compute host" in results[1].reason and "422" in results[1].reason
    assert "does not know the instance" in results[2].reason and "404" in results[2].reason
    assert cloud.delivered() == [f"{good}:POWER_OFF", f"{also_good}:POWER_OFF"]


async def test_revoked_token_renewed_and_resent_once(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    server = cloud.add_instance()
    nova = client_for(cloud, http)
    await nova.send(events_for([server]))
    cloud.revoke_tokens()  # expired early, server side
    [result] = await nova.send(events_for([server], "power on"))
    assert result.verdict is Verdict.DELIVERED
    assert nova.requests == 3  # first, then 401 + resend
    assert cloud.delivered(server) == ["POWER_OFF", "POWER_ON"]


async def test_old_nova_406(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    cloud.max_version = (2, 75)
    server = cloud.add_instance()
    with pytest.raises(ServiceRefusedError, match="Train or newer") as caught:
        await client_for(cloud, http).send(events_for([server]))
    assert caught.value.kind == "microversion"
    assert cloud.events == []


async def test_missing_role_403_names_the_role(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    cloud.roles = ("member", "reader")
    with pytest.raises(ServiceRefusedError, match="'service' role") as caught:
        await client_for(cloud, http).send(events_for([cloud.add_instance()]))
    assert caught.value.kind == "forbidden"


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient(
    cloud: FakeOpenStack, http: httpx.AsyncClient, status: int
) -> None:
    cloud.nova_statuses = [status]
    with pytest.raises(ServiceUnavailableError, match=str(status)):
        await client_for(cloud, http).send(events_for([cloud.add_instance()]))


async def test_hang_times_out(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    nova = client_for(cloud, http, timeout=0.3)
    server = cloud.add_instance()
    await nova.send(events_for([server]))  # token obtained while Nova was well
    cloud.nova_hang = True
    with pytest.raises(ServiceUnavailableError, match="did not answer"):
        await nova.send(events_for([server]))


async def test_nova_gone_is_transient(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    server = cloud.add_instance()
    with socket.socket() as probe:  # a port nothing listens on (bound, then released)
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nova = client_for(cloud, http, endpoint_override=f"http://127.0.0.1:{closed_port}/v2.1")
    with pytest.raises(ServiceUnavailableError, match=f"Nova at http://127.0.0.1:{closed_port}"):
        await nova.send(events_for([server]))


async def test_413_splits_until_the_batch_fits(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    servers = [cloud.add_instance() for _ in range(12)]
    cloud.body_limit = 600  # each event is ~95 bytes on the wire
    nova = client_for(cloud, http)
    results = await nova.send(events_for(servers))
    assert all(r.verdict is Verdict.DELIVERED for r in results)
    assert nova.requests > 2
    assert cloud.delivered() == [f"{s}:POWER_OFF" for s in servers]  # order kept


async def test_400_isolates_the_bad_event(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    servers = [cloud.add_instance() for _ in range(4)]
    events = events_for(servers)
    events[2] = PowerEvent(2, "not-a-uuid", "power off")
    results = await client_for(cloud, http).send(events)
    assert [r.verdict for r in results] == [Verdict.DELIVERED] * 2 + [
        Verdict.DROPPED,
        Verdict.DELIVERED,
    ]
    assert "server_uuid" in results[2].reason


async def test_project_mismatch_400_is_refused_not_dropped(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    wrong = cloud.endpoint_url("r1-public") + "/0123456789abcdef0123456789abcdef"
    nova = client_for(cloud, http, endpoint_override=wrong)
    with pytest.raises(ServiceRefusedError, match="Malformed request URL"):
        await nova.send(events_for([cloud.add_instance(), cloud.add_instance()]))


async def test_train_whole_request_404_drops(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    cloud.train_404 = True
    results = await client_for(cloud, http).send(events_for([cloud.add_instance(host=None)]))
    assert [r.verdict for r in results] == [Verdict.DROPPED]


async def test_wrong_endpoint_404_is_refused(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    nova = client_for(cloud, http, endpoint_override=cloud.base_url + "/compute/nowhere/v2.1")
    with pytest.raises(ServiceRefusedError, match="404") as caught:
        await nova.send(events_for([cloud.add_instance()]))
    assert caught.value.kind == "nova-404"


def test_chunks_respect_count_and_body_size() -> None:
    events = events_for([f"00000000-0000-4000-8000-{i:012d}" for i in range(25)])
    by_count = list(chunk_events(events, max_events=10, max_body_bytes=100_000))
    assert [len(c) for c in by_count] == [10, 10, 5]
    by_size = list(chunk_events(events, max_events=100, max_body_bytes=1000))
    assert [e for chunk in by_size for e in chunk] == events
    for chunk in by_size:
        body = json.dumps({"events": [e.wire() for e in chunk]}).encode()
        assert len(body) <= 1000
    assert len(by_size) > 2


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=60), max_size=40),
    max_events=st.integers(min_value=1, max_value=10),
    max_body=st.integers(min_value=200, max_value=2000),
)
def test_chunking_keeps_order_and_limits(sizes: list[int], max_events: int, max_body: int) -> None:
    # POWER_ON and POWER_OFF differ in length, so the events differ in size.
    events = [
        PowerEvent(i, f"00000000-0000-4000-8000-{i:012d}", "power on" if n % 2 else "power off")
        for i, n in enumerate(sizes)
    ]
    chunks = list(chunk_events(events, max_events=max_events, max_body_bytes=max_body))
    assert [e for chunk in chunks for e in chunk] == events
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_events
        body = json.dumps({"events": [e.wire() for e in chunk]}).encode()
        assert len(body) <= max_body or len(chunk) == 1
