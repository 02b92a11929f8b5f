"""Reading node inventories for ``powersync node import``.

Formats (chosen by extension, or ``--format``):

- TOML: ``[[nodes]]`` tables with the keys of agent.toml's ``[[nodes]]`` (the simulator's
  ``--write-inventory`` file, or an agent.toml whose other sections are ignored);
- CSV: a header row naming the same keys (``name,bmc_address,bmc_port,bmc_username,
  bmc_password_file,...``); ``cipher_suites`` cells are written ``17 3`` or ``17;3``;
- JSON: the output of ``openstack baremetal node list --long -f json`` (or a list of
  ``baremetal node show -f json`` objects): Name, UUID (kept), Instance UUID, Power State,
  Maintenance, Fault, Provisioning State and Driver Info's ``ipmi_*`` or ``redfish_*`` keys.
  Ironic masks passwords as ``******``; they then come from ``--password-file``/``-env``.

Problems with the whole file raise ConfigError; problems with one entry become that row's
error, naming the file and the row, so the other rows can still be imported.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Mapping
from csv import DictReader
from typing import Any, Final

import attrs

from agent.config.nodes import NODE_KEYS, REDFISH_ALIASES, StaticNode, parse_node
from agent.config.reader import (
    ascii_integer,
    check_nesting,
    deepest_line,
    file_is_private,
    parse_toml,
    refuse_nul,
)
from agent.errors import ConfigError

FORMATS: Final = ("toml", "csv", "json")
IRONIC_MASK: Final = "******"
# Ironic's ipmi_priv_level words; CALLBACK cannot control power.
_IRONIC_PRIVILEGES: Final = {
    "ADMINISTRATOR": "administrator",
    "OPERATOR": "operator",
    "USER": "user",
}
PASSWORD_KEYS: Final = frozenset(
    ("bmc_password", "bmc_password_file", "bmc_password_env", *REDFISH_ALIASES)
) - {"redfish_username"}
_AGENT_SECTIONS: Final = ("conductor", "ipmi", "store", "nova", "metrics", "logging")
_POWER_STATES: Final = ("power on", "power off", "rebooting", "soft power off", "error")


@attrs.frozen
class ImportRow:
    """One entry of an inventory file: a node to upsert, or why it cannot be."""

    where: str  # "inventory.csv: row 4 (sim-0003)"
    node: StaticNode | None = None
    error: str | None = None
    skipped: str | None = None  # not an error: e.g. an Ironic node with another driver
    # Only Ironic's JSON carries state; it is applied to nodes the import adds.
    power_state: str | None = None
    maintenance: bool = False
    maintenance_reason: str | None = None
    fault: str | None = None  # Ironic's fault, e.g. "power failure" (auto-recovered here too)
    provision_state: str | None = None  # Ironic's, e.g. "active", "enroll"
    uuid: str | None = None  # Ironic's node UUID, kept for nodes the import adds


def detect_format(path: str) -> str:
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension in FORMATS:
        return extension
    raise ConfigError(f"{path}: cannot tell the format from the name; give --format toml|csv|json")


def read_inventory(
    path: str,
    *,
    file_format: str | None = None,
    environ: Mapping[str, str] | None = None,
    default_password: str | None = None,
) -> list[ImportRow]:
    """Every entry of the file at ``path``; ConfigError if the file as a whole is unusable."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    kind = file_format or detect_format(path)
    try:
        with open(path, "rb") as handle:
            private = file_is_private(handle.fileno())
            text = handle.read().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read inventory: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise ConfigError(f"{path}: empty file (no nodes)")
    refuse_nul(text, path)
    reader = _Reader(path, env, private, default_password)
    if kind == "toml":
        return reader.toml(text)
    if kind == "csv":
        return reader.csv(text)
    if kind == "json":
        return reader.json(text)
    raise ConfigError(f"{path}: unknown inventory format {kind!r} (use toml, csv or json)")


