"""Typed reading of TOML tables for the configuration and inventory files.

Every problem becomes one :class:`~agent.errors.ConfigError` line that names the file, the
table and the key, and shows the offending value (never for secrets).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from agent.errors import ConfigError

T = TypeVar("T")


def file_is_private(fd: int) -> bool:
    """True when neither group nor others may read the open file (mode 0600 or stricter)."""
    return not os.fstat(fd).st_mode & (stat.S_IRGRP | stat.S_IROTH)


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)$")
_ASCII_DIGITS = re.compile(r"[0-9]+")
BOM = "\ufeff"
# Deeper than any inventory or config needs, shallow enough that repr() of a value in a
# message cannot recurse out of the stack (dotted keys nest without any bracket).
MAX_NESTING = 32


def ascii_integer(text: str) -> int:
    """The integer ``text`` spells in ASCII digits only; ValueError otherwise.

    The one way to read an integer from user text: ``int()`` also takes other scripts'
    digits, signs, spaces and underscores, and ``str.isdigit()`` takes superscripts that
    ``int()`` then refuses, so ``6²3`` must be an error, neither a crash nor a port."""
    if not _ASCII_DIGITS.fullmatch(text):
        raise ValueError(f"must be a whole number in ASCII digits (got {text!r})")
    return int(text)


def refuse_nul(text: str, source: str) -> None:
    """ConfigError naming the line and column of a NUL character (no text format has one)."""
    index = text.find("\0")
    if index >= 0:
        line, column = _position(text, index)
        raise ConfigError(f"{source}: line {line}, column {column}: contains a NUL character")


def _position(text: str, index: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def deepest_line(text: str, *, comment: str | None, quotes: str) -> int:
    """The line where brackets and braces nest deepest, ignoring strings and comments.

    Only to name the line when a parser gives up on nesting (RecursionError, which carries
    no position); triple quotes are TOML's multi-line strings, and only ``"`` has escapes."""
    depth = deepest = 0
    line = where = 1
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == "\n":
            line += 1
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, line
        elif char in "]}":
            depth -= 1
        elif comment is not None and char == comment:
            index = text.find("\n", index)
            continue
        elif char in quotes:
            closer = char * 3 if text.startswith(char * 3, index) else char
            end = index + len(closer)
            while end < length and not text.startswith(closer, end):
                end += 2 if char == '"' and text[end] == "\\" else 1
            line += text.count("\n", index, end)
            index = end + len(closer)
            continue
        index += 1
    return where


def check_nesting(document: object, source: str) -> None:
    """ConfigError if the tables and arrays of a parsed document nest over MAX_NESTING."""
    pending: list[tuple[object, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            if depth >= MAX_NESTING:
                raise ConfigError(f"{source}: nested deeper than {MAX_NESTING} levels")
            pending.extend((child, depth + 1) for child in value)


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """tomllib with errors turned into one ConfigError line naming the file and the line.

    A leading byte-order mark is skipped (Windows editors write one)."""
    text = text.removeprefix(BOM)
    refuse_nul(text, source)
    try:
        document = tomllib.loads(text)
    except RecursionError:
        line = deepest_line(text, comment="#", quotes="\"'")
        raise ConfigError(f"{source}: line {line}: invalid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        if found:
            reason = message[: found.start()].strip()
            raise ConfigError(
                f"{source}: line {found.group(1)}, column {found.group(2)}: invalid TOML: {reason}"
            ) from None
        raise ConfigError(f"{source}: invalid TOML: {message}") from None
    check_nesting(document, source)
    return document


# --------------------------------------------------------------------------------------------
# typed access to one table, with messages that name the file, section and key


def reject_unknown(table: Mapping[str, Any], known: Sequence[str], where: str, kind: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where} unknown {kind} {key!r}{hint}")


class Section:
    """One table; typed reads whose errors start with ``where`` (file and table)."""

    def __init__(self, table: dict[str, Any], where: str) -> None:
        self.table = table
        self.where = where

    @classmethod
    def named(cls, document: Mapping[str, Any], name: str, source: str) -> Section:
        """The top-level table ``[name]`` of ``document`` (empty if absent)."""
        where = f"{source}: [{name}]"
        table = document.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        return cls(table, where)

    def fail(self, key: str, requirement: str, value: object) -> ConfigError:
        return ConfigError(f"{self.where} {key} {requirement} (got {value!r})")

    def check_keys(self, known: Sequence[str]) -> None:
        reject_unknown(self.table, known, self.where, "key")

    def number(self, key: str, default: float, *, minimum: float | None = None) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "must be a number", value)
        if not math.isfinite(value):
            raise self.fail(key, "must be a finite number", value)
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be a number >= {minimum:g}", value)
        return float(value)

    def positive(self, key: str, default: float) -> float:
        value = self.number(key, default)
        if value <= 0:
            raise self.fail(key, "must be a number > 0", value)
        return value

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "must be an integer", value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            if maximum is None:
                requirement = f"must be an integer >= {minimum}"
            else:
                requirement = f"must be an integer from {minimum} to {maximum}"
            raise self.fail(key, requirement, value)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false", value)
        return value

    def string(self, key: str, default: str) -> str:
        value = self.optional_string(key)
        return default if value is None else value

    def optional_string(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string", value)
        return value

    def path(self, key: str, default: str) -> str:
        value = self.string(key, default)
        if "\0" in value:
            raise self.fail(key, "must be a file path (it contains a NUL character)", value)
        return value

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.optional_choice(key, choices)
        return default if value is None else value

    def optional_choice(self, key: str, choices: Sequence[str]) -> str | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or value.lower() not in choices:
            raise self.fail(key, "must be one of " + ", ".join(repr(c) for c in choices), value)
        return value.lower()

    def checked(self, key: str, check: Callable[[object], T]) -> T | None:
        """The value under ``check`` (a driver's rule: ValueError says what is wrong)."""
        value = self.table.get(key)
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as exc:
            raise self.fail(key, str(exc), value) from None


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9617"`` or ``"[::1]:9617"`` → (host, port); ValueError if malformed."""
    host, sep, port_text = listen.rpartition(":")
    try:
        port = ascii_integer(port_text)
    except ValueError:
        raise ValueError('must be HOST:PORT, e.g. "127.0.0.1:9617"') from None
    if not sep or not host:
        raise ValueError('must be HOST:PORT, e.g. "127.0.0.1:9617"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError('must put an IPv6 address in brackets, e.g. "[::1]:9617"')
    if port > 65535:
        raise ValueError("must have a port from 0 to 65535")
    return host, port


def resolve_path(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    if os.path.isabs(path) or base_dir == os.curdir:
        return path
    return os.path.join(base_dir, path)
