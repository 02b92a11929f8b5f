"""The [nova] section: Ironic/keystoneauth option names, one-line errors naming file and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config.options import load_config
from agent.errors import ConfigError
from agent.nova.config import NovaConfig, parse_nova_section

COMPLETE: dict[str, object] = {
    "send_power_notifications": True,
    "auth_url": "http://keystone.example/identity",
    "username": "ironic",
    "user_domain_name": "Default",
    "password": "s3cret-pw",
    "project_name": "service",
    "project_domain_id": "default",
}
APP_CREDENTIAL: dict[str, object] = {
    "send_power_notifications": True,
    "auth_url": "https://keystone.example:5000/v3",
    "auth_type": "v3applicationcredential",
    "application_credential_id": "423f19a4ac1e4f48bbb4180756e6eb6c",
    "application_credential_secret": "app-s3cret",
}


def parse(table: dict[str, object], environ: dict[str, str] | None = None) -> NovaConfig:
    return parse_nova_section(table, source="agent.toml", environ=environ or {})


def without(table: dict[str, object], *keys: str) -> dict[str, object]:
    return {key: value for key, value in table.items() if key not in keys}


def test_defaults_are_off_with_ironic_interfaces() -> None:
    config = parse({})
    assert config == NovaConfig()
    assert config.send_power_notifications is False
    assert config.valid_interfaces == ("internal", "public")
    assert config.timeout == 30.0  # a real default, unlike Ironic's none


def test_complete_password_section() -> None:
    config = parse(COMPLETE)
    assert config.send_power_notifications and config.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(config)


def test_application_credential_section() -> None:
    config = parse(APP_CREDENTIAL)
    assert config.auth_type == "v3applicationcredential"
    assert "app-s3cret" not in repr(config)
    alias = parse({**APP_CREDENTIAL, "auth_type": "application_credential"})
    assert alias.auth_type == "v3applicationcredential"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            without(COMPLETE, "auth_url"),
            "agent.toml: [nova] auth_url is required when send_power_notifications = true",
        ),
        (without(COMPLETE, "username"), "agent.toml: [nova] username is required"),
        (without(COMPLETE, "password"), "agent.toml: [nova] password is required"),
        (without(COMPLETE, "user_domain_name"), "agent.toml: [nova] user_domain_name is required"),
        (without(COMPLETE, "project_name"), "agent.toml: [nova] project_name is required"),
        (
            without(COMPLETE, "project_domain_id"),
            "agent.toml: [nova] project_domain_name is required",
        ),
        (
            without(APP_CREDENTIAL, "application_credential_secret"),
            "agent.toml: [nova] application_credential_secret is required",
        ),
        (
            without(APP_CREDENTIAL, "application_credential_id"),
            "agent.toml: [nova] application_credential_id is required",
        ),
        (
            {
                **without(APP_CREDENTIAL, "application_credential_id"),
                "application_credential_name": "powersync",
            },
            "agent.toml: [nova] user_id is required",
        ),
        (
            {**APP_CREDENTIAL, "project_name": "service"},
            "agent.toml: [nova] project_name cannot be used with an application credential",
        ),
    ],
)
def test_incomplete_auth_names_the_missing_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(table)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_ids_replace_names() -> None:
    config = parse(
        {
            **without(
                COMPLETE, "username", "user_domain_name", "project_name", "project_domain_id"
            ),
            "user_id": "u1",
            "project_id": "p1",
        }
    )
    assert (config.user_id, config.project_id) == ("u1", "p1")


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ({"pasword": "x"}, "pasword", "is not a known option"),
        ({"timeout": -1}, "timeout", "must be greater than 0"),
        ({"timeout": "30"}, "timeout", "must be a number"),
        ({"insecure": "yes"}, "insecure", "must be true or false"),
        ({"send_power_notifications": 1}, "send_power_notifications", "must be true or false"),
        ({"auth_type": "token"}, "auth_type", "must be one of"),
        ({"auth_url": "keystone:5000"}, "auth_url", "must be an http:// or https:// URL"),
        ({"endpoint_override": "ftp://x/v2.1"}, "endpoint_override", "must be an http"),
        ({"valid_interfaces": ["internal", "private"]}, "valid_interfaces", "unknown interface"),
        ({"valid_interfaces": []}, "valid_interfaces", "must be a non-empty list"),
        ({"region_name": 7}, "region_name", "must be a string"),
        ({"cafile": "/ca.pem", "insecure": True}, "cafile", "cannot be combined with insecure"),
        ({"password_env": "NOVA_PW"}, "password_env", "cannot be combined with password"),
        ({"max_body_bytes": 200000}, "max_body_bytes", "must not exceed Nova's limit"),
        ({"batch_size": 0}, "batch_size", "must be at least 1"),
        ({"retry_delay": 10, "retry_max_delay": 5}, "retry_max_delay", "must not be smaller"),
    ],
)
def test_bad_values_name_the_key(extra: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse({**COMPLETE, **extra})
    text = str(caught.value)
    assert text.startswith(f"agent.toml: [nova] {key} ") and problem in text
    assert "s3cret-pw" not in text


def test_interfaces_accept_oslo_style_string() -> None:
    config = parse({**COMPLETE, "valid_interfaces": "public, internal"})
    assert config.valid_interfaces == ("public", "internal")


def test_password_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "nova-password"
    secret.write_text("from-file-pw\n")
    secret.chmod(0o600)
    config = parse({**without(COMPLETE, "password"), "password_file": str(secret)})
    assert config.password == "from-file-pw"
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        parse({**without(COMPLETE, "password"), "password_file": str(secret)})
    assert str(caught.value).startswith("agent.toml: [nova] password_file cannot be used")
    assert "readable by other users" in str(caught.value)
    assert "from-file-pw" not in str(caught.value)


def test_missing_secret_file(tmp_path: Path) -> None:
    table = {
        **without(APP_CREDENTIAL, "application_credential_secret"),
        "application_credential_secret_file": str(tmp_path / "absent"),
    }
    with pytest.raises(ConfigError, match=r"\[nova\] application_credential_secret_file"):
        parse(table)


def test_password_from_environment() -> None:
    table = {**without(COMPLETE, "password"), "password_env": "NOVA_PW"}
    assert parse(table, {"NOVA_PW": "env-pw"}).password == "env-pw"
    with pytest.raises(
        ConfigError, match=r"\[nova\] password_env names environment variable NOVA_PW"
    ):
        parse(table, {})


def test_disabled_section_reads_no_secret(tmp_path: Path) -> None:
    # Off means off: a secret file that does not exist yet must not stop the agent.
    config = parse({"password_file": str(tmp_path / "later"), "auth_url": "http://ks/v3"})
    assert config.send_power_notifications is False and config.password is None


def test_through_the_config_loader(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[nova]\nsend_power_notifications = true\nusername = 'ironic'\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert str(caught.value) == (
        f"{path}: [nova] auth_url is required when send_power_notifications = true"
    )
    secret = tmp_path / "pw"
    secret.write_text("pw-from-file\n")
    secret.chmod(0o600)
    path.write_text(
        "[nova]\n"
        "send_power_notifications = true\n"
        "auth_url = 'http://127.0.0.1/identity'\n"
        "user_id = 'u1'\n"
        "password_file = 'pw'\n"  # relative to the config file
        "project_id = 'p1'\n"
        "region_name = 'RegionTwo'\n"
    )
    nova = load_config(str(path), environ={}).nova
    assert (nova.password, nova.region_name) == ("pw-from-file", "RegionTwo")
