"""Hypothesis: any TOML-shaped document gives an AgentConfig or one ConfigError line."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config.nodes import NODE_KEYS
from agent.config.options import AgentConfig, config_from_document
from agent.errors import ConfigError

SECTION_KEYS = {
    "conductor": [
        "sync_power_state_interval", "sync_power_state_workers", "force_power_state_during_sync",
        "power_state_sync_max_retries", "power_failure_recovery_interval",
        "power_state_change_timeout", "sync_node_timeout", "sync_jitter_window",
        "min_command_interval", "lock_ttl",
    ],
    "ipmi": [
        "cipher_suites", "privilege", "retry_timeout", "retry_backoff", "retry_max_timeout",
        "retries", "session_mode", "keepalive_interval",
    ],
    "store": ["backend", "path"],
    "metrics": ["listen"],
    "logging": ["format", "level"],
    "nova": [
        "send_power_notifications", "auth_url", "username", "password", "password_file",
        "password_env", "valid_interfaces", "timeout", "cafile", "insecure",
    ],
}  # fmt: skip

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["sqlite", "json", "text", "debug", "user", "per-cycle", "127.0.0.1:1"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)


def table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    key = st.one_of(st.sampled_from(keys), st.text(max_size=6))
    return st.dictionaries(key, values, max_size=4)


# Nodes that pass the required fields, so the password and option checks are reached too.
plausible_nodes = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["n1", "n2"]),
        "bmc_address": st.sampled_from(["127.0.0.1", "::1", "bmc.example"]),
        "bmc_username": st.sampled_from(["admin", "u"]),
    },
    optional={
        key: values for key in NODE_KEYS if key not in ("name", "bmc_address", "bmc_username")
    },
)

documents = st.fixed_dictionaries(
    {},
    optional={
        **{name: st.one_of(table(keys), scalars) for name, keys in SECTION_KEYS.items()},
        "nodes": st.one_of(
            st.lists(table(list(NODE_KEYS)), max_size=3),
            st.lists(plausible_nodes, max_size=3),
            scalars,
        ),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_document_gives_config_or_config_error(document: dict[str, Any]) -> None:
    try:
        config = config_from_document(
            document, source="fuzz.toml", base_dir="/nonexistent", environ={}
        )
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml")
        assert "\n" not in message
    else:
        assert isinstance(config, AgentConfig)


ironic_info = st.dictionaries(
    st.sampled_from(
        ["ipmi_address", "ipmi_port", "ipmi_username", "ipmi_password", "ipmi_priv_level",
         "ipmi_cipher_suite", "redfish_address"]
    ),
    values,
    max_size=6,
)  # fmt: skip
ironic_node = st.dictionaries(
    st.sampled_from(
        ["UUID", "Name", "Instance UUID", "Power State", "Maintenance", "Maintenance Reason",
         "Driver", "Driver Info", "driver_info", "name"]
    ),
    st.one_of(values, ironic_info),
    max_size=8,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.lists(ironic_node, max_size=3), values), st.booleans())
def test_any_ironic_json_gives_rows_or_config_error(document: object, with_password: bool) -> None:
    import json
    import os
    import tempfile

    from agent.config.inventory import read_inventory

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "nodes.json")
        with open(path, "w") as handle:
            json.dump(document, handle)
        try:
            rows = read_inventory(
                path, environ={}, default_password="pw" if with_password else None
            )
        except ConfigError as exc:
            assert str(exc).startswith(path) and "\n" not in str(exc)
            return
    for row in rows:
        assert row.where.startswith(path)
        assert (row.node is not None) + (row.error is not None) + (row.skipped is not None) == 1
