"""Background loops that outlive their errors.

Every background task of the operator (the dispatch pass, the watchdog, the recount, the
statement and status writers, the orphan sweep, ...) runs one step per wake-up for the life
of the process, through :func:`run_forever`. A step that raises must not end its loop: a loop
that died on one member's error would leave stuck jobs stuck and nobody told. A failed step is
counted (``suanli_background_task_errors_total{task}``), logged once (again only when the
error changes, or after the loop recovered), and the loop waits for its next turn.

The wait comes first and outside the guard, so a step that fails at once cannot spin.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from suanli import metrics

logger = logging.getLogger(__name__)


async def run_forever(
    task: str, wait: Callable[[], Awaitable[object]], step: Callable[[], Awaitable[object]]
) -> None:
    """Forever: ``await wait()``, then ``await step()``; a failed step is reported and the
    loop goes on (cancelling the task is the only way to end it)."""
    failing: str | None = None
    while True:
        await wait()
        try:
            await step()
        except Exception as error:
            metrics.BACKGROUND_TASK_ERRORS.labels(task).inc()
            text = f"{type(error).__name__}: {error}"
            if text != failing:  # once, not every second while the cause lasts
                logger.error("%s failed (it goes on): %s", task, text, exc_info=error)
                failing = text
        else:
            if failing is not None:
                logger.info("%s works again", task)
                failing = None
