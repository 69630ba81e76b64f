"""Finished ComputeJobs leave the hub after ``--job-retention`` (off unless set).

The leader alone runs it (started with the other background tasks when it takes over). Each
pass lists the jobs a page at a time, picks those finished and charged longer than the
retention ago (:mod:`suanli.controller.retention`), and deletes at most ``PER_PASS`` of them,
each only if it is still the same object (its uid). The deletion runs the job's finalizer as
any other does: the job is charged already, so it only folds the job's ledger entry; its
UsageRecords stay.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from suanli import metrics
from suanli.api.kinds import COMPUTEJOBS
from suanli.controller.retention import PAGE, PER_PASS, Retirable, due, pass_interval
from suanli.handlers.runtime import Runtime
from suanli.kits.loops import run_forever
from suanli.kube import ConflictError, NotFoundError

logger = logging.getLogger(__name__)

TASK = "job-retention"


def _still_held(runtime: Runtime, job: Retirable) -> bool:
    """Whether the job's voucher still holds money for it: its status was written, the
    ledger's charge not yet (a voucher write still being retried). Deleting it now would
    close the hold before the charge lands; it waits for the next pass."""
    ledger = runtime.book.ledger((job.namespace, job.voucher or ""))
    entry = ledger.entries.get(job.uid) if ledger is not None else None
    return entry is not None and entry.is_active


async def retire_due(runtime: Runtime, retention: timedelta, *, now: datetime) -> int:
    """One pass: delete up to ``PER_PASS`` jobs that are due; how many were deleted."""
    retired = 0
    async for page in runtime.hub.list_pages(COMPUTEJOBS, limit=PAGE):
        for job in due(page, now=now, retention=retention):
            if retired >= PER_PASS:
                return retired  # the rest next pass
            if _still_held(runtime, job):
                continue
            try:
                await runtime.hub.delete(COMPUTEJOBS, job.namespace, job.name, uid=job.uid)
            except (NotFoundError, ConflictError):
                continue  # gone already, or another job of that name now
            retired += 1
            metrics.JOBS_RETIRED.inc()
            logger.debug(
                "deleted ComputeJob %s/%s, finished %s", job.namespace, job.name, job.finished
            )
    return retired


async def retire_forever(runtime: Runtime, retention_seconds: float) -> None:
    """The background task: a pass every :func:`pass_interval`, surviving its errors."""
    retention = timedelta(seconds=retention_seconds)
    interval = pass_interval(retention)

    async def step() -> None:
        retired = await retire_due(runtime, retention, now=datetime.now(UTC))
        if retired:
            logger.info(
                "deleted %d ComputeJob(s) finished more than %s ago; their usage records stay",
                retired,
                retention,
            )

    await run_forever(TASK, lambda: asyncio.sleep(interval), step)
