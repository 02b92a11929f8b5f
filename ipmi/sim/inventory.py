"""Write a fleet's BMCs as an inventory file (the ``[[nodes]]`` tables of agent.toml).

The file holds a password, so it is created mode 0600 before the first byte is written,
in the target directory, and renamed into place (a reader never sees half a file).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ipmi.sim.fleet import Fleet


def _toml_string(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def render_inventory(
    endpoints: Iterable[tuple[str, str, int]],
    username: str,
    password: str | None,
    *,
    password_file: str | None = None,
    cipher_suites: Sequence[int] | None = None,
) -> str:
    lines = ["# Simulated BMCs written by `powersync sim`; load with `powersync node import`.", ""]
    for name, address, port in endpoints:
        lines += [
            "[[nodes]]",
            f"name = {_toml_string(name)}",
            f"bmc_address = {_toml_string(address)}",
            f"bmc_port = {int(port)}",
            f"bmc_username = {_toml_string(username)}",
        ]
        if password_file is not None:
            lines.append(f"bmc_password_file = {_toml_string(password_file)}")
        else:
            assert password is not None
            lines.append(f"bmc_password = {_toml_string(password)}")
        if cipher_suites is not None:
            lines.append(f"cipher_suites = [{', '.join(str(int(s)) for s in cipher_suites)}]")
        lines.append("")
    return "\n".join(lines)


def write_inventory(
    path: str,
    fleet_or_endpoints: Fleet | Iterable[tuple[str, str, int]],
    username: str,
    password: str | None,
    *,
    password_file: str | None = None,
    cipher_suites: Sequence[int] | None = None,
) -> None:
    """Write ``[[nodes]]`` for every BMC of a fleet (or of (name, address, port) triples).

    With ``password_file`` the file names that file (``bmc_password_file``) instead of
    holding the password itself.
    """
    if password is None and password_file is None:
        raise ValueError("write_inventory needs a password or a password_file")
    from ipmi.sim.fleet import Fleet

    if isinstance(fleet_or_endpoints, Fleet):
        endpoints: Iterable[tuple[str, str, int]] = fleet_or_endpoints.endpoints
    else:
        endpoints = fleet_or_endpoints
    text = render_inventory(
        endpoints, username, password, password_file=password_file, cipher_suites=cipher_suites
    )
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(prefix=".inventory-", suffix=".toml", dir=directory)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; be explicit about it
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_path)
        raise
