"""The one back-off the controller retries by: 1, 2, 5, 10, then every 30 seconds."""

from __future__ import annotations

from typing import Final

RETRY_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds before each new try of a step that failed; the last repeats until it succeeds."""


def delay_after(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1 for the first)."""
    return RETRY_DELAYS[min(max(failures, 1), len(RETRY_DELAYS)) - 1]
