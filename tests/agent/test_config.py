"""agent.config.options: the search order, every option, and one clear line for every mistake."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config.options import (
    BUILTIN_SOURCE,
    AgentConfig,
    ConductorConfig,
    IpmiConfig,
    load_config,
    parse_config,
)
from agent.config.reader import split_listen
from agent.drivers.ipmi import check_cipher_suites
from agent.errors import ConfigError
from agent.nova.config import NovaConfig

SECRET = "s3cret-Pa55"


def write(path: Path, text: str, mode: int = 0o600) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def load_text(tmp_path: Path, text: str, *, mode: int = 0o600, environ=None) -> AgentConfig:
    return load_config(write(tmp_path / "agent.toml", text, mode), environ=environ or {})


def config_error(tmp_path: Path, text: str, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "agent.toml") + ":"), message
    return message


# ---- finding the file ------------------------------------------------------------------------


def test_builtin_default_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.source == BUILTIN_SOURCE
    assert config.store.backend == "sqlite"
    assert config.store.path == "./powersync.sqlite"
    assert config.nova.send_power_notifications is False
    assert config.conductor == ConductorConfig()
    assert config.ipmi == IpmiConfig()
    assert config.metrics.listen is None
    assert config.nodes == ()


def test_search_order_path_then_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "agent.toml", "[conductor]\nsync_power_state_workers = 3\n")
    write(tmp_path / "env.toml", "[conductor]\nsync_power_state_workers = 4\n")
    write(tmp_path / "given.toml", "[conductor]\nsync_power_state_workers = 5\n")
    env = {"POWERSYNC_CONFIG": str(tmp_path / "env.toml")}
    assert (
        load_config(str(tmp_path / "given.toml"), environ=env).conductor.sync_power_state_workers
        == 5
    )
    assert load_config(environ=env).conductor.sync_power_state_workers == 4
    cwd_config = load_config(environ={})
    assert cwd_config.source == "agent.toml"
    assert cwd_config.conductor.sync_power_state_workers == 3


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read config file: No such file"):
        load_config(missing, environ={})


def test_every_option_is_read(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET + "\n")
    (tmp_path / "pw").chmod(0o600)
    config = load_text(
        tmp_path,
        """
[conductor]
sync_power_state_interval = 30
sync_power_state_workers = 16
force_power_state_during_sync = false
power_state_sync_max_retries = 5
power_failure_recovery_interval = 0
power_state_change_timeout = 20.5
sync_node_timeout = 10
sync_jitter_window = 2
min_command_interval = 0.5
lock_ttl = 90

[ipmi]
cipher_suites = [3]
privilege = "operator"
retry_timeout = 0.5
retry_backoff = 1.5
retry_max_timeout = 2
retries = 2
session_mode = "per-cycle"
keepalive_interval = 20
adaptive_retry = false
retry_min_timeout = 0.02

[store]
backend = "json"
path = "state/nodes.json"

[metrics]
listen = "[::1]:9617"

[logging]
format = "json"
level = "DEBUG"

[nova]
send_power_notifications = false

[[nodes]]
name = "n1"
bmc_address = "127.0.0.1"
bmc_port = 6230
bmc_username = "admin"
bmc_password_file = "pw"
cipher_suites = [17]
privilege = "user"
instance_uuid = "7E1F3D3A-0B5C-4C53-9F5F-9A1E1F0A0B0C"
session_mode = "persistent"

