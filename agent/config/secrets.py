"""Reading secrets (BMC and Nova passwords) from files or environment variables.

Secrets are never accepted on the command line and never appear in messages. A secret
file that other users can read is refused, like ssh refuses a private key.
"""

from __future__ import annotations

import os
import stat

from agent.errors import SecretError


def read_secret_file(path: str, *, what: str = "secret") -> str:
    """The first line of ``path`` without its line ending; refuses group/world-readable files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SecretError(f"{what} file {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(
                f"{what} file {path} is readable by other users (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(4096)
    finally:
        os.close(fd)
    text = raw.decode("utf-8", errors="strict").splitlines()
    if not text or not text[0]:
        raise SecretError(f"{what} file {path} is empty")
    return text[0]


def read_secret_env(variable: str, *, what: str = "secret") -> str:
    """The value of an environment variable holding a secret."""
    value = os.environ.get(variable)
    if not value:
        raise SecretError(f"{what}: environment variable {variable} is not set or empty")
    return value


def write_secret_file(path: str, value: str) -> None:
    """Create (or replace) ``path`` holding ``value``, mode 0600 from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, value.encode() + b"\n")
    finally:
        os.close(fd)