class _Reader:
    def __init__(
        self, path: str, environ: Mapping[str, str], private: bool, default_password: str | None
    ) -> None:
        self.path = path
        self.base_dir = os.path.dirname(path) or os.curdir
        self.environ = environ
        self.private = private
        self.default_password = default_password

    def row(self, table: dict[str, Any], where: str, **state: Any) -> ImportRow:
        if not (PASSWORD_KEYS & table.keys()) and self.default_password is None:
            return ImportRow(
                where,
                error=f"{where}: no password: give bmc_password_file or bmc_password_env, "
                "or --password-file / --password-env for the whole file",
            )
        try:
            node = parse_node(
                table,
                where=where,
                base_dir=self.base_dir,
                environ=self.environ,
                literal_password_ok=self.private,
                default_password=self.default_password,
            )
        except ConfigError as exc:
            return ImportRow(where, error=str(exc))
        return ImportRow(where, node=node, **state)

    # ---- TOML ------------------------------------------------------------------------------

    def toml(self, text: str) -> list[ImportRow]:
        document = parse_toml(text, self.path)
        for key in document:
            if key != "nodes" and key not in _AGENT_SECTIONS:
                raise ConfigError(f"{self.path}: unknown key {key!r} (expected [[nodes]] tables)")
        nodes = document.get("nodes")
        if not isinstance(nodes, list) or not all(isinstance(item, dict) for item in nodes):
            raise ConfigError(f"{self.path}: no [[nodes]] tables found")
        rows = []
        for index, table in enumerate(nodes, start=1):
            name = table.get("name")
            label = f" ({name})" if isinstance(name, str) and name else ""
            rows.append(self.row(table, f"{self.path}: [[nodes]] #{index}{label}"))
        return rows

    # ---- CSV -------------------------------------------------------------------------------

    def csv(self, text: str) -> list[ImportRow]:
        consumed = 0  # lines the csv module has taken: its own line_num lags on errors

        def lines() -> Iterator[str]:
            nonlocal consumed
            for consumed, line in enumerate(io.StringIO(text, newline=""), start=1):  # noqa: B007
                yield line

        try:
            return self.csv_rows(csv.DictReader(lines(), skipinitialspace=True))
        except csv.Error as exc:
            # Above the limit (128 KiB) a cell cannot be a node's field: the file is refused.
            problem = str(exc)
            if "field larger than field limit" in problem:
                problem = f"a cell is longer than {csv.field_size_limit()} characters"
            raise ConfigError(f"{self.path}: row {consumed}: {problem}") from None

    def csv_rows(self, reader: DictReader[str]) -> list[ImportRow]:
        header = [column.strip() for column in reader.fieldnames or []]
        if not header:
            raise ConfigError(f"{self.path}: empty CSV file (the first row must name the columns)")
        for index, column in enumerate(header):
            if column not in NODE_KEYS:
                raise ConfigError(
                    f"{self.path}: row 1: unknown column {column!r} (known: {', '.join(NODE_KEYS)})"
                )
            if column in header[:index]:  # DictReader would keep the last cell silently
                raise ConfigError(f"{self.path}: row 1: column {column!r} appears twice")
        for required, alias in (("name", ""), ("bmc_address", "redfish_address"),
                                ("bmc_username", "redfish_username")):  # fmt: skip
            if required not in header and alias not in header:
                raise ConfigError(f"{self.path}: row 1: the header has no {required!r} column")
        reader.fieldnames = header
        rows = []
        for record in reader:
            line = reader.line_num
            if None in record:
                rows.append(
                    ImportRow(
                        f"{self.path}: row {line}",
                        error=f"{self.path}: row {line}: more cells than columns",
                    )
                )
                continue
            table = {key: _csv_value(key, value) for key, value in record.items() if value}
            if not table:
                continue  # blank line
            name = table.get("name")
            label = f" ({name})" if isinstance(name, str) else ""
            rows.append(self.row(table, f"{self.path}: row {line}{label}"))
        return rows

    # ---- Ironic JSON -----------------------------------------------------------------------

    def json(self, text: str) -> list[ImportRow]:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            line = deepest_line(text, comment=None, quotes='"')
            raise ConfigError(
                f"{self.path}: line {line}: invalid JSON: nested too deeply"
            ) from None
        check_nesting(document, self.path)  # repr() of a value in a row error must not recurse
        if isinstance(document, dict):
            document = [document]  # one `baremetal node show -f json`
        if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
            raise ConfigError(
                f"{self.path}: expected the JSON list that "
                "`openstack baremetal node list --long -f json` prints"
            )
        return [self.ironic_row(index, item) for index, item in enumerate(document, start=1)]

    def ironic_row(self, index: int, raw: dict[str, Any]) -> ImportRow:
        # The CLI's column titles ("Driver Info") and the API's names (driver_info) both occur.
        item = {str(key).strip().lower().replace(" ", "_"): value for key, value in raw.items()}
        node_uuid = item.get("uuid")
        name = item.get("name") or (f"node-{node_uuid}" if node_uuid else None)
        where = f"{self.path}: node #{index}" + (f" ({name})" if name else "")
        info = item.get("driver_info")
        if not isinstance(info, dict):
            return ImportRow(where, error=f"{where}: no Driver Info (list with --long)")
        if info.get("ipmi_address"):
            table = self.ironic_ipmi(info, where)
        elif info.get("redfish_address"):
            table = self.ironic_redfish(info, where)
        else:
            driver = item.get("driver") or "unknown"
            return ImportRow(where, skipped=f"no ipmi_address or redfish_address (driver {driver})")
        table["name"] = name
        if item.get("instance_uuid"):
            table["instance_uuid"] = item["instance_uuid"]
        power_state = item.get("power_state")
        maintenance = item.get("maintenance")
        if isinstance(maintenance, str):
            maintenance = maintenance.lower() == "true"
        return self.row(
            table,
            where,
            uuid=_text_or_none(node_uuid),  # kept: `node show <Ironic's uuid>` finds it
            power_state=power_state if power_state in _POWER_STATES else None,
            maintenance=bool(maintenance),
            maintenance_reason=item.get("maintenance_reason") or None,
            fault=_text_or_none(item.get("fault")) if maintenance else None,
            provision_state=_text_or_none(item.get("provision_state")),
        )

    def ironic_ipmi(self, info: dict[str, Any], where: str) -> dict[str, Any]:
        table: dict[str, Any] = {
            "bmc_address": info.get("ipmi_address"),
            "bmc_username": info.get("ipmi_username"),
        }
        if info.get("ipmi_port") is not None:
            table["bmc_port"] = _int_or_text(info["ipmi_port"])
        self.ironic_password(table, info, "ipmi_password", where)
        suite = info.get("ipmi_cipher_suite")
        if suite is not None:
            table["cipher_suites"] = [_int_or_text(suite)]
        privilege = info.get("ipmi_priv_level")
        if privilege is not None:
            table["privilege"] = _IRONIC_PRIVILEGES.get(str(privilege).upper(), privilege)
        return table

    def ironic_redfish(self, info: dict[str, Any], where: str) -> dict[str, Any]:
        table: dict[str, Any] = {"driver": "redfish", "bmc_username": info.get("redfish_username")}
        for key in (
            "redfish_address",
            "redfish_system_id",
            "redfish_verify_ca",
            "redfish_auth_type",
        ):
            if info.get(key) is not None:
                table[key] = info[key]
        self.ironic_password(table, info, "redfish_password", where)
        return table

    def ironic_password(
        self, table: dict[str, Any], info: dict[str, Any], key: str, where: str
    ) -> None:
        password = info.get(key)
        if password and password != IRONIC_MASK:
            table["bmc_password"] = password
        elif self.default_password is None:
            # The same fix applies to every row, so say it once and import nothing.
            raise ConfigError(
                f"{where}: {key} is masked in this file; give --password-file or --password-env"
            )


def _text_or_none(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _int_or_text(value: object) -> object:
    """An integer from a cell of ASCII digits; anything else stays text for parse_node to
    refuse with the row and the key."""
    if isinstance(value, str):
        try:
            return ascii_integer(value.strip())
        except ValueError:
            return value
    return value


def _csv_value(key: str, value: str) -> object:
    value = value.strip()
    if key == "bmc_port":
        return _int_or_text(value)
    if key == "cipher_suites":
        parts = value.replace(";", " ").replace(",", " ").replace("|", " ").split()
        return [_int_or_text(part) for part in parts]
    return value
