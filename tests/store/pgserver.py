"""The store tests' PostgreSQL server: bench.pg's, shared with ``python -m bench.site``."""

from bench.pg import USER, PgServer, find_bindir, free_tcp_port

__all__ = ["USER", "PgServer", "find_bindir", "free_tcp_port"]
