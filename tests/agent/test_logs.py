"""agent.logs: text and JSON lines, structured fields, and no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from agent.config.options import LoggingConfig
from agent.logs import MASK, extra_fields, setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def capture(config: LoggingConfig) -> io.StringIO:
    stream = io.StringIO()
    setup_logging(config, stream=stream)
    return stream


def test_text_line_has_message_and_key_values() -> None:
    stream = capture(LoggingConfig(format="text", level="info"))
    logging.getLogger("agent.sync").warning(
        "power state differs: recorded %s, hardware %s",
        "power on",
        "power off",
        extra={"node": "sim-0001", "bmc": "127.0.0.1:20001", "cycle": 7, "reason": "two words"},
    )
    line = stream.getvalue().rstrip("\n")
    assert "\n" not in line
    assert (
        " WARNING agent.sync: power state differs: recorded power on, hardware power off " in line
    )
    # context first in a fixed order, then the rest; values with spaces are quoted
    assert line.endswith('cycle=7 node=sim-0001 bmc=127.0.0.1:20001 reason="two words"')
    assert line[:4].isdigit() and line[19:24].startswith(".") and "Z " in line


def test_json_line_carries_fields_as_keys() -> None:
    stream = capture(LoggingConfig(format="json", level="info"))
    logging.getLogger("agent.sync").info(
        "cycle done", extra={"cycle": 3, "nodes": 10, "duration": 1.5, "states": ("a", "b")}
    )
    document = json.loads(stream.getvalue())
    assert document["msg"] == "cycle done"
    assert document["level"] == "info"
    assert document["logger"] == "agent.sync"
    assert document["cycle"] == 3 and document["nodes"] == 10 and document["duration"] == 1.5
    assert document["states"] == ["a", "b"]
    assert document["ts"].endswith("Z")


def test_secret_fields_are_masked_in_both_formats() -> None:
    for log_format in ("text", "json"):
        stream = capture(LoggingConfig(format=log_format, level="info"))
        logging.getLogger("agent").info(
            "login",
            extra={"bmc_password": "hunter22", "auth_token": "tok-1", "kg": "k", "node": "n1"},
        )
        output = stream.getvalue()
        assert "hunter22" not in output and "tok-1" not in output
        assert output.count(MASK) == 3, output
        assert "n1" in output


def test_level_filters_and_exceptions_are_kept() -> None:
    stream = capture(LoggingConfig(format="json", level="warning"))
    log = logging.getLogger("agent.x")
    log.info("hidden")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    document = json.loads(lines[0])
    assert document["level"] == "error"
    assert "RuntimeError: boom" in document["exc"]


def test_setup_twice_replaces_the_handler_and_quiets_httpx() -> None:
    first = capture(LoggingConfig(format="text", level="debug"))
    assert logging.getLogger("httpx").level == logging.DEBUG
    second = capture(LoggingConfig(format="text", level="info"))
    logging.getLogger("agent").info("once")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger("httpx").level == logging.WARNING


def test_extra_fields_ignores_standard_attributes() -> None:
    record = logging.LogRecord("n", logging.INFO, "f.py", 1, "m", None, None)
    assert extra_fields(record) == {}
    record.node = "n1"
    assert extra_fields(record) == {"node": "n1"}


def test_stack_info_is_kept() -> None:
    for log_format in ("text", "json"):
        stream = capture(LoggingConfig(format=log_format, level="info"))
        logging.getLogger("agent").info("where am I", stack_info=True)
        assert "test_stack_info_is_kept" in stream.getvalue()


def test_debug_changes_the_level_not_the_line_format() -> None:
    # Found: --debug switched to logging.basicConfig's own format.
    from agent.cli.main import main
    from agent.errors import ConfigError
    from agent.logs import TextFormatter

    with pytest.raises(ConfigError, match="cannot read config file"):  # --debug re-raises
        main(["--debug", "--config", "/nonexistent/agent.toml", "status"])
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    assert [type(handler.formatter) for handler in root.handlers] == [TextFormatter]
    stream = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=stream, debug=True)
    logging.getLogger("agent.sync").debug("a debug line", extra={"node": "n1"})
    document = json.loads(stream.getvalue())
    assert document["level"] == "debug" and document["node"] == "n1"
