"""What every client child process of the benchmark shares: its fleet arguments, the CPU and
wall clock of a timed cycle, the open-files limit, and the one JSON line it prints.

Standard library only: pyghmi's child is measured as a whole process, so importing this
must cost it nothing measurable.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any, Self


def cpu_now() -> float:
    """User+sys CPU seconds of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stopwatch:
    """The wall time and process CPU of the block it wraps (``wall_s``, ``cpu_s``)."""

    wall_s = 0.0
    cpu_s = 0.0

    def __enter__(self) -> Self:
        self.cpu0, self.wall0 = cpu_now(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s, self.cpu_s = time.monotonic() - self.wall0, cpu_now() - self.cpu0


def count_error(errors: dict[str, int], name: str) -> None:
    errors[name] = errors.get(name, 0) + 1


def difference(after: dict[str, int] | None, before: dict[str, int] | None) -> Any:
    """Counters gained between two readings (None when either reading is)."""
    if after is None or before is None:
        return None
    return {name: after[name] - before[name] for name in after}


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """A fleet of ``--count`` BMCs on consecutive ports of one host, from ``--port-base``."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port-base", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--username", default="admin")


def open_files_for_every_session() -> None:
    """Raise the soft open-files limit to the hard one: one socket per live session."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def print_report(report: dict[str, Any]) -> None:
    """The child's one line of output, which the harness parses (the last line of stdout)."""
    print(json.dumps(report), flush=True)
