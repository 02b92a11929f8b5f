"""How a Node is written to and read from storage: SQL rows and JSON objects.

Derived from the field metadata in store/model.py, so a new field needs no edit here unless
it brings a new codec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from store.model import BOOL, CODECS, MAPPING, NO_DRIVER_INFO, NODE_FIELDS, SUITES, Node
from store.validate import DriverInfo


def to_column(field: str, value: object, *, native_bool: bool = False) -> object:
    """A field value as an SQL parameter (suites as "17,3", driver_info as JSON text)."""
    codec = CODECS.get(field)
    if codec is None:
        return value
    if codec == SUITES:
        return ",".join(str(suite) for suite in value)  # type: ignore[attr-defined]
    if codec == BOOL:
        return bool(value) if native_bool else int(bool(value))
    if codec == MAPPING:
        return json.dumps(dict(value), sort_keys=True) if value else "{}"  # type: ignore[call-overload]
    return value


def from_column(field: str, value: Any) -> object:
    codec = CODECS.get(field)
    if codec is None:
        return value
    if codec == SUITES:
        return tuple(int(suite) for suite in value.split(","))
    if codec == BOOL:
        return bool(value)
    if codec == MAPPING:
        return NO_DRIVER_INFO if value == "{}" else DriverInfo(json.loads(value))
    return value


# (position, field) of the columns that need decoding: the rest map as they are.
_CODED = [(index, field) for index, field in enumerate(NODE_FIELDS) if field in CODECS]


def node_from_row(row: Sequence[Any]) -> Node:
    """A Node from a row selected with the columns NODE_FIELDS, in that order."""
    values = list(row)
    for index, field in _CODED:
        values[index] = from_column(field, values[index])
    return Node(*values)


def node_to_json(node: Node) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in NODE_FIELDS:
        value = getattr(node, field)
        codec = CODECS.get(field)
        if codec == SUITES:
            value = list(value)
        elif codec == MAPPING:
            value = dict(value)
        values[field] = value
    return values


def node_from_json(values: Mapping[str, Any]) -> Node:
    """A Node from its JSON object; KeyError/TypeError/ValueError when it is malformed."""
    decoded: dict[str, Any] = {}
    for field in NODE_FIELDS:
        value = values[field]
        codec = CODECS.get(field)
        if codec == SUITES:
            value = tuple(value)
        elif codec == MAPPING and isinstance(value, Mapping):
            value = DriverInfo(value)  # anything else is reported by the caller's validation
        decoded[field] = value
    extra = set(values) - set(NODE_FIELDS)
    if extra:
        raise ValueError(f"unknown node fields {sorted(extra)}")
    return Node(**decoded)
