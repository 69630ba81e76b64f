"""Holds admitted for jobs not yet seen stored: confirmed when the job shows up, else dropped.

The validating webhook admits a job into the in-memory ledger before the API server stores it
(see :mod:`suanli.vouchers.book`). Most holds are confirmed a moment later by the job's first
watch event; one whose deadline (the webhook timeout) passes first is decided by reading the
job: stored under the same uid, it is confirmed (the watch was slow); otherwise the create
never happened or failed, and the hold is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Final

from suanli import metrics
from suanli.api.kinds import COMPUTEJOBS
from suanli.handlers.runtime import Runtime
from suanli.kits.loops import run_forever
from suanli.kube import NotFoundError
from suanli.vouchers.book import PendingHold

logger = logging.getLogger(__name__)

CHECK_INTERVAL: Final = 0.5
"""Seconds between looks for holds past their deadline."""


def seen_stored(runtime: Runtime, uid: str) -> None:
    """The job ``uid`` exists: its hold, if pending, goes into the voucher's recorded ledger."""
    key = runtime.book.confirm(uid)
    if key is not None:
        runtime.ledger_writer(*key).mark()


async def settle(runtime: Runtime, hold: PendingHold, *, now: datetime) -> bool:
    """Confirm or drop ``hold`` by reading its job; False when it must wait (not stored yet,
    and its deadline not passed)."""
    namespace, _, name = hold.job.partition("/")
    try:
        body = await runtime.hub.get(COMPUTEJOBS, namespace, name)
        stored = (body.get("metadata") or {}).get("uid") == hold.uid
    except NotFoundError:
        stored = False
    if stored:
        seen_stored(runtime, hold.uid)
        return True
    if now < hold.deadline:
        return False
    if runtime.book.drop(hold.uid) is not None:
        metrics.ADMISSION_HOLDS_DROPPED.inc()
        logger.info(
            "dropped the hold of %s (uid %s) on voucher %s/%s: the job was never stored",
            hold.job,
            hold.uid,
            *hold.voucher,
        )
    return True


async def settle_due(runtime: Runtime) -> None:
    """Decide every hold whose deadline has passed."""
    now = datetime.now(UTC)
    for hold in runtime.book.due(now):
        await settle(runtime, hold, now=now)


def report(runtime: Runtime) -> None:
    metrics.ADMISSION_PENDING_HOLDS.set(runtime.book.pending_count())
    metrics.VOUCHER_WRITE_BEHIND_PENDING.set(
        sum(1 for writer in runtime.writers.values() if writer.pending_writes)
    )


async def expire_forever(runtime: Runtime) -> None:
    """The background loop: holds past their deadline are decided, the gauges kept current."""

    async def step() -> None:
        try:
            await settle_due(runtime)  # the hub may not answer: next round
        finally:
            report(runtime)

    await run_forever("pending-holds", lambda: asyncio.sleep(CHECK_INTERVAL), step)


async def settle_all(runtime: Runtime) -> bool:
    """Before this replica lets go of the Lease: decide every pending hold, waiting for each
    at most until its deadline. True when none is left in flight."""
    while runtime.book.pending_count():
        now = datetime.now(UTC)
        for hold in runtime.book.pending():
            try:
                await settle(runtime, hold, now=now)
            except Exception as error:
                logger.warning("could not decide the hold of %s: %s", hold.job, error)
                return False
        if runtime.book.pending_count():
            await asyncio.sleep(0.2)
    return True