[[nodes]]
name = "n2"
bmc_address = "bmc-2.example.org"
bmc_username = "root"
bmc_password_env = "N2_PW"
""",
        environ={"N2_PW": "from-env"},
    )
    conductor = config.conductor
    assert conductor.sync_power_state_interval == 30.0
    assert conductor.sync_power_state_workers == 16
    assert conductor.force_power_state_during_sync is False
    assert conductor.power_state_sync_max_retries == 5
    assert not conductor.recovery_enabled
    assert conductor.power_state_change_timeout == 20.5
    assert (conductor.sync_node_timeout, conductor.sync_jitter_window) == (10.0, 2.0)
    assert (conductor.min_command_interval, conductor.lock_ttl) == (0.5, 90.0)
    assert config.ipmi == IpmiConfig(
        cipher_suites=(3,),
        privilege="operator",
        retry_timeout=0.5,
        retry_backoff=1.5,
        retry_max_timeout=2.0,
        retries=2,
        session_mode="per-cycle",
        keepalive_interval=20.0,
        adaptive_retry=False,
        retry_min_timeout=0.02,
    )
    assert config.store.backend == "json"
    assert config.store.path == os.path.join(str(tmp_path), "state/nodes.json")
    assert (config.metrics.host, config.metrics.port) == ("::1", 9617)
    assert (config.logging.format, config.logging.level) == ("json", "debug")
    first, second = config.nodes
    assert first.bmc_password == SECRET  # relative file next to the config
    assert first.bmc_port == 6230
    assert first.cipher_suites == (17,)
    assert first.privilege == "user"
    assert first.instance_uuid == "7e1f3d3a-0b5c-4c53-9f5f-9a1e1f0a0b0c"
    assert first.session_mode == "persistent"
    assert second.bmc_password == "from-env"
    assert second.bmc_port == 623
    assert second.cipher_suites is None and second.privilege is None
    assert SECRET not in repr(config) and "from-env" not in repr(config)


def test_zero_interval_disables_sync_and_lifts_deadline_rule(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, "[conductor]\nsync_power_state_interval = 0\nsync_node_timeout = 100\n"
    )
    assert not config.conductor.sync_enabled


# ---- one line naming the file and key ----------------------------------------------------------

ERRORS = [
    (
        "[conductor]\nsync_power_state_workers = -2\n",
        "[conductor] sync_power_state_workers must be an integer >= 1 (got -2)",
    ),
    (
        "[conductor]\nsync_power_state_workers = 2.5\n",
        "sync_power_state_workers must be an integer",
    ),
    (
        "[conductor]\nsync_power_state_workers = true\n",
        "sync_power_state_workers must be an integer",
    ),
    ("[conductor]\nforce_power_state_during_sync = 1\n", "must be true or false (got 1)"),
    ('[conductor]\nsync_power_state_interval = "60"\n', "must be a number (got '60')"),
    ("[conductor]\npower_state_sync_max_retries = -1\n", "power_state_sync_max_retries"),
    ("[conductor]\npower_failure_recovery_interval = -5\n", "power_failure_recovery_interval"),
    (
        "[conductor]\nsync_power_state_interval = 10\n",
        "[conductor] sync_node_timeout must be less than sync_power_state_interval (10) (got 15.0)",
    ),
    ("[conductor]\nsync_jitter_window = 60\n", "sync_jitter_window must be less than"),
    ("[conductor]\nlock_ttl = 30\n", "lock_ttl must be greater than power_state_change_timeout"),
    ("[conductor]\nsync_node_timeout = 0\n", "sync_node_timeout must be a number > 0"),
    ("[conductor]\nsync_intervall = 5\n", "unknown key 'sync_intervall'"),
    ("[conductor]\nsync_power_state_intervall = 5\n", "did you mean sync_power_state_interval?"),
    ("[ipmi]\ncipher_suites = [0]\n", "cipher_suites must not contain cipher suite 0"),
    ("[ipmi]\ncipher_suites = [17, 0]\n", "cipher suite 0 (no authentication)"),
    ("[ipmi]\ncipher_suites = [1]\n", "may contain only cipher suites 17 and 3 (not 1)"),
    ("[ipmi]\ncipher_suites = []\n", "[ipmi] cipher_suites must be a non-empty list"),
    ("[ipmi]\ncipher_suites = [3, 3]\n", "lists cipher suite 3 twice"),
    ("[ipmi]\ncipher_suites = 17\n", "[ipmi] cipher_suites must be a non-empty list"),
    ('[ipmi]\nprivilege = "root"\n', "[ipmi] privilege must be one of 'user', 'operator'"),
    ('[ipmi]\nsession_mode = "sometimes"\n', "[ipmi] session_mode must be one of"),
    ("[ipmi]\nretries = -1\n", "[ipmi] retries must be an integer from 0 to 20 (got -1)"),
    ("[ipmi]\nretry_backoff = 0.5\n", "[ipmi] retry_backoff must be a number >= 1 (got 0.5)"),
    ("[ipmi]\nretry_timeout = 3\nretry_max_timeout = 2\n", "retry_max_timeout must be >= retry_"),
    ("[ipmi]\nretry_min_timeout = 2\n", "[ipmi] retry_min_timeout must be <= retry_timeout (1)"),
    ('[ipmi]\nadaptive_retry = "yes"\n', "[ipmi] adaptive_retry must be"),
    ('[store]\nbackend = "mysql"\n', "[store] backend must be one of 'sqlite', 'json'"),
    ('[store]\npath = ""\n', "[store] path must be a non-empty string"),
    ('[logging]\nformat = "xml"\n', "[logging] format must be one of 'text', 'json'"),
    ('[logging]\nlevel = "loud"\n', "[logging] level must be one of"),
    ('[metrics]\nlisten = "9617"\n', "[metrics] listen must be HOST:PORT"),
    ('[metrics]\nlisten = "::1:9617"\n', "IPv6 address in brackets"),
    ('[metrics]\nlisten = "127.0.0.1:70000"\n', "port from 0 to 65535"),
    ('[metrix]\nlisten = "127.0.0.1:1"\n', "unknown section 'metrix' (did you mean metrics?)"),
    ("conductor = 5\n", "[conductor] must be a table"),
    ("[nova]\nsend_power_notification = true\n", "[nova] send_power_notification"),
    ("[nova]\nsend_power_notifications = true\n", "[nova] auth_url is required"),
    ("nodes = 3\n", "nodes must be an array of tables"),
    ("[conductor]\nsync_power_state_interval = nan\n", "must be a finite number (got nan)"),
    ("[ipmi]\nretry_timeout = inf\n", "[ipmi] retry_timeout must be a finite number (got inf)"),
    ('[store]\npath = "a\\u0000b"\n', "[store] path must be a file path (it contains a NUL"),
    ('[nova]\npassword_file = "a\\u0000b"\n', "[nova] password_file must be a file path"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_invalid_values_give_one_line(tmp_path: Path, text: str, expected: str) -> None:
    message = config_error(tmp_path, text)
    assert expected in message, message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[conductor]\nsync_power_state_workers = 4\nworkers 8\n")
    assert ": line 3, column" in message
    assert "invalid TOML" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b'[store]\npath = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path), environ={})


# ---- nodes and their secrets -----------------------------------------------------------------

NODE = '[[nodes]]\nname = "n1"\nbmc_address = "127.0.0.1"\nbmc_username = "admin"\n'


def test_literal_password_needs_private_config(tmp_path: Path) -> None:
    text = NODE + f'bmc_password = "{SECRET}"\n'
    assert load_text(tmp_path, text, mode=0o600).nodes[0].bmc_password == SECRET
    message = config_error(tmp_path, text, mode=0o644)
    assert "[[nodes]] #1 (n1): bmc_password: a literal password needs a file" in message
    assert SECRET not in message


def test_password_file_must_be_private(tmp_path: Path) -> None:
    write(tmp_path / "pw", SECRET, 0o640)
    message = config_error(tmp_path, NODE + 'bmc_password_file = "pw"\n')
    assert "(n1): bmc_password_file:" in message
    assert "readable by other users" in message
    assert SECRET not in message


def test_password_file_missing(tmp_path: Path) -> None:
    message = config_error(tmp_path, NODE + 'bmc_password_file = "absent"\n')
    assert "bmc_password_file" in message and "absent" in message


def test_password_env_unset(tmp_path: Path) -> None:
    message = config_error(tmp_path, NODE + 'bmc_password_env = "NOPE"\n')
    assert "bmc_password_env: environment variable NOPE is not set" in message


def test_exactly_one_password_form(tmp_path: Path) -> None:
    assert "a password is required" in config_error(tmp_path, NODE)
    both = NODE + 'bmc_password = "x"\nbmc_password_env = "X"\n'
    assert "give only one of bmc_password, bmc_password_env" in config_error(tmp_path, both)


def test_password_longer_than_ipmi_allows(tmp_path: Path) -> None:
    long_secret = "p" * 21
    message = config_error(tmp_path, NODE + f'bmc_password = "{long_secret}"\n')
    assert "longer than 20 bytes" in message
    assert long_secret not in message


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('bmc_port = 0\nbmc_password = "x"\n', "(n1): bmc_port must be an integer from 1 to 65535"),
        ('bmc_port = "623"\nbmc_password = "x"\n', "bmc_port must be an integer (got '623')"),
        ('cipher_suites = [0]\nbmc_password = "x"\n', "(n1): cipher_suites must not contain"),
        ('privilege = "god"\nbmc_password = "x"\n', "(n1): privilege must be one of"),
        ('instance_uuid = "abc"\nbmc_password = "x"\n', "(n1): instance_uuid must be a UUID"),
        ('session_mode = "x"\nbmc_password = "x"\n', "(n1): session_mode must be one of"),
        ('bmc_pasword = "x"\n', "(n1): unknown key 'bmc_pasword' (did you mean bmc_password?)"),
    ],
)
def test_node_field_errors(tmp_path: Path, extra: str, expected: str) -> None:
    message = config_error(tmp_path, NODE + extra)
    assert expected in message, message


def test_node_required_fields(tmp_path: Path) -> None:
    assert "[[nodes]] #1: name is required" in config_error(tmp_path, "[[nodes]]\nbmc_port = 1\n")
    no_address = '[[nodes]]\nname = "a"\nbmc_username = "u"\nbmc_password = "x"\n'
    assert "(a): bmc_address is required" in config_error(tmp_path, no_address)
    bad_address = no_address + 'bmc_address = "not an address!"\n'
    assert "bmc_address must be an IP address or host name" in config_error(tmp_path, bad_address)
    bad_ipv4 = no_address + 'bmc_address = "999.1.1.1"\n'
    assert "bmc_address must be an IP address or host name" in config_error(tmp_path, bad_ipv4)
    no_user = '[[nodes]]\nname = "a"\nbmc_address = "10.0.0.1"\nbmc_password = "x"\n'
    assert "(a): bmc_username is required" in config_error(tmp_path, no_user)
    long_user = no_user + 'bmc_username = "u2345678901234567"\n'
    assert "bmc_username must be at most 16 bytes" in config_error(tmp_path, long_user)


def test_duplicate_node_names(tmp_path: Path) -> None:
    text = NODE + 'bmc_password = "x"\n' + NODE + 'bmc_password = "y"\n'
    message = config_error(tmp_path, text)
    assert "[[nodes]] #2 (n1): name 'n1' is also used by [[nodes]] #1" in message


# ---- [nova] goes through agent/nova_config.py ------------------------------------------------

NOVA_ON = """
[nova]
send_power_notifications = true
auth_url = "http://127.0.0.1:5000/v3"
username = "ironic"
user_domain_name = "Default"
project_name = "service"
project_domain_name = "Default"
"""


def test_nova_password_file_relative_to_config(tmp_path: Path) -> None:
    write(tmp_path / "nova.pw", "nova-secret")
    config = load_text(tmp_path, NOVA_ON + 'password_file = "nova.pw"\n')
    assert config.nova.send_power_notifications
    assert config.nova.password == "nova-secret"
    assert "nova-secret" not in repr(config)


def test_nova_literal_password_needs_private_config(tmp_path: Path) -> None:
    text = NOVA_ON + 'password = "nova-secret"\n'
    assert load_text(tmp_path, text).nova.password == "nova-secret"
    message = config_error(tmp_path, text, mode=0o644)
    assert "[nova] password: a literal secret needs a config file only its owner" in message
    assert "nova-secret" not in message


# ---- helpers ---------------------------------------------------------------------------------


def test_parse_config_from_text_uses_given_environment() -> None:
    config = parse_config(NODE + 'bmc_password_env = "PW"\n', source="inline", environ={"PW": "zz"})
    assert config.source == "inline"
    assert config.nodes[0].bmc_password == "zz"


def test_split_listen() -> None:
    assert split_listen("127.0.0.1:9617") == ("127.0.0.1", 9617)
    assert split_listen("[::1]:0") == ("::1", 0)
    assert split_listen("localhost:80") == ("localhost", 80)
    for bad in ("", ":80", "host:", "host:x", "::1:80"):
        with pytest.raises(ValueError):
            split_listen(bad)


def test_check_cipher_suites() -> None:
    assert check_cipher_suites([3, 17]) == (3, 17)
    for bad in ([], [0], [17, 17], [2], ["17"], [True], "17"):
        with pytest.raises(ValueError):
            check_cipher_suites(bad)


# ---- the shipped example and docs ------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_example_file_is_the_default(tmp_path: Path) -> None:
    example = (ROOT / "agent.toml.example").read_text()
    config = load_text(tmp_path, example)
    assert config.conductor == ConductorConfig()
    assert config.ipmi == IpmiConfig()
    assert config.store.backend == "sqlite"
    assert config.store.path == os.path.join(str(tmp_path), "./powersync.sqlite")
    assert config.metrics.listen is None
    assert (config.logging.format, config.logging.level) == ("text", "info")
    assert config.nova == NovaConfig()
    assert config.nodes == ()


def test_every_option_is_documented() -> None:
    import attrs

    from agent.config.nodes import NODE_KEYS
    from agent.config.options import LoggingConfig, MetricsConfig, StoreConfig

    example = (ROOT / "agent.toml.example").read_text()
    reference = (ROOT / "docs" / "config.md").read_text()
    classes = (ConductorConfig, IpmiConfig, StoreConfig, MetricsConfig, LoggingConfig, NovaConfig)
    names = [field.name for cls in classes for field in attrs.fields(cls)]
    names += [key for key in NODE_KEYS if key != "bmc_password"]
    for name in names:
        assert f"{name} =" in example, f"{name} missing from agent.toml.example"
        assert f"`{name}`" in reference, f"{name} missing from docs/config.md"


def test_node_name_and_username_rules(tmp_path: Path) -> None:
    text = (
        '[[nodes]]\nname = "4b3b9a57-0a53-4e5a-a1b7-1f4d0fb6f2c1"\nbmc_address = "127.0.0.1"\n'
        'bmc_username = "a"\nbmc_password = "x"\n'
    )
    assert "name must be printable, without outer spaces, not a UUID" in config_error(
        tmp_path, text
    )
    text = (
        '[[nodes]]\nname = "n"\nbmc_address = "127.0.0.1"\nbmc_username = ""\nbmc_password = "x"\n'
    )
    assert "(n): bmc_username is required" in config_error(tmp_path, text)


def test_env_named_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "agent.toml", "")  # never a fallback for a named file
    missing = str(tmp_path / "gone.toml")
    with pytest.raises(ConfigError, match=r"gone\.toml: cannot read config file"):
        load_config(environ={"POWERSYNC_CONFIG": missing})
