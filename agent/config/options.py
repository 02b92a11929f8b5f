"""The agent's configuration: one TOML file, validated into frozen attrs classes.

The file is found by ``--config``, then ``$POWERSYNC_CONFIG``, then ``./agent.toml``; without
any of them the built-in default (``agent/default.toml``) is used. Every problem stops the
program with one :class:`~agent.errors.ConfigError` line naming the file and the key, e.g.
``agent.toml: [conductor] sync_power_state_workers must be an integer >= 1 (got -2)``.

Relative paths inside a config file (store path, password files) are relative to the
directory of that file, so a config works the same whatever the working directory is.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

import attrs

from agent.bmc.pool import SESSION_MODES
from agent.config.nodes import StaticNode, parse_static_nodes
from agent.config.reader import (
    Section,
    file_is_private,
    parse_toml,
    reject_unknown,
    resolve_path,
    split_listen,
)
from agent.drivers.ipmi import (
    CIPHER_SUITES,
    PRIVILEGES,
    check_cipher_suites,
)
from agent.errors import ConfigError
from agent.nova.config import NovaConfig, parse_nova_section

STORE_BACKENDS: Final = ("sqlite", "json", "postgresql")
LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
BUILTIN_SOURCE: Final = "<built-in default>"
DEFAULT_CONFIG_NAME: Final = "agent.toml"
CONFIG_ENV: Final = "POWERSYNC_CONFIG"


@attrs.frozen
class ConductorConfig:
    """``[conductor]``: the sync loop; names follow Ironic's ``[conductor]`` options."""

    sync_power_state_interval: float = 60.0
    sync_power_state_workers: int = 8
    # Nodes whose last pass failed (and recovery probes) wait on their own slots, so dead
    # BMCs never hold the healthy fleet's workers for a whole deadline each.
    # None: sized at each pass from the failing nodes (agent.sync.sizing).
    sync_failing_node_workers: int | None = None
    force_power_state_during_sync: bool = True
    power_state_sync_max_retries: int = 3
    power_failure_recovery_interval: float = 300.0
    power_state_change_timeout: float = 60.0
    sync_node_timeout: float = 15.0
    sync_jitter_window: float = 5.0
    min_command_interval: float = 0.0
    lock_ttl: float = 120.0
    # Several agents on one site (a PostgreSQL store): Ironic's conductor names and defaults.
    host: str = attrs.field(factory=socket.gethostname)
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 60.0

    @property
    def sync_enabled(self) -> bool:
        return self.sync_power_state_interval > 0

    @property
    def recovery_enabled(self) -> bool:
        return self.power_failure_recovery_interval > 0


@attrs.frozen
class IpmiConfig:
    """``[ipmi]``: defaults for every BMC session (a node may override suites, privilege, mode)."""

    cipher_suites: tuple[int, ...] = CIPHER_SUITES
    privilege: str = "administrator"
    retry_timeout: float = 1.0
    retry_backoff: float = 2.0
    retry_max_timeout: float = 4.0
    retries: int = 3
    session_mode: str = "persistent"
    keepalive_interval: float = 25.0
    adaptive_retry: bool = True
    retry_min_timeout: float = 0.05


@attrs.frozen
class StoreConfig:
    """``[store]``: where node state lives."""

    backend: str = "sqlite"
    path: str = "./powersync.sqlite"
    history_retention_days: float = 90.0  # 0 keeps history forever
    # backend = "postgresql": a libpq URI or keyword string, without the password, which
    # comes from password_file (mode 0600) or the environment variable password_env.
    dsn: str | None = None
    password_file: str | None = None
    password_env: str | None = None


@attrs.frozen
class MetricsConfig:
    """``[metrics]``: the optional Prometheus endpoint, off unless ``listen`` is set."""

    listen: str | None = None

    @property
    def host(self) -> str | None:
        return None if self.listen is None else split_listen(self.listen)[0]

    @property
    def port(self) -> int | None:
        return None if self.listen is None else split_listen(self.listen)[1]


@attrs.frozen
class LoggingConfig:
    """``[logging]``: line format and level of the agent's log on stderr."""

    format: str = "text"
    level: str = "info"


@attrs.frozen
class AgentConfig:
    source: str
    conductor: ConductorConfig = ConductorConfig()
    ipmi: IpmiConfig = IpmiConfig()
    store: StoreConfig = StoreConfig()
    nova: NovaConfig = attrs.field(factory=NovaConfig)
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    nodes: tuple[StaticNode, ...] = ()


# --------------------------------------------------------------------------------------------
# finding and reading the file


def find_config(path: str | None, environ: Mapping[str, str]) -> str | None:
    """The config file to use, or None for the built-in default."""
    if path:
        return path
    from_env = environ.get(CONFIG_ENV)
    if from_env:
        return from_env
    if os.path.exists(DEFAULT_CONFIG_NAME):
        return DEFAULT_CONFIG_NAME
    return None


