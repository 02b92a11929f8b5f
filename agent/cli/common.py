"""Helpers the command modules share: the configured store, store errors as one line, output."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence

from agent.config.options import AgentConfig
from agent.config.reader import ascii_integer
from agent.config.secrets import read_secret_env, read_secret_file
from agent.errors import AgentError, NodeError
from store import (
    DuplicateNode,
    InvalidNode,
    NodeLocked,
    NodeNotFound,
    Store,
    StoreError,
    open_store,
)


def open_configured_store(config: AgentConfig, *, create: bool) -> Store:
    """The store named by ``[store]``; for read-only commands a missing store is an error."""
    store = config.store
    if store.backend == "postgresql":
        return _open_postgresql(config)
    path = store.path
    if not create and not os.path.exists(path):
        raise AgentError(
            f"store {path} does not exist yet ([store] path in {config.source}); "
            "add nodes with `powersync node add` or `powersync node import`"
        )
    try:
        return open_store(path, store.backend)
    except StoreError as exc:
        message = str(exc)
        raise AgentError(message if path in message else f"store {path}: {message}") from None


def _open_postgresql(config: AgentConfig) -> Store:
    """A shared PostgreSQL store; its password from [store] password_file or password_env."""
    store = config.store
    assert store.dsn is not None  # the config requires it for this backend
    password = None
    if store.password_file is not None:
        password = read_secret_file(store.password_file, what="[store] password")
    elif store.password_env is not None:
        password = read_secret_env(store.password_env, what="[store] password")
    try:
        return open_store(backend="postgresql", dsn=store.dsn, password=password)
    except StoreError as exc:  # the store's messages show the DSN without any password
        raise AgentError(f"store ([store] in {config.source}): {exc}") from None


@contextlib.contextmanager
def store_errors(subject: str) -> Iterator[None]:
    """Turn the store's exceptions into one-line agent errors about ``subject``."""
    try:
        yield
    except NodeNotFound:
        raise NodeError(f"{subject}: no such node") from None
    except NodeLocked as exc:
        raise NodeError(f"{subject}: {exc}") from None
    except (DuplicateNode, InvalidNode) as exc:
        raise NodeError(f"{subject}: {exc}") from None
    except StoreError as exc:
        raise AgentError(f"store: {exc}") from None


def print_error(message: str) -> None:
    """``powersync: message`` on stderr as one line: control characters a file put in a name
    or path (CR, form feed, U+2028...) are shown escaped, so they cannot forge other lines."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    print(f"powersync: {shown}", file=sys.stderr)


def integer_argument(text: str) -> int:
    """``type=`` for integer options: ASCII digits only (argparse's ``int`` takes any script's)."""
    try:
        return ascii_integer(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(timestamp))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def print_json(document: object) -> None:
    json.dump(document, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
