"""Log lines for people (text) or for log shippers (JSON), with structured fields.

Callers attach context with ``extra``::

    log.warning("power state differs", extra={"node": node.name, "bmc": "10.0.0.5:623",
                                               "cycle": 12, "recorded": "power on"})

Text lines show the fields as ``key=value`` after the message; JSON lines carry them as keys.
Any field whose name suggests a secret (password, secret, token, ...) is masked, so a careless
``extra`` cannot leak one; secrets must still never be put into messages.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, TextIO

from agent.config.options import LoggingConfig

MASK: Final = "******"
_SECRET_WORDS: Final = ("password", "passwd", "secret", "token", "credential")
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
# Fields shown first, in this order, when present; the rest follow sorted by name.
_LEADING_FIELDS: Final = ("cycle", "node", "bmc")
# Libraries that log every HTTP request at INFO: only their warnings unless we debug.
_CHATTY_LOGGERS: Final = ("httpx", "httpcore")

_HANDLER_NAME: Final = "powersync"


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return lowered == "kg" or any(word in lowered for word in _SECRET_WORDS)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a caller attached to ``record``, secrets masked, in display order."""
    fields = {
        key: (MASK if is_secret_field(key) else value)
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }
    leading = {key: fields.pop(key) for key in _LEADING_FIELDS if key in fields}
    return leading | dict(sorted(fields.items()))


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def _text_value(value: object) -> str:
    text = str(value) if value is not None else "-"
    if not text or any(char in text for char in ' "=\n\t'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``2026-11-24T21:50:03.123Z WARNING agent.sync: message cycle=3 node=n1 bmc=...``"""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record.created),
            record.levelname,
            f"{record.name}: {record.getMessage()}",
        ]
        parts.extend(f"{key}={_text_value(value)}" for key, value in extra_fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            document.setdefault(key, _json_value(value))
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False)


def _json_value(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    return str(value)


def setup_logging(
    config: LoggingConfig, *, stream: TextIO | None = None, debug: bool = False
) -> None:
    """Send the root logger's records to ``stream`` (stderr) in the configured format.

    Calling it again replaces the previous setup (handlers installed by ``logging.basicConfig``
    included), so the CLI can configure early and the daemon again after loading its config.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # --debug changes the level only: the lines keep the configured format.
    level = logging.DEBUG if debug else logging.getLevelNamesMapping()[config.level.upper()]
    root.setLevel(level)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
