"""Fixtures for the store tests: every contract test runs on both backends, on real files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Store, open_store
from tests.store.helpers import BACKENDS, store_path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(tmp_path: Path, backend: str) -> Iterator[Store]:
    with open_store(store_path(tmp_path, backend), backend) as opened:
        yield opened
