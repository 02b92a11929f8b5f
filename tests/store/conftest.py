"""Fixtures for the store tests: every contract test runs on all three backends, for real.

SQLite and JSON on real files in tmp_path; PostgreSQL on a real server started once per
session (tests/store/pgserver.py), each test in a fresh database. Without PostgreSQL or
psycopg the PostgreSQL cases skip saying why, except under CI (CI=true), where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store import Store, open_store
from tests.conftest import in_ci
from tests.store.helpers import BACKENDS, store_path
from tests.store.pgserver import PgServer, find_bindir

Opener = Callable[[], Store]


def _require_postgres() -> str:
    problem = None
    bindir = find_bindir()
    if bindir is None:
        problem = "PostgreSQL not installed (apt-get install -y postgresql)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            problem = "python module psycopg not installed (pip install 'psycopg[binary]')"
    if problem is not None:
        if in_ci():
            pytest.fail(problem + " -- CI must never skip the PostgreSQL backend")
        pytest.skip(problem)
    assert bindir is not None
    return bindir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer(_require_postgres())
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens another handle on this test's store (same file, or same database)."""
    if backend != "postgresql":
        path = store_path(tmp_path, backend)
        yield lambda: open_store(path, backend)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with server.database() as dsn:
        yield lambda: open_store(backend="postgresql", dsn=dsn, password="not-needed-trust")


@pytest.fixture
def store(opener: Opener) -> Iterator[Store]:
    with opener() as opened:
        yield opened
