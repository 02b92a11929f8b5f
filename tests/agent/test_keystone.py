"""Keystone v3 client against the fake Keystone on loopback (real HTTP)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.nova.config import NovaConfig, parse_nova_section
from agent.nova.keystone import (
    KeystoneSession,
    ServiceRefusedError,
    ServiceUnavailableError,
    auth_request_body,
    open_http_client,
    parse_expires_at,
    select_endpoint,
    token_url,
)
from tests.agent.fake_openstack import (
    Endpoint,
    FakeOpenStack,
    nova_table,
    open_fake_openstack,
)


@pytest.fixture
async def cloud() -> AsyncIterator[FakeOpenStack]:
    async with open_fake_openstack() as cloud:
        yield cloud


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with open_http_client(NovaConfig()) as client:
        yield client


def config_for(cloud: FakeOpenStack, **overrides: object) -> NovaConfig:
    return parse_nova_section(nova_table(cloud, **overrides), source="test.toml", environ={})


# -- pure helpers ----------------------------------------------------------------------------


def test_token_url_follows_the_v3_plugin_rule() -> None:
    assert token_url("http://ks/identity") == "http://ks/identity/v3/auth/tokens"
    assert token_url("http://ks/identity/") == "http://ks/identity/v3/auth/tokens"
    assert token_url("http://ks:5000/v3") == "http://ks:5000/v3/auth/tokens"
    assert token_url("http://ks:5000/v3/") == "http://ks:5000/v3/auth/tokens"


def test_password_body_matches_keystone_shapes() -> None:
    by_name = NovaConfig(
        username="ironic",
        user_domain_name="Default",
        password="pw",
        project_name="service",
        project_domain_id="default",
    )
    assert auth_request_body(by_name) == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "ironic", "domain": {"name": "Default"}, "password": "pw"}
                },
            },
            "scope": {"project": {"name": "service", "domain": {"id": "default"}}},
        }
    }
    # keystoneauth prefers ids over names.
    by_id = NovaConfig(user_id="u1", username="ignored", password="pw", project_id="p1")
    body = auth_request_body(by_id)["auth"]
    assert body["identity"]["password"]["user"] == {"id": "u1", "password": "pw"}
    assert body["scope"] == {"project": {"id": "p1"}}


def test_application_credential_body_has_no_scope() -> None:
    config = NovaConfig(
        auth_type="v3applicationcredential",
        application_credential_id="ac1",
        application_credential_secret="s",
    )
    assert auth_request_body(config) == {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": "ac1", "secret": "s"},
            }
        }
    }


def test_expires_at_parses_keystone_format() -> None:
    assert parse_expires_at("2015-11-07T02:58:43.578887Z") == pytest.approx(1446865123.578887)
    assert parse_expires_at(None) is None
    with pytest.raises(ValueError):
        parse_expires_at("2015-11-07T02:58:43")  # no zone


CATALOG = [
    {
        "type": "compute_legacy",
        "endpoints": [{"interface": "internal", "region_id": "R1", "url": "http://n/v2/p"}],
    },
    {
        "type": "compute",
        "endpoints": [
            {"interface": "public", "region_id": "R1", "url": "http://pub1/v2.1"},
            {"interface": "internal", "region_id": "R2", "url": "http://int2/v2.1"},
            {"interface": "internal", "region": "R1", "url": "http://int1/v2.1"},
            {"interface": "admin", "region_id": "R1", "url": ""},
        ],
    },
]


def test_endpoint_selection_prefers_interface_then_catalog_order() -> None:
    pick = select_endpoint
    assert pick(CATALOG, interfaces=("internal", "public"), region=None) == "http://int2/v2.1"
    assert pick(CATALOG, interfaces=("internal", "public"), region="R1") == "http://int1/v2.1"
    assert pick(CATALOG, interfaces=("public", "internal"), region="R2") == "http://int2/v2.1"
    assert pick(CATALOG, interfaces=("public",), region=None) == "http://pub1/v2.1"
    with pytest.raises(ServiceRefusedError, match="admin endpoint for the compute service"):
        pick(CATALOG, interfaces=("admin",), region=None)  # empty URL skipped
    with pytest.raises(ServiceRefusedError, match="in region R9"):
        pick(CATALOG, interfaces=("internal", "public"), region="R9")


# -- against the fake Keystone ---------------------------------------------------------------


async def test_password_auth_caches_the_token(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    session = KeystoneSession(config_for(cloud), http)
    first = await session.token()
    second = await session.token()
    assert first is second
    assert session.authentications == 1
    assert first.project_id == cloud.projects[0].id
    assert cloud.tokens[first.value].project_id == cloud.projects[0].id
    assert first.value not in repr(first)
    # Default interfaces (internal, public), no region: the first internal endpoint.
    endpoint = await session.compute_endpoint(first)
    assert endpoint == f"{cloud.endpoint_url('r1-internal')}/{cloud.projects[0].id}"


async def test_token_renewed_shortly_before_expiry(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    skew = [0.0]
    session = KeystoneSession(config_for(cloud), http, wall_clock=lambda: time.time() + skew[0])
    first = await session.token()
    assert first.expires_at is not None
    skew[0] = cloud.token_lifetime - 300  # five minutes left: still fine
    assert await session.token() is first
    skew[0] = cloud.token_lifetime - 60  # one minute left: renew
    second = await session.token()
    assert second is not first and session.authentications == 2


async def test_invalidate_forgets_only_that_token(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    session = KeystoneSession(config_for(cloud), http)
    first = await session.token()
    session.invalidate(first)
    second = await session.token()
    assert second.value != first.value
    session.invalidate(first)  # stale: the newer token stays
    assert await session.token() is second


async def test_user_and_project_by_id(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    config = config_for(
        cloud,
        username=None,
        user_domain_name=None,
        user_id=cloud.users[0].id,
        project_name=None,
        project_domain_id=None,
        project_id=cloud.projects[0].id,
    )
    token = await KeystoneSession(config, http).token()
    assert token.project_id == cloud.projects[0].id
    sent = json.loads(cloud.requests[-1].body)
    assert sent["auth"]["scope"] == {"project": {"id": cloud.projects[0].id}}


async def test_wrong_password_is_refused_without_leaking(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    session = KeystoneSession(config_for(cloud, password="wrong-secret-xyz"), http)
    with pytest.raises(ServiceRefusedError) as caught:
        await session.token()
    assert caught.value.kind == "credentials"
    assert "401" in str(caught.value)
    assert "wrong-secret-xyz" not in str(caught.value)


@pytest.mark.parametrize("by", ["id", "name"])
async def test_application_credential(
    cloud: FakeOpenStack, http: httpx.AsyncClient, by: str
) -> None:
    credential = cloud.app_credentials[0]
    overrides: dict[str, object] = {
        "auth_type": "v3applicationcredential" if by == "id" else "application_credential",
        "application_credential_secret": credential.secret,
        "password": None,
        "project_name": None,
        "project_domain_id": None,
    }
    if by == "id":
        overrides |= {"application_credential_id": credential.id, "username": None}
        overrides |= {"user_domain_name": None}
    else:
        overrides |= {"application_credential_name": credential.name}
    session = KeystoneSession(config_for(cloud, **overrides), http)
    token = await session.token()
    assert token.project_id == credential.project_id
    sent = json.loads(cloud.requests[-1].body)["auth"]
    assert "scope" not in sent  # Keystone refuses a scope with an application credential
    assert sent["identity"]["methods"] == ["application_credential"]


async def test_wrong_application_credential_secret(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    config = config_for(
        cloud,
        auth_type="v3applicationcredential",
        application_credential_id=cloud.app_credentials[0].id,
        application_credential_secret="nope",
        password=None,
        project_name=None,
        project_domain_id=None,
    )
    with pytest.raises(ServiceRefusedError, match="rejected the \\[nova\\] credentials"):
        await KeystoneSession(config, http).token()


@pytest.mark.parametrize(
    ("overrides", "label", "with_project"),
    [
        ({}, "r1-internal", True),
        ({"region_name": "RegionTwo"}, "r2-internal", False),
        ({"valid_interfaces": ["public", "internal"]}, "r1-public", False),
        ({"valid_interfaces": ["public"], "region_name": "RegionTwo"}, "r2-public", False),
        ({"valid_interfaces": ["admin", "public"]}, "r1-admin", False),
    ],
)
async def test_compute_endpoint_by_interface_and_region(
    cloud: FakeOpenStack,
    http: httpx.AsyncClient,
    overrides: dict[str, object],
    label: str,
    with_project: bool,
) -> None:
    session = KeystoneSession(config_for(cloud, **overrides), http)
    token = await session.token()
    expected = cloud.endpoint_url(label) + (f"/{token.project_id}" if with_project else "")
    assert await session.compute_endpoint(token) == expected


async def test_no_endpoint_in_region(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    session = KeystoneSession(config_for(cloud, region_name="RegionNine"), http)
    token = await session.token()
    with pytest.raises(ServiceRefusedError, match="RegionNine") as caught:
        await session.compute_endpoint(token)
    assert caught.value.kind == "endpoint"


async def test_endpoint_override_used_verbatim(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    override = cloud.endpoint_url("r2-public") + "/"
    session = KeystoneSession(config_for(cloud, endpoint_override=override), http)
    token = await session.token()
    assert await session.compute_endpoint(token) == override.rstrip("/")


async def test_unversioned_catalog_url_is_discovered(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    cloud.endpoints.insert(0, Endpoint("bare", "internal", "RegionOne", versioned=False))
    session = KeystoneSession(config_for(cloud), http)
    token = await session.token()
    assert await session.compute_endpoint(token) == cloud.endpoint_url("bare")
    gets = [r for r in cloud.requests if r.method == "GET"]
    assert [r.path for r in gets] == ["/compute/bare/"]
    await session.compute_endpoint(token)  # cached: no second discovery
    assert len([r for r in cloud.requests if r.method == "GET"]) == 1


async def test_keystone_errors_are_unavailable(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    session = KeystoneSession(config_for(cloud), http)
    cloud.keystone_statuses = [503]
    with pytest.raises(ServiceUnavailableError, match="503"):
        await session.token()
    assert (await session.token()).project_id  # the next attempt works


async def test_keystone_hang_times_out(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    session = KeystoneSession(config_for(cloud, timeout=0.3), http)
    cloud.keystone_hang = True
    with pytest.raises(ServiceUnavailableError, match=r"did not answer within 0\.3 s"):
        await session.token()


async def test_keystone_gone_is_unavailable(cloud: FakeOpenStack, http: httpx.AsyncClient) -> None:
    session = KeystoneSession(config_for(cloud), http)
    await cloud.go_away()
    with pytest.raises(ServiceUnavailableError, match="Keystone at"):
        await session.token()
    await cloud.come_back()
    assert (await session.token()).project_id == cloud.projects[0].id


async def test_tls_with_cafile_insecure_and_untrusted(tmp_path: Path) -> None:
    server_context, ca_path = self_signed_tls(str(tmp_path))
    async with open_fake_openstack(tls=server_context) as cloud:
        assert cloud.auth_url.startswith("https://")
        for overrides in ({"cafile": ca_path}, {"insecure": True}):
            config = config_for(cloud, **overrides)
            async with open_http_client(config) as http:
                token = await KeystoneSession(config, http).token()
            assert token.project_id == cloud.projects[0].id
        config = config_for(cloud)  # the system CAs do not know our certificate
        async with open_http_client(config) as http:
            with pytest.raises(ServiceRefusedError, match="cafile") as caught:
                await KeystoneSession(config, http).token()
        assert caught.value.kind == "tls"


def self_signed_tls(directory: str, host: str = "127.0.0.1") -> tuple[ssl.SSLContext, str]:
    """A server context with a fresh self-signed certificate for ``host`` (an IP address),
    and the path of that certificate in PEM, to use as a client's CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-openstack")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "fake-openstack.pem")
    key_path = os.path.join(directory, "fake-openstack.key")
    with open(cert_path, "wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


async def test_concurrent_callers_authenticate_once(
    cloud: FakeOpenStack, http: httpx.AsyncClient
) -> None:
    session = KeystoneSession(config_for(cloud), http)
    tokens = []

    async def fetch() -> None:
        tokens.append(await session.token())

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(fetch)
    assert session.authentications == 1 and len({t.value for t in tokens}) == 1
    assert len([r for r in cloud.requests if r.path.endswith("/auth/tokens")]) == 1
