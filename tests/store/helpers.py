"""Shared values and helpers for the store tests (real files in pytest's tmp_path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from store import Node, Store

PASSWORD = "s3cr3t-Pa55w0rd!"  # distinctive, so a leak into logs/reprs is easy to spot
INSTANCE = "6a0c3f4e-2b8d-4a59-9c61-0d5d8f4e7a11"
INSTANCE_2 = "0f6e1a52-97c4-4b0e-8a43-2e5a3c9d1b77"
T0 = 1_700_000_000.0
BACKENDS = ("sqlite", "json", "postgresql")
FILE_BACKENDS = ("sqlite", "json")


def store_path(directory: Path, backend: str) -> str:
    return str(directory / f"store.{backend}")


def add(store: Store, name: str = "node-1", **overrides: Any) -> Node:
    fields: dict[str, Any] = {
        "name": name,
        "bmc_address": "127.0.0.1",
        "bmc_port": 6230,
        "bmc_username": "admin",
        "bmc_password": PASSWORD,
        "now": T0,
    }
    fields.update(overrides)
    return store.add_node(**fields)
