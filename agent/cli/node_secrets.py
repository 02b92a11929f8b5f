"""The password options of ``powersync node add|set|import`` and what the store keeps of them.

By default a node refers to its secret (``<driver>_password_file`` or ``_env`` in its
driver_info, read at each login); ``--store-secret`` copies it into the store instead.
Nothing here ever prints or returns a secret to show.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from agent.bmc.seam import BmcEndpoint, BmcError
from agent.config.secrets import read_secret_env, read_secret_file
from agent.drivers import check_secret
from agent.errors import NodeError
from store import Node


def password_from_args(args: argparse.Namespace) -> str | None:
    if getattr(args, "password_file", None):
        return read_secret_file(args.password_file, what="BMC password")
    if getattr(args, "password_env", None):
        return read_secret_env(args.password_env, what="BMC password")
    return None


def secret_fields(
    args: argparse.Namespace, subject: str, driver: str, driver_info: Mapping[str, object]
) -> dict[str, Any]:
    """Store fields for the password options: by default a reference (``<driver>_password_file``
    or ``_env`` in driver_info, read at each login); with --store-secret a copy in the store.
    The secret is read here once either way, so a missing or loose file fails now."""
    password = password_from_args(args)
    if password is None:
        return {}
    try:
        check_secret(driver, password)
    except ValueError as exc:
        raise NodeError(f"node {subject}: {exc}") from None
    references = ("_password_file", "_password_env")
    info = {key: value for key, value in driver_info.items() if not key.endswith(references)}
    if getattr(args, "store_secret", False):
        return {"bmc_password": password, "driver_info": info}
    if args.password_file:
        info[f"{driver}_password_file"] = os.path.abspath(args.password_file)
    else:
        info[f"{driver}_password_env"] = args.password_env
    return {"bmc_password": "", "driver_info": info}


def secret_source(node: Node) -> str:
    """Where a node's BMC password comes from, in words (never the secret)."""
    info = node.driver_info
    for key, value in sorted(info.items()):
        if key.endswith("_password_file"):
            return f"file {value}"
        if key.endswith("_password_env"):
            return f"environment variable {value}"
    return "stored in the store" if node.bmc_password else "none"


def referenced_secret(node: Node) -> str | None:
    """The secret a node's password file or variable holds now (None: none or unreadable)."""
    if not secret_source(node).startswith(("file", "environment")):
        return None
    try:
        return BmcEndpoint.for_node(node, node.driver, session_mode="persistent").secret()
    except BmcError:
        return None


def add_password_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--password-file",
        metavar="FILE",
        help="file (mode 0600) holding the password; the node refers to it (read at each login)",
    )
    group.add_argument("--password-env", metavar="VAR", help="environment variable holding it")
    parser.add_argument(
        "--store-secret",
        action="store_true",
        help="copy the password into the store instead of referring to the file or variable",
    )
