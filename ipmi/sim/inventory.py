"""Render a fleet's description as an inventory file: the ``[[nodes]]`` tables of agent.toml.

A thin writer over :class:`ipmi.sim.description.BmcDescription` records (or plain
(name, address, port) triples), kept here so that ``powersync sim --write-inventory`` and
the tests produce exactly the file ``powersync node import`` reads. The file holds a
password unless a password file is named, so it is created mode 0600 before the first
byte is written, in the target directory, and renamed into place (a reader never sees
half a file).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from ipmi.sim.description import BmcDescription


@runtime_checkable
class DescribedFleet(Protocol):
    """Anything that describes its BMCs (``ipmi.sim.Fleet`` does)."""

    def describe(
        self,
        username: str | None = None,
        *,
        password_file: str | None = None,
        cipher_suites: Sequence[int] | None = None,
    ) -> list[BmcDescription]: ...


def _toml_string(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def describe_endpoints(
    endpoints: Iterable[tuple[str, str, int]],
    username: str,
    *,
    password_file: str | None = None,
    cipher_suites: Sequence[int] | None = None,
) -> list[BmcDescription]:
    """Descriptions of (name, address, port) triples that share one login."""
    suites = tuple(int(s) for s in cipher_suites) if cipher_suites is not None else None
    return [
        BmcDescription(name, address, int(port), username, password_file, suites)
        for name, address, port in endpoints
    ]


def render_descriptions(bmcs: Iterable[BmcDescription], password: str | None) -> str:
    """The inventory text; ``password`` is written for every BMC without a password file."""
    lines = ["# Simulated BMCs written by `powersync sim`; load with `powersync node import`.", ""]
    for bmc in bmcs:
        lines += [
            "[[nodes]]",
            f"name = {_toml_string(bmc.name)}",
            f"bmc_address = {_toml_string(bmc.host)}",
            f"bmc_port = {bmc.port}",
            f"bmc_username = {_toml_string(bmc.username)}",
        ]
        if bmc.password_file is not None:
            lines.append(f"bmc_password_file = {_toml_string(bmc.password_file)}")
        else:
            if password is None:
                raise ValueError(f"{bmc.name}: no password and no password file")
            lines.append(f"bmc_password = {_toml_string(password)}")
        if bmc.cipher_suites is not None:
            lines.append(f"cipher_suites = [{', '.join(str(s) for s in bmc.cipher_suites)}]")
        lines.append("")
    return "\n".join(lines)


def render_inventory(
    endpoints: Iterable[tuple[str, str, int]],
    username: str,
    password: str | None,
    *,
    password_file: str | None = None,
    cipher_suites: Sequence[int] | None = None,
) -> str:
    """The inventory text for (name, address, port) triples sharing one login."""
    described = describe_endpoints(
        endpoints, username, password_file=password_file, cipher_suites=cipher_suites
    )
    return render_descriptions(described, password)


def write_inventory(
    path: str,
    fleet_or_endpoints: DescribedFleet | Iterable[tuple[str, str, int]],
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
    if isinstance(fleet_or_endpoints, DescribedFleet):
        described = fleet_or_endpoints.describe(
            username, password_file=password_file, cipher_suites=cipher_suites
        )
    else:
        described = describe_endpoints(
            fleet_or_endpoints, username, password_file=password_file, cipher_suites=cipher_suites
        )
    write_private_text(path, render_descriptions(described, password))


def write_private_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` mode 0600 from the first byte, atomically (a temporary
    file in the same directory, renamed into place)."""
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
