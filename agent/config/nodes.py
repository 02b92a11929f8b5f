"""One node's table: ``[[nodes]]`` in agent.toml and every row of ``powersync node import``.

Keys are the store's inventory fields (``name``, ``bmc_address``, ``bmc_username``, a
password key, ...) plus ``driver`` (``ipmi``, the default, or ``redfish``). A Redfish node
may use Ironic's names: ``redfish_address`` (a URL; its host and port become the BMC
address), ``redfish_username``, ``redfish_password`` / ``_file`` / ``_env``, and keeps
``redfish_system_id``, ``redfish_verify_ca`` (true, false or a CA file) and
``redfish_auth_type`` in the node's ``driver_info``. Each driver's own rules
(agent/drivers) decide what is valid; this module only applies them and names the entry.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from agent.bmc.pool import SESSION_MODES
from agent.config.reader import Section, resolve_path
from agent.config.secrets import read_secret_file
from agent.drivers import DEFAULT_PORTS, DRIVER_NAMES, check_secret
from agent.drivers import redfish as redfish_driver
from agent.drivers.ipmi import PRIVILEGES, check_cipher_suites, check_username
from agent.errors import ConfigError, SecretError

if TYPE_CHECKING:
    from agent.config.options import IpmiConfig

Scalar = str | int | float | bool


@attrs.frozen
class StaticNode:
    """One ``[[nodes]]`` entry (also one row of an inventory import); upserted at start."""

    name: str
    bmc_address: str
    bmc_username: str
    bmc_password: str = attrs.field(repr=False)
    bmc_port: int = 623
    cipher_suites: tuple[int, ...] | None = None
    privilege: str | None = None
    instance_uuid: str | None = None
    session_mode: str | None = None
    driver: str = "ipmi"
    driver_info: tuple[tuple[str, Scalar], ...] = ()  # sorted (key, value) pairs


# Ironic's names for a Redfish node's credentials, and the generic keys they stand for.
REDFISH_ALIASES: Final = {
    "redfish_username": "bmc_username",
    "redfish_password": "bmc_password",
    "redfish_password_file": "bmc_password_file",
    "redfish_password_env": "bmc_password_env",
}
REDFISH_INFO_KEYS: Final = (
    "redfish_address",
    "redfish_system_id",
    "redfish_verify_ca",
    "redfish_auth_type",
)
IPMI_ONLY_KEYS: Final = ("cipher_suites", "privilege")
NODE_KEYS: Final = (
    "name",
    "driver",
    "bmc_address",
    "bmc_port",
    "bmc_username",
    "bmc_password",
    "bmc_password_file",
    "bmc_password_env",
    "cipher_suites",
    "privilege",
    "instance_uuid",
    "session_mode",
    *REDFISH_INFO_KEYS,
    *REDFISH_ALIASES,
)


def parse_static_nodes(
    value: object, source: str, base_dir: str, environ: Mapping[str, str], private: bool
) -> tuple[StaticNode, ...]:
    """The config file's ``[[nodes]]``: names and instances unique, each entry named."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{source}: nodes must be an array of tables ([[nodes]])")
    nodes: list[StaticNode] = []
    seen: dict[str, int] = {}
    instances: dict[str, int] = {}  # one instance on one node, as the store requires
    for index, table in enumerate(value, start=1):
        label = table.get("name") if isinstance(table.get("name"), str) else None
        where = f"{source}: [[nodes]] #{index}" + (f" ({label})" if label else "")
        node = parse_node(
            table, where=where, base_dir=base_dir, environ=environ, literal_password_ok=private
        )
        if node.name in seen:
            raise ConfigError(
                f"{where}: name {node.name!r} is also used by [[nodes]] #{seen[node.name]}"
            )
        if node.instance_uuid in instances:
            raise ConfigError(
                f"{where}: instance_uuid {node.instance_uuid} is also used by "
                f"[[nodes]] #{instances[node.instance_uuid]}"
            )
        seen[node.name] = index
        if node.instance_uuid is not None:
            instances[node.instance_uuid] = index
        nodes.append(node)
    return tuple(nodes)


def parse_node(
    table: dict[str, Any],
    *,
    where: str,
    base_dir: str,
    environ: Mapping[str, str],
    literal_password_ok: bool,
    default_password: str | None = None,
) -> StaticNode:
    """Validate one node table; ``where`` prefixes every message (file and entry).

    ``literal_password_ok`` is False when the file holding the table is readable by others:
    a literal ``bmc_password`` is then refused. ``default_password`` is used when the table
    names no password at all (an import given ``--password-file``).
    """
    section = Section(table, where + ":")
    section.check_keys(NODE_KEYS)
    driver = section.optional_choice("driver", DRIVER_NAMES) or "ipmi"
    info: dict[str, Scalar] = {}
    if driver == redfish_driver.NAME:
        section = Section(_redfish_generic(section), where + ":")
        info = _redfish_info(section, base_dir)
    else:
        for key in (*REDFISH_INFO_KEYS, *REDFISH_ALIASES):
            if key in table:
                raise ConfigError(f'{where}: {key} is a Redfish setting; add driver = "redfish"')
    name = section.optional_string("name")
    if name is None:
        raise ConfigError(f"{where}: name is required")
    address = section.optional_string("bmc_address")
    if address is None:
        required = "redfish_address" if driver == redfish_driver.NAME else "bmc_address"
        raise ConfigError(f"{where}: {required} is required")
    if name != name.strip() or not name.isprintable() or looks_like_uuid(name):
        raise section.fail("name", "must be printable, without outer spaces, not a UUID", name)
    username = section.table.get("bmc_username")
    if not isinstance(username, str) or not username:
        raise ConfigError(f"{where}: bmc_username is required (a non-empty string)")
    username = section.checked("bmc_username", check_username)
    assert username is not None
    instance_uuid = section.optional_string("instance_uuid")
    if instance_uuid is not None:
        try:
            instance_uuid = str(uuid.UUID(instance_uuid))
        except ValueError:
            raise section.fail("instance_uuid", "must be a UUID", instance_uuid) from None
    password = _node_password(section, base_dir, environ, literal_password_ok, default_password)
    try:
        check_secret(driver, password)
    except ValueError as exc:  # the message never echoes the value
        raise ConfigError(f"{where}: {exc}") from None
    return StaticNode(
        name=name,
        bmc_address=_check_address(section, address),
        bmc_port=section.integer("bmc_port", DEFAULT_PORTS[driver], minimum=1, maximum=65535),
        bmc_username=username,
        bmc_password=password,
        cipher_suites=section.checked("cipher_suites", check_cipher_suites),
        privilege=section.optional_choice("privilege", PRIVILEGES),
        instance_uuid=instance_uuid,
        session_mode=section.optional_choice("session_mode", SESSION_MODES),
        driver=driver,
        driver_info=tuple(sorted(info.items())),
    )


