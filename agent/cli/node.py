"""``powersync node add|list|show|set|delete|import``: the node inventory in the store.

The store is the one named by the configuration's ``[store]``. Passwords come from a file
(mode 0600) or an environment variable, never from the command line, and are never shown.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from agent.bmc.pool import SESSION_MODES
from agent.cli.common import (
    format_time,
    integer_argument,
    open_configured_store,
    print_error,
    print_json,
    print_table,
    store_errors,
)
from agent.cli.node_secrets import (
    add_password_options,
    password_from_args,
    referenced_secret,
    secret_fields,
    secret_source,
)
from agent.config.inventory import FORMATS, ImportRow, read_inventory
from agent.config.nodes import node_inventory, parse_node
from agent.config.options import AgentConfig, load_config
from agent.config.reader import ascii_integer
from agent.drivers import DEFAULT_PORTS, DRIVER_NAMES
from agent.drivers.ipmi import PRIVILEGES, check_cipher_suites, check_username
from agent.errors import AgentError, NodeError
from store import (
    DuplicateNode,
    HistoryRecord,
    InstanceInUse,
    InvalidNode,
    Node,
    NodeChange,
    NodeLocked,
    NodeNotFound,
    Store,
    StoreError,
)

OPERATOR = "operator"  # history cause for edits made here


def _split_suites(text: str) -> list[object]:
    """``"17,3"`` → [17, 3]; a part that is not ASCII digits stays text for the check to refuse."""
    parts = text.replace(";", ",").replace(" ", ",").split(",")
    return [_suite(part) for part in parts if part]


def _suite(part: str) -> object:
    try:
        return ascii_integer(part)
    except ValueError:
        return part


# --------------------------------------------------------------------------------------------
# add


def _cmd_add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    table: dict[str, Any] = {
        "name": args.name,
        "bmc_address": args.address,
        "bmc_port": args.port or DEFAULT_PORTS[args.driver],
        "bmc_username": args.username,
        "driver": args.driver,
    }
    if args.cipher_suites is not None:
        table["cipher_suites"] = _split_suites(args.cipher_suites)
    for key in ("privilege", "instance_uuid", "session_mode"):
        if getattr(args, key) is not None:
            table[key] = getattr(args, key)
    for key, value in (
        ("redfish_system_id", args.system_id),
        ("redfish_verify_ca", False if args.insecure else args.ca_file),
    ):
        if value is not None:  # parse_node refuses them for an IPMI node, naming the key
            table[key] = value
    if args.driver == "redfish" and "://" in args.address:
        table["redfish_address"] = table.pop("bmc_address")
        if args.port is None:
            del table["bmc_port"]  # the URL's
    node = parse_node(
        table,
        where=f"node add {args.name}",
        base_dir=os.curdir,
        environ=os.environ,
        literal_password_ok=False,
        default_password=password_from_args(args),
    )
    with open_configured_store(config, create=True) as store, store_errors(f"node {node.name}"):
        try:
            fields = node_inventory(node, config.ipmi)
            fields.update(secret_fields(args, node.name, args.driver, fields["driver_info"]))
            added = store.add_node(**fields, provision_state=args.provision_state or None)
        except InstanceInUse:
            raise  # store_errors names this node and the one that has the instance
        except DuplicateNode:
            raise NodeError(
                f"node {node.name} already exists (change it with `powersync node set`)"
            ) from None
    if args.json:
        print_json(added.masked())
    else:
        print(f"added node {added.name} ({added.uuid})")
    return 0


# --------------------------------------------------------------------------------------------
# list and show


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with open_configured_store(config, create=False) as store, store_errors("node list"):
        nodes = store.list_nodes(
            maintenance=args.maintenance, fault=args.fault, has_instance=args.has_instance
        )
    if args.json:
        print_json([node.masked() for node in nodes])
        return 0
    rows = [
        (
            node.name,
            node.power_state or "unknown",
            node.provision_state or "-",
            _yes_no(node.maintenance),
            node.fault or "-",
            node.health or "-",
            node.driver,
            f"{node.bmc_address}:{node.bmc_port}",
        )
        for node in nodes
    ]
    headers = ("NAME", "POWER STATE", "PROVISION STATE", "MAINTENANCE", "FAULT", "HEALTH")
    print_table((*headers, "DRIVER", "BMC"), rows)
    return 0


_SHOWN_FIELDS = (
    "name",
    "uuid",
    "power_state",
    "target_power_state",
    "provision_state",
    "health",
    "maintenance",
    "maintenance_reason",
    "fault",
    "last_error",
    "sync_failures",
    "last_seen_at",
    "instance_uuid",
    "driver",
    "driver_info",
    "bmc_address",
    "bmc_port",
    "bmc_username",
    "bmc_password",
    "password_source",
    "cipher_suites",
    "privilege",
    "session_mode",
    "reservation",
    "reservation_expires_at",
    "created_at",
    "updated_at",
)
_TIME_FIELDS = frozenset({"last_seen_at", "reservation_expires_at", "created_at", "updated_at"})


def _display(key: str, value: object) -> str:
    if key in _TIME_FIELDS:
        return format_time(value if isinstance(value, float | int) else None)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return _yes_no(value)
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    return str(value)


def _cmd_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with open_configured_store(config, create=False) as store, store_errors(f"node {args.node}"):
        node = store.get_node(args.node)
        history = store.history(node.uuid, limit=args.history) if args.history else []
    values = node.masked()
    values["password_source"] = secret_source(node)
    if args.json:
        values["history"] = [
            {
                "at": entry.at,
                "from_state": entry.from_state,
                "to_state": entry.to_state,
                "cause": entry.cause,
                "message": entry.message,
            }
            for entry in history
        ]
        print_json(values)
        return 0
    width = max(len(key) for key in _SHOWN_FIELDS) + 1
    for key in _SHOWN_FIELDS:
        print(f"{key + ':':<{width}} {_display(key, values.get(key))}")
    if history:
        print("history (newest first):")
        for entry in history:
            change = f"{entry.from_state or 'unknown'} -> {entry.to_state or 'unknown'}"
            line = f"  {format_time(entry.at)}  {entry.cause:<11} {change}"
            print(f"{line}  {entry.message}".rstrip())
    return 0


# --------------------------------------------------------------------------------------------
# set and delete


def _inventory_changes(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    simple = {
        "new_name": "name",
        "address": "bmc_address",
        "port": "bmc_port",
        "username": "bmc_username",
        "privilege": "privilege",
        "instance_uuid": "instance_uuid",
    }
    for option, field in simple.items():
        if getattr(args, option) is not None:
            fields[field] = getattr(args, option)
    if args.username is not None:
        try:
            check_username(args.username)
        except ValueError as exc:
            raise NodeError(f"node {args.node}: --username {exc}") from None
    if args.no_instance:
        fields["instance_uuid"] = None
    if args.provision_state is not None:
        fields["provision_state"] = args.provision_state or None
    if args.session_mode is not None:
        fields["session_mode"] = None if args.session_mode == "default" else args.session_mode
    if args.cipher_suites is not None:
        try:
            fields["cipher_suites"] = check_cipher_suites(_split_suites(args.cipher_suites))
        except ValueError as exc:
            raise NodeError(
                f"node {args.node}: --cipher-suites {exc} (got {args.cipher_suites!r})"
            ) from None
    return fields


def _maintenance_change(args: argparse.Namespace, node: Node) -> NodeChange | None:
    if args.maintenance is None:
        if args.reason is None:
            return None
        if not node.maintenance:
            raise NodeError(f"node {node.name}: --reason needs --maintenance on")
        fields: dict[str, object] = {"maintenance_reason": args.reason}
        message = f"maintenance reason: {args.reason}"
    elif args.maintenance == "on":
        fields = {"maintenance": True, "maintenance_reason": args.reason}
        message = "maintenance on" + (f": {args.reason}" if args.reason else "")
    else:
        if args.reason is not None:
            raise NodeError(f"node {node.name}: --reason goes with --maintenance on")
        # Like Ironic's "maintenance unset": the fault and the failure count go too, so the
        # next sync starts afresh.
        fields = {
            "maintenance": False,
            "maintenance_reason": None,
            "fault": None,
            "sync_failures": 0,
        }
        message = "maintenance off" + (f" (fault {node.fault!r} cleared)" if node.fault else "")
    record = HistoryRecord(node.power_state, node.power_state, OPERATOR, message)
    return NodeChange(node.uuid, fields=fields, history=record)


def _cmd_set(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    fields = _inventory_changes(args)
    with open_configured_store(config, create=False) as store, store_errors(f"node {args.node}"):
        node = store.get_node(args.node)
        fields.update(secret_fields(args, node.name, node.driver, node.driver_info))
        change = _maintenance_change(args, node)
        if not fields and change is None:
            raise NodeError(
                f"node {node.name}: nothing to change (see `powersync node set --help`)"
            )
        if fields:
            node = store.update_node(node.uuid, **fields)
        if change is not None:
            store.apply([change])
            node = store.get_node(node.uuid)
    if args.json:
        print_json(node.masked())
    else:
        state = f"maintenance: {_yes_no(node.maintenance)}"
        if node.maintenance_reason:
            state += f" ({node.maintenance_reason})"
        print(f"updated node {node.name}; {state}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with open_configured_store(config, create=False) as store, store_errors(f"node {args.node}"):
        node = store.get_node(args.node)
        try:
            store.delete_node(node.uuid)
        except NodeLocked:
            until = format_time(node.reservation_expires_at)
            raise NodeError(
                f"node {node.name} is locked by {node.reservation} (until {until}); not deleted. "
                "Try again when its power action or sync has finished"
            ) from None
    print(f"deleted node {node.name} ({node.uuid})")
    return 0


# --------------------------------------------------------------------------------------------
# import


def _import_one(store: Store | None, row: ImportRow, config: AgentConfig, args: Any) -> str:
    """Upsert one row; returns "added", "updated" or "unchanged".

    With ``--dry-run`` nothing is written; ``store`` is None when a dry run has no store yet.
    """
    assert row.node is not None
    wanted = node_inventory(row.node, config.ipmi)
    if row.provision_state is not None:  # Ironic's JSON: kept, so the sync skips what it skips
        wanted["provision_state"] = row.provision_state
    existing: Node | None = None
    if store is not None:
        with contextlib.suppress(NodeNotFound):
            existing = store.get_node(row.node.name)
    if existing is not None:
        # What the file leaves out stays as it is (e.g. an instance set with `node set`).
        for key in ("cipher_suites", "privilege", "instance_uuid", "session_mode"):
            if getattr(row.node, key) is None:
                wanted[key] = getattr(existing, key)
        if referenced_secret(existing) == wanted["bmc_password"]:
            # A node that refers to its password keeps the reference when the file brings
            # the same secret (the import reads it); a different one replaces it.
            wanted["bmc_password"] = existing.bmc_password
            references = ("_password_file", "_password_env")
            kept = {k: v for k, v in existing.driver_info.items() if k.endswith(references)}
            wanted["driver_info"] = {**wanted["driver_info"], **kept}
        if all(getattr(existing, key) == wanted[key] for key in wanted):
            return "unchanged"
    outcome = "added" if existing is None else "updated"
    if args.dry_run or store is None:
        return outcome
    node = store.upsert_node(**wanted, uuid=row.uuid)  # a uuid only names a new node
    # State from Ironic's JSON goes only into new nodes: for known ones our observations win.
    if existing is None and (row.power_state is not None or row.maintenance):
        fields: dict[str, object] = {"power_state": row.power_state}
        if row.maintenance:
            # Ironic's "power failure" stays a fault, so recovery clears it when the BMC
            # answers again; a maintenance without a fault is an operator's and stays.
            fields |= {
                "maintenance": True,
                "maintenance_reason": row.maintenance_reason,
                "fault": row.fault,
            }
        record = HistoryRecord(None, row.power_state, OPERATOR, f"imported from {args.file}")
        store.apply([NodeChange(node.uuid, fields=fields, history=record)])
    return outcome


def _import_rows(
    rows: list[ImportRow], store: Store | None, config: AgentConfig, args: argparse.Namespace
) -> tuple[dict[str, int], list[str]]:
    counts = {"added": 0, "updated": 0, "unchanged": 0, "skipped": 0, "failed": 0}
    errors: list[str] = []
    first_use: dict[str, str] = {}  # name -> the row that has it
    instance_rows: dict[str, str] = {}  # instance_uuid -> the row that has it
    for row in rows:
        if row.skipped is not None:
            counts["skipped"] += 1
            print_error(f"{row.where}: skipped: {row.skipped}")
        elif row.node is None:
            errors.append(row.error or f"{row.where}: invalid")
        elif row.node.name in first_use:
            used_by = first_use[row.node.name]
            errors.append(f"{row.where}: name {row.node.name!r} is already used by {used_by}")
        elif row.node.instance_uuid in instance_rows:
            used_by = instance_rows[row.node.instance_uuid]
            errors.append(
                f"{row.where}: instance_uuid {row.node.instance_uuid} is already used by {used_by}"
            )
        else:
            first_use[row.node.name] = row.where.removeprefix(f"{args.file}: ")
            if row.node.instance_uuid is not None:
                instance_rows[row.node.instance_uuid] = first_use[row.node.name]
            try:
                counts[_import_one(store, row, config, args)] += 1
            except (InvalidNode, DuplicateNode) as exc:  # this row's problem: the rest go on
                errors.append(f"{row.where}: {exc}")
            except StoreError as exc:
                # The store itself failed (busy, disk full): every later row would wait and
                # fail too. Each row is its own transaction, so what is written is whole.
                written = counts["added"] + counts["updated"]
                raise AgentError(
                    f"{row.where}: {exc}; import stopped after writing {written} node(s), "
                    "run it again when the store is usable (rows already written are unchanged)"
                ) from exc
    counts["failed"] = len(errors)
    return counts, errors


def _cmd_import(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    rows = read_inventory(
        args.file, file_format=args.format, default_password=password_from_args(args)
    )
    if args.dry_run and not os.path.exists(config.store.path):
        counts, errors = _import_rows(rows, None, config, args)  # every valid row is new
    else:
        with open_configured_store(config, create=not args.dry_run) as store:
            counts, errors = _import_rows(rows, store, config, args)
    for message in errors:
        print_error(message)
    if args.json:
        print_json({"file": args.file, "dry_run": args.dry_run, **counts, "errors": errors})
    else:
        summary = ", ".join(f"{count} {what}" for what, count in counts.items())
        print(f"{args.file}: {summary}" + (" (dry run: nothing written)" if args.dry_run else ""))
    return 1 if errors else 0


# --------------------------------------------------------------------------------------------
# the parser


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = subparsers.add_parser("node", help="manage the node inventory", description=__doc__)
    actions = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add a node")
    add.add_argument("name")
    add.add_argument(
        "--address", required=True, help="BMC IP address or host name (Redfish: or its URL)"
    )
    add.add_argument("--driver", choices=DRIVER_NAMES, default="ipmi", help="BMC protocol (ipmi)")
    add.add_argument(
        "--port", type=integer_argument, help="BMC port (default: the driver's, 623 for IPMI)"
    )
    add.add_argument("--username", required=True, help="BMC user name")
    add_password_options(add, required=True)
    _add_node_options(add)
    redfish = add.add_argument_group("Redfish nodes (--driver redfish)")
    redfish.add_argument(
        "--system-id", help="redfish_system_id, e.g. /redfish/v1/Systems/1 (if several)"
    )
    trust = redfish.add_mutually_exclusive_group()
    trust.add_argument("--ca-file", metavar="PEM", help="redfish_verify_ca: the BMCs' CA")
    trust.add_argument(
        "--insecure", action="store_true", help="redfish_verify_ca = false (a lab only)"
    )
    add.add_argument("--json", action="store_true", help="print the node as JSON")
    add.set_defaults(handler=_cmd_add)

    listing = actions.add_parser("list", help="list nodes")
    listing.add_argument("--maintenance", action=argparse.BooleanOptionalAction, default=None)
    listing.add_argument("--fault", help='only nodes with this fault, e.g. "power failure"')
    listing.add_argument("--has-instance", action=argparse.BooleanOptionalAction, default=None)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cmd_list)

    show = actions.add_parser("show", help="show one node and its recent history")
    show.add_argument("node", help="name or UUID")
    show.add_argument(
        "--history", type=integer_argument, default=10, metavar="N", help="history rows (10)"
    )
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_cmd_show)

    change = actions.add_parser("set", help="change a node's fields or maintenance")
    change.add_argument("node", help="name or UUID")
    change.add_argument("--name", dest="new_name", help="rename the node")
    change.add_argument("--address")
    change.add_argument("--port", type=integer_argument)
    change.add_argument("--username")
    add_password_options(change, required=False)
    _add_node_options(change, session_default=True)
    change.add_argument("--no-instance", action="store_true", help="clear the instance UUID")
    change.add_argument("--maintenance", choices=("on", "off"))
    change.add_argument("--reason", help="maintenance reason (with --maintenance on)")
    change.add_argument("--json", action="store_true")
    change.set_defaults(handler=_cmd_set)

    delete = actions.add_parser("delete", help="delete a node (refused while it is locked)")
    delete.add_argument("node", help="name or UUID")
    delete.set_defaults(handler=_cmd_delete)

    load = actions.add_parser("import", help="add or update nodes from a TOML, CSV or JSON file")
    load.add_argument("file")
    load.add_argument("--format", choices=FORMATS, help="default: from the file extension")
    add_password_options(load, required=False)
    load.add_argument("--dry-run", action="store_true", help="validate and count, write nothing")
    load.add_argument("--json", action="store_true", help="print the summary as JSON")
    load.set_defaults(handler=_cmd_import)


def _add_node_options(parser: argparse.ArgumentParser, *, session_default: bool = False) -> None:
    parser.add_argument("--cipher-suites", metavar="LIST", help='preference order, e.g. "17,3"')
    parser.add_argument("--privilege", choices=PRIVILEGES)
    parser.add_argument("--instance-uuid", metavar="UUID", help="the Nova instance on this node")
    parser.add_argument(
        "--provision-state",
        metavar="STATE",
        help='Ironic\'s provision state, e.g. "active"; the sync skips "enroll", "clean wait", '
        '"wait call-back" and "adopt failed" ("" clears it)',
    )
    modes = (*SESSION_MODES, "default") if session_default else SESSION_MODES
    parser.add_argument("--session-mode", choices=modes, help="default: [ipmi] session_mode")
