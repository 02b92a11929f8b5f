"""The ``[nova]`` section of agent.toml: whether and how to tell Nova about power changes.

Option names are Ironic's and keystoneauth's, so an Ironic operator can copy a ``[nova]``
section across. When ``send_power_notifications`` is true the section must be complete:
the agent refuses to start with one line naming the missing key, rather than warning on
every event as Ironic does. When it is false only the types and key names are checked and
no secret file is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from agent.config.secrets import read_secret_file
from agent.errors import ConfigError, SecretError

AUTH_PASSWORD = "password"  # noqa: S105 (a plugin name, not a secret)
AUTH_APPLICATION_CREDENTIAL = "v3applicationcredential"

# keystoneauth plugin names we accept, and what each means here.
_AUTH_TYPES: dict[str, str] = {
    "password": AUTH_PASSWORD,
    "v3password": AUTH_PASSWORD,
    "v3applicationcredential": AUTH_APPLICATION_CREDENTIAL,
    "application_credential": AUTH_APPLICATION_CREDENTIAL,
}
INTERFACES = ("public", "internal", "admin")

# Nova's sizelimit middleware answers 413 above 114688 bytes; stay well below it.
NOVA_BODY_LIMIT = 114688
DEFAULT_MAX_BODY_BYTES = 100_000

_STRING_KEYS = (
    "auth_url",
    "username",
    "user_id",
    "user_domain_name",
    "user_domain_id",
    "project_name",
    "project_id",
    "project_domain_name",
    "project_domain_id",
    "application_credential_id",
    "application_credential_name",
    "region_name",
    "endpoint_override",
    "cafile",
)
_SECRET_KEYS = ("password", "application_credential_secret")
_OTHER_KEYS = (
    "send_power_notifications",
    "auth_type",
    "valid_interfaces",
    "insecure",
    "timeout",
    "batch_size",
    "max_body_bytes",
    "retry_delay",
    "retry_max_delay",
    "in_doubt_window",
)
_SECRET_FORMS = tuple(f"{key}{suffix}" for key in _SECRET_KEYS for suffix in ("", "_file", "_env"))
KNOWN_KEYS: frozenset[str] = frozenset((*_STRING_KEYS, *_OTHER_KEYS, *_SECRET_FORMS))


@attrs.frozen
class NovaConfig:
    """Validated ``[nova]`` settings. Secrets are resolved and never shown in the repr."""

    send_power_notifications: bool = False
    auth_url: str | None = None
    auth_type: str = AUTH_PASSWORD
    username: str | None = None
    user_id: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    project_name: str | None = None
    project_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    application_credential_id: str | None = None
    application_credential_name: str | None = None
    application_credential_secret: str | None = attrs.field(default=None, repr=False)
    region_name: str | None = None
    valid_interfaces: tuple[str, ...] = ("internal", "public")
    endpoint_override: str | None = None
    cafile: str | None = None
    insecure: bool = False
    timeout: float = 30.0
    # Our own delivery knobs (Ironic sends one event per call and never retries).
    batch_size: int = 200
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    retry_delay: float = 2.0
    retry_max_delay: float = 300.0
    # After a request whose outcome is unknown (it timed out), Nova may still apply it this
    # long afterwards: no different state is sent for those instances meanwhile.
    in_doubt_window: float = 120.0


class _Section:
    """Typed reads from the raw TOML table, each error naming the file and the key."""

    def __init__(self, table: Mapping[str, object], source: str) -> None:
        self.table = table
        self.source = source

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: [nova] {key} {problem}")

    def string(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {type(value).__name__}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number")
        if not value > minimum:
            raise self.error(key, f"must be greater than {minimum:g}")
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be an integer")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return value


def _url(section: _Section, key: str) -> str | None:
    value = section.string(key)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise section.error(key, f"must be an http:// or https:// URL, not {value!r}")
    return value


def _interfaces(section: _Section) -> tuple[str, ...]:
    raw = section.table.get("valid_interfaces", ["internal", "public"])
    if isinstance(raw, str):  # oslo.config style "internal,public"
        raw = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(raw, list) or not raw or not all(isinstance(item, str) for item in raw):
        raise section.error(
            "valid_interfaces", 'must be a non-empty list, e.g. ["internal", "public"]'
        )
    items = [item.removesuffix("URL") for item in raw]  # keystoneauth accepts "publicURL"
    for item in items:
        if item not in INTERFACES:
            raise section.error(
                "valid_interfaces", f"has unknown interface {item!r} (use {', '.join(INTERFACES)})"
            )
    if len(set(items)) != len(items):
        raise section.error("valid_interfaces", "lists an interface twice")
    return tuple(items)


def _secret(
    section: _Section, key: str, environ: Mapping[str, str], *, resolve: bool
) -> str | None:
    """One of ``key``, ``key_file`` or ``key_env``; read only when ``resolve`` is true."""
    given = [
        name for name in (key, f"{key}_file", f"{key}_env") if section.table.get(name) is not None
    ]
    if len(given) > 1:
        raise section.error(
            given[1], f"cannot be combined with {given[0]} (give the secret one way)"
        )
    if not given:
        return None
    name = given[0]
    value = section.table[name]
    if not isinstance(value, str) or not value:
        raise section.error(name, "must be a non-empty string")
    if not resolve:
        return None
    what = f"[nova] {key}"
    if name.endswith("_file"):
        try:
            return read_secret_file(value, what=what)
        except SecretError as exc:
            raise section.error(name, f"cannot be used: {exc}") from None
    if name.endswith("_env"):
        secret = environ.get(value)
        if not secret:
            raise section.error(
                name, f"names environment variable {value}, which is not set or empty"
            )
        return secret
    return value


def parse_nova_section(
    table: Mapping[str, object], *, source: str, environ: Mapping[str, str]
) -> NovaConfig:
    """Validate the raw ``[nova]`` table (already parsed from TOML) into a :class:`NovaConfig`."""
    section = _Section(table, source)
    for key in table:
        if key not in KNOWN_KEYS:
            raise section.error(key, "is not a known option")

    enabled = section.boolean("send_power_notifications", False)
    raw_auth_type = section.string("auth_type") or AUTH_PASSWORD
    auth_type = _AUTH_TYPES.get(raw_auth_type)
    if auth_type is None:
        raise section.error(
            "auth_type", f"must be one of {', '.join(sorted(_AUTH_TYPES))}, not {raw_auth_type!r}"
        )
    insecure = section.boolean("insecure", False)
    cafile = section.string("cafile")
    if cafile is not None and insecure:
        raise section.error("cafile", "cannot be combined with insecure = true")
    config = NovaConfig(
        send_power_notifications=enabled,
        auth_url=_url(section, "auth_url"),
        auth_type=auth_type,
        username=section.string("username"),
        user_id=section.string("user_id"),
        password=_secret(section, "password", environ, resolve=enabled),
        user_domain_name=section.string("user_domain_name"),
        user_domain_id=section.string("user_domain_id"),
        project_name=section.string("project_name"),
        project_id=section.string("project_id"),
        project_domain_name=section.string("project_domain_name"),
        project_domain_id=section.string("project_domain_id"),
        application_credential_id=section.string("application_credential_id"),
        application_credential_name=section.string("application_credential_name"),
        application_credential_secret=_secret(
            section, "application_credential_secret", environ, resolve=enabled
        ),
        region_name=section.string("region_name"),
        valid_interfaces=_interfaces(section),
        endpoint_override=_url(section, "endpoint_override"),
        cafile=cafile,
        insecure=insecure,
        timeout=section.number("timeout", 30.0),
        batch_size=section.integer("batch_size", 200, minimum=1),
        max_body_bytes=section.integer("max_body_bytes", DEFAULT_MAX_BODY_BYTES, minimum=1024),
        retry_delay=section.number("retry_delay", 2.0),
        retry_max_delay=section.number("retry_max_delay", 300.0),
        in_doubt_window=section.number("in_doubt_window", 120.0),
    )
    if config.max_body_bytes > NOVA_BODY_LIMIT:
        raise section.error("max_body_bytes", f"must not exceed Nova's limit of {NOVA_BODY_LIMIT}")
    if config.retry_max_delay < config.retry_delay:
        raise section.error("retry_max_delay", "must not be smaller than retry_delay")
    if enabled:
        _check_complete(section, config)
    return config


def _check_complete(section: _Section, config: NovaConfig) -> None:
    """With notifications on, every key authentication needs must be present."""

    def missing(key: str, why: str = "") -> ConfigError:
        reason = why or "when send_power_notifications = true"
        return section.error(key, f"is required {reason}")

    if config.auth_url is None:
        raise missing("auth_url")
    user_given = config.user_id is not None or config.username is not None
    by_name = config.user_id is None and config.username is not None
    user_domain_missing = (
        by_name and config.user_domain_id is None and config.user_domain_name is None
    )
    user_domain_error = missing(
        "user_domain_name", "(or user_domain_id) when the user is given by username"
    )

    if config.auth_type == AUTH_APPLICATION_CREDENTIAL:
        if config.application_credential_secret is None:
            raise missing(
                "application_credential_secret",
                "(or _file / _env) with auth_type = v3applicationcredential",
            )
        if config.application_credential_id is None:
            if config.application_credential_name is None:
                raise missing(
                    "application_credential_id",
                    "(or application_credential_name) with auth_type = v3applicationcredential",
                )
            if not user_given:
                raise missing("user_id", "(or username) with application_credential_name")
            if user_domain_missing:
                raise user_domain_error
        for key in ("project_name", "project_id", "project_domain_name", "project_domain_id"):
            if getattr(config, key) is not None:
                raise section.error(
                    key,
                    "cannot be used with an application credential (it carries its own project)",
                )
        return

    if not user_given:
        raise missing("username", "(or user_id) when send_power_notifications = true")
    if user_domain_missing:
        raise user_domain_error
    if config.password is None:
        raise missing(
            "password", "(or password_file / password_env) when send_power_notifications = true"
        )
    if config.project_id is None:
        if config.project_name is None:
            raise missing(
                "project_name", "(or project_id): Nova's policy needs a project-scoped token"
            )
        if config.project_domain_id is None and config.project_domain_name is None:
            raise missing(
                "project_domain_name", "(or project_domain_id) when the project is given by name"
            )
