"""How often the Redfish client tries a failed request, and how long it backs off."""

from __future__ import annotations

import attrs


@attrs.frozen
class RetryPolicy:
    """How often a failed request is tried (``attempts`` in all) and how long to back off:
    ``first_backoff`` doubling up to ``max_backoff``."""

    attempts: int = 3
    first_backoff: float = 0.5
    max_backoff: float = 2.0

    def __attrs_post_init__(self) -> None:
        if self.attempts < 1 or not 0 <= self.first_backoff <= self.max_backoff:
            raise ValueError("RetryPolicy: attempts >= 1 and 0 <= first_backoff <= max_backoff")

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based)."""
        return min(self.first_backoff * 2.0 ** (retry - 1), self.max_backoff)
