"""One bounded wait for everything that converges: clusters, nodes, pods, and the e2e tests.

Every wait names what it waits for and has a deadline taken from ``Timeouts``, so a hang turns
into a failure that says what never happened, and no caller sleeps a fixed time and hopes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Timeouts:
    """Named deadlines, in seconds. Generous for a busy 2-core machine, never unbounded."""

    api_ready: float = 60.0
    nodes_ready: float = 60.0
    pod_scheduled: float = 30.0
    job_complete: float = 90.0
    condition_stable: float = 10.0


TIMEOUTS: Final = Timeouts()


class WaitTimeoutError(AssertionError):
    """Raised when a wait's deadline passes; the message says what never became true."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Call ``probe`` until it returns something truthy; return that.

    Falsy results (None, False, 0, an empty list) mean "not yet": a probe for "nothing is
    left" returns a bool, never the empty collection itself.

    Exceptions from the probe propagate: a probe that can fail transiently handles that itself.
    The interval backs off up to 2 s so long waits cost little.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 2.0)