def load_config(
    path: str | None = None, *, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """Find, read and validate the configuration; raises ConfigError (one line) on any problem."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    chosen = find_config(path, env)
    if chosen is None:
        text = resources.files("agent").joinpath("default.toml").read_text(encoding="utf-8")
        return parse_config(text, source=BUILTIN_SOURCE, base_dir=os.curdir, environ=env)
    try:
        with open(chosen, "rb") as handle:
            private = file_is_private(handle.fileno())
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{chosen}: not UTF-8 text (byte {exc.start})") from None
    return parse_config(
        text,
        source=chosen,
        base_dir=os.path.dirname(chosen) or os.curdir,
        environ=env,
        private=private,
    )


def parse_config(
    text: str,
    *,
    source: str,
    base_dir: str = os.curdir,
    environ: Mapping[str, str] | None = None,
    private: bool = True,
) -> AgentConfig:
    """Validate TOML text; ``private`` says whether the file is unreadable by other users."""
    document = parse_toml(text, source)
    return config_from_document(
        document, source=source, base_dir=base_dir, environ=environ, private=private
    )


def config_from_document(
    document: Mapping[str, Any],
    *,
    source: str,
    base_dir: str = os.curdir,
    environ: Mapping[str, str] | None = None,
    private: bool = True,
) -> AgentConfig:
    """Validate an already parsed TOML document (a dict as tomllib returns it)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    sections = ("conductor", "ipmi", "store", "nova", "metrics", "logging", "nodes")
    reject_unknown(document, sections, f"{source}:", "section")

    conductor = _parse_conductor(Section.named(document, "conductor", source))
    ipmi = _parse_ipmi(Section.named(document, "ipmi", source))
    store = _parse_store(Section.named(document, "store", source), base_dir)
    metrics = _parse_metrics(Section.named(document, "metrics", source))
    logging = _parse_logging(Section.named(document, "logging", source))
    nova = _parse_nova(Section.named(document, "nova", source), source, base_dir, env, private)
    nodes = parse_static_nodes(document.get("nodes", []), source, base_dir, env, private)
    return AgentConfig(
        source=source,
        conductor=conductor,
        ipmi=ipmi,
        store=store,
        nova=nova,
        metrics=metrics,
        logging=logging,
        nodes=nodes,
    )


# --------------------------------------------------------------------------------------------
# sections


def _parse_conductor(section: Section) -> ConductorConfig:
    section.check_keys([field.name for field in attrs.fields(ConductorConfig)])
    defaults = ConductorConfig()
    interval = section.number("sync_power_state_interval", defaults.sync_power_state_interval)
    node_timeout = section.positive("sync_node_timeout", defaults.sync_node_timeout)
    jitter = section.number("sync_jitter_window", defaults.sync_jitter_window, minimum=0)
    change_timeout = section.positive(
        "power_state_change_timeout", defaults.power_state_change_timeout
    )
    lock_ttl = section.positive("lock_ttl", defaults.lock_ttl)
    if interval > 0 and node_timeout >= interval:
        raise section.fail(
            "sync_node_timeout",
            f"must be less than sync_power_state_interval ({interval:g})",
            node_timeout,
        )
    if interval > 0 and jitter >= interval:
        raise section.fail(
            "sync_jitter_window",
            f"must be less than sync_power_state_interval ({interval:g})",
            jitter,
        )
    heartbeat_interval = section.positive("heartbeat_interval", defaults.heartbeat_interval)
    heartbeat_timeout = section.positive("heartbeat_timeout", defaults.heartbeat_timeout)
    if heartbeat_timeout <= heartbeat_interval:
        raise section.fail(
            "heartbeat_timeout",
            f"must be greater than heartbeat_interval ({heartbeat_interval:g})",
            heartbeat_timeout,
        )
    if lock_ttl <= change_timeout:
        # A power action holds the node lock while it waits for the target state.
        raise section.fail(
            "lock_ttl",
            f"must be greater than power_state_change_timeout ({change_timeout:g})",
            lock_ttl,
        )
    return ConductorConfig(
        sync_power_state_interval=interval,
        sync_power_state_workers=section.integer(
            "sync_power_state_workers", defaults.sync_power_state_workers, minimum=1
        ),
        sync_failing_node_workers=(
            section.integer("sync_failing_node_workers", 1, minimum=1)
            if "sync_failing_node_workers" in section.table
            else None
        ),
        force_power_state_during_sync=section.boolean(
            "force_power_state_during_sync", defaults.force_power_state_during_sync
        ),
        power_state_sync_max_retries=section.integer(
            "power_state_sync_max_retries", defaults.power_state_sync_max_retries, minimum=0
        ),
        power_failure_recovery_interval=section.number(
            "power_failure_recovery_interval", defaults.power_failure_recovery_interval, minimum=0
        ),
        power_state_change_timeout=change_timeout,
        sync_node_timeout=node_timeout,
        sync_jitter_window=jitter,
        min_command_interval=section.number(
            "min_command_interval", defaults.min_command_interval, minimum=0
        ),
        host=section.optional_string("host") or defaults.host,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        lock_ttl=lock_ttl,
    )


def _parse_ipmi(section: Section) -> IpmiConfig:
    section.check_keys([field.name for field in attrs.fields(IpmiConfig)])
    defaults = IpmiConfig()
    retry_timeout = section.positive("retry_timeout", defaults.retry_timeout)
    retry_max_timeout = section.positive(
        "retry_max_timeout", max(defaults.retry_max_timeout, retry_timeout)
    )
    if retry_max_timeout < retry_timeout:
        raise section.fail(
            "retry_max_timeout", f"must be >= retry_timeout ({retry_timeout:g})", retry_max_timeout
        )
    retry_min_timeout = section.positive(
        "retry_min_timeout", min(defaults.retry_min_timeout, retry_timeout)
    )
    if retry_min_timeout > retry_timeout:
        raise section.fail(
            "retry_min_timeout", f"must be <= retry_timeout ({retry_timeout:g})", retry_min_timeout
        )
    return IpmiConfig(
        cipher_suites=section.checked("cipher_suites", check_cipher_suites)
        or defaults.cipher_suites,
        privilege=section.choice("privilege", defaults.privilege, PRIVILEGES),
        retry_timeout=retry_timeout,
        retry_backoff=section.number("retry_backoff", defaults.retry_backoff, minimum=1),
        retry_max_timeout=retry_max_timeout,
        retries=section.integer("retries", defaults.retries, minimum=0, maximum=20),
        session_mode=section.choice("session_mode", defaults.session_mode, SESSION_MODES),
        keepalive_interval=section.positive("keepalive_interval", defaults.keepalive_interval),
        adaptive_retry=section.boolean("adaptive_retry", defaults.adaptive_retry),
        retry_min_timeout=retry_min_timeout,
    )


def _parse_store(section: Section, base_dir: str) -> StoreConfig:
    section.check_keys([field.name for field in attrs.fields(StoreConfig)])
    defaults = StoreConfig()
    path = section.path("path", defaults.path)
    backend = section.choice("backend", defaults.backend, STORE_BACKENDS)
    dsn = section.optional_string("dsn")
    password_file = section.optional_string("password_file")
    password_env = section.optional_string("password_env")
    if backend == "postgresql" and dsn is None:
        raise ConfigError(f'{section.where} backend = "postgresql" needs dsn (a libpq URI)')
    if dsn is not None and ":" in dsn.split("@", 1)[0].split("//", 1)[-1] and "@" in dsn:
        # Never echo it: the DSN has a password in it.
        raise ConfigError(
            f"{section.where} dsn must not hold the password: use password_file or password_env"
        )
    if password_file is not None and password_env is not None:
        raise ConfigError(f"{section.where} give only one of password_file, password_env")
    return StoreConfig(
        backend=backend,
        path=resolve_path(path, base_dir),
        history_retention_days=section.number(
            "history_retention_days", defaults.history_retention_days, minimum=0
        ),
        dsn=dsn,
        password_file=None if password_file is None else resolve_path(password_file, base_dir),
        password_env=password_env,
    )


def _parse_metrics(section: Section) -> MetricsConfig:
    section.check_keys(["listen"])
    listen = section.optional_string("listen")
    if listen is not None:
        try:
            split_listen(listen)
        except ValueError as exc:
            raise section.fail("listen", str(exc), listen) from None
    return MetricsConfig(listen=listen)


def _parse_logging(section: Section) -> LoggingConfig:
    section.check_keys(["format", "level"])
    defaults = LoggingConfig()
    return LoggingConfig(
        format=section.choice("format", defaults.format, LOG_FORMATS),
        level=section.choice("level", defaults.level, LOG_LEVELS),
    )


def _parse_nova(
    section: Section, source: str, base_dir: str, environ: Mapping[str, str], private: bool
) -> NovaConfig:
    """agent/nova_config.py validates [nova]; paths are made relative to the config file first."""
    table = dict(section.table)
    for key in ("password_file", "application_credential_secret_file", "cafile"):
        if isinstance(table.get(key), str) and table[key]:
            table[key] = resolve_path(section.path(key, ""), base_dir)
    for key in ("password", "application_credential_secret"):
        if table.get(key) is not None and not private:
            raise ConfigError(
                f"{section.where} {key}: a literal secret needs a config file only its owner can "
                f"read (chmod 600), or use {key}_file / {key}_env"
            )
    return parse_nova_section(table, source=source, environ=environ)
