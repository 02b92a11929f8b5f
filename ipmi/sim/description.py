"""A neutral description of a simulated fleet: what a client needs to reach each BMC.

The simulator produces these (``Fleet.describe()``); whoever needs a file in some
inventory format renders them (``ipmi.sim.inventory`` writes the ``[[nodes]]`` tables that
``powersync node import`` reads). A description never holds a password: at most the path
of the file that does.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class BmcDescription:
    """One BMC: its name, where it listens, and how to log in."""

    name: str
    host: str
    port: int
    username: str
    password_file: str | None = None  # the file holding the password, if there is one
    cipher_suites: tuple[int, ...] | None = None  # None: whatever the client prefers

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-friendly; ``cipher_suites`` as a list or None)."""
        out = attrs.asdict(self)
        if self.cipher_suites is not None:
            out["cipher_suites"] = list(self.cipher_suites)
        return out