def _redfish_generic(section: Section) -> dict[str, Any]:
    """A Redfish node's table in the generic keys: Ironic's credential names, and the BMC
    address and port from ``redfish_address``, under the keys the store uses."""
    table = dict(section.table)
    for key in IPMI_ONLY_KEYS:
        if key in table:
            raise ConfigError(
                f"{section.where} {key} is an IPMI setting; this node's driver is redfish"
            )
    for ironic, generic in REDFISH_ALIASES.items():
        if ironic in table:
            if generic in table:
                raise ConfigError(f"{section.where} give {ironic} or {generic}, not both")
            table[generic] = table.pop(ironic)
    if "redfish_address" in table:
        host, port = section.checked("redfish_address", redfish_driver.check_address) or ("", 0)
        table.setdefault("bmc_address", host)
        table.setdefault("bmc_port", port)
    return table


def _redfish_info(section: Section, base_dir: str) -> dict[str, Scalar]:
    """The Redfish node's ``driver_info``, each value under the driver's own rule."""
    info: dict[str, Scalar] = {}
    address = section.optional_string("redfish_address")
    if address is not None:
        info["redfish_address"] = address
    system = section.optional_string("redfish_system_id")
    if system is not None:
        info["redfish_system_id"] = system
    verify = section.table.get("redfish_verify_ca")
    if isinstance(verify, str) and verify.strip().lower() not in ("true", "false", "yes", "no"):
        verify = resolve_path(verify, base_dir)  # a CA file, relative to the file naming it
    if verify is not None:
        section.table["redfish_verify_ca"] = verify
        checked = section.checked("redfish_verify_ca", redfish_driver.check_verify_ca)
        assert checked is not None
        info["redfish_verify_ca"] = checked
    auth = section.checked("redfish_auth_type", redfish_driver.check_auth_type)
    if auth is not None:
        info["redfish_auth_type"] = auth
    return info


def looks_like_uuid(text: str) -> bool:
    """True when ``text`` parses as a UUID (a node name must never: the store finds nodes by
    name or UUID)."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def node_inventory(node: StaticNode, defaults: IpmiConfig) -> dict[str, Any]:
    """Keyword arguments for ``Store.add_node``/``upsert_node``; unset choices take [ipmi]'s."""
    return {
        "name": node.name,
        "bmc_address": node.bmc_address,
        "bmc_port": node.bmc_port,
        "bmc_username": node.bmc_username,
        "bmc_password": node.bmc_password,
        "cipher_suites": node.cipher_suites or defaults.cipher_suites,
        "privilege": node.privilege or defaults.privilege,
        "instance_uuid": node.instance_uuid,
        "session_mode": node.session_mode,
        "driver": node.driver,
        "driver_info": dict(node.driver_info),
    }


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _check_address(section: Section, address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    # An all-numeric last label is a mistyped IPv4 address (999.1.1.1), not a host name.
    if not _HOSTNAME.match(address) or address.rstrip(".").rsplit(".", 1)[-1].isdigit():
        raise section.fail("bmc_address", "must be an IP address or host name", address)
    return address


def _node_password(
    section: Section,
    base_dir: str,
    environ: Mapping[str, str],
    literal_password_ok: bool,
    default_password: str | None,
) -> str:
    given = [
        key
        for key in ("bmc_password", "bmc_password_file", "bmc_password_env")
        if key in section.table
    ]
    if len(given) > 1:
        raise ConfigError(f"{section.where} give only one of {', '.join(given)}")
    if not given:
        if default_password is not None:
            return default_password
        raise ConfigError(
            f"{section.where} a password is required: bmc_password_file or bmc_password_env"
        )
    key = given[0]
    value = section.table[key]
    if not isinstance(value, str) or not value:
        # Never echo what might be a password.
        raise ConfigError(f"{section.where} {key} must be a non-empty string")
    if key == "bmc_password":
        if not literal_password_ok:
            raise ConfigError(
                f"{section.where} bmc_password: a literal password needs a file only its owner "
                "can read (chmod 600), or use bmc_password_file / bmc_password_env"
            )
        return value
    if "\0" in value:
        raise ConfigError(f"{section.where} {key} must not contain a NUL character")
    if key == "bmc_password_env":
        secret = environ.get(value)
        if not secret:
            raise ConfigError(
                f"{section.where} bmc_password_env: environment variable {value} is not set"
            )
        return secret
    try:
        return read_secret_file(resolve_path(value, base_dir), what="BMC password")
    except SecretError as exc:
        raise ConfigError(f"{section.where} bmc_password_file: {exc}") from None
