"""Taking up and handing over the leader's duties: rebuild the ledgers, then admit; settle,
then let go.

Only the replica holding the admission Lease runs Kopf at all (see :mod:`suanli.handlers.operator`),
so these handlers run once it leads. Before it admits, it rebuilds every voucher's ledger from
the voucher's status and the jobs that exist (the recount restores each stored job's hold from
the job itself), and waits until every hold its predecessor admitted is stored (see
:func:`suanli.leadership.admit_after`), then recounts again. On a graceful stop it refuses new
creates at once, waits until the holds it admitted are stored or past their deadline, writes
every voucher status, and releases the Lease saying so, so the next leader can admit at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from suanli import metrics
from suanli.api.names import LEADER_LABEL
from suanli.handlers import pending_holds, program_vouchers, programs, statements
from suanli.handlers.retention import retire_forever
from suanli.handlers.runtime import Runtime
from suanli.handlers.voucherquota import recount_all, recount_forever
from suanli.leadership import DELETION_COST, LEADER_DELETION_COST, admit_after

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT: Final = 10.0
"""Seconds a stopping leader waits for its last voucher status writes."""
REBUILD_RETRY: Final = 2.0


async def _rebuild(runtime: Runtime) -> None:
    """Load every voucher and recount it against the jobs and records that exist, until the
    listing succeeds (a leader that cannot read vouchers must not admit)."""
    while True:
        try:
            await recount_all(runtime)  # loads and caches every voucher as it recounts
            # Voucher programmes: their counters from the holds just recounted.
            await programs.rebuild_all(runtime)
            return
        except Exception as error:
            logger.warning("rebuilding the voucher ledgers failed (%s); again shortly", error)
            await asyncio.sleep(REBUILD_RETRY)


async def mark_pod(runtime: Runtime, leading: bool) -> None:
    """Mark (or unmark) this replica's pod as the leader: the label the chart's webhook Service
    selects, and a high deletion cost, so that a rolling update or a scale-down removes the
    standbys first and the leader last (one takeover per upgrade, to a new replica)."""
    options = runtime.options
    if not (options.pod_name and options.pod_namespace):
        return
    try:
        await runtime.hub.mark_pod(
            options.pod_namespace,
            options.pod_name,
            labels={LEADER_LABEL: "true" if leading else None},
            annotations={DELETION_COST: LEADER_DELETION_COST if leading else None},
        )
    except Exception as error:
        metrics.BACKGROUND_TASK_ERRORS.labels("leader-label").inc()
        logger.warning("could not mark pod %s (leader=%s): %s", options.pod_name, leading, error)


async def _serving(runtime: Runtime) -> None:
    """Return once this process's webhook server accepts connections (Kopf starts it after
    the start-up handlers)."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", runtime.options.webhook_port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        return


async def _admit_when_settled(runtime: Runtime) -> None:
    options, takeover = runtime.options, runtime.takeover
    if takeover is not None:
        since = admit_after(
            takeover.previous, takeover.taken_at, options.webhook_timeout, options.lease_duration
        )
        wait = (since - datetime.now(UTC)).total_seconds()
        if wait > 0:
            logger.info(
                "waiting %.0fs before admitting: holds the previous leader admitted may still "
                "be on their way to storage",
                wait,
            )
            runtime.gate.close(f"this replica took over admission and starts in {wait:.0f}s")
            await asyncio.sleep(wait)
            await _rebuild(runtime)
    await _serving(runtime)
    # Only now the webhook Service may route here: the server answers, the ledgers are in.
    await mark_pod(runtime, leading=True)
    runtime.gate.open()
    logger.info("admitting ComputeJobs")


@kopf.on.startup()
async def take_over(memo: kopf.Memo, **_: Any) -> None:
    """Rebuild the ledgers before the watches start; admit once the predecessor's holds are in."""
    runtime: Runtime = memo.runtime
    await _rebuild(runtime)
    runtime.spawn(_admit_when_settled(runtime))
    runtime.spawn(pending_holds.expire_forever(runtime))
    runtime.spawn(recount_forever(runtime))
    runtime.spawn(programs.write_status_forever(runtime))
    runtime.spawn(program_vouchers.issue_forever(runtime))
    runtime.spawn(statements.regenerate_forever(runtime))
    if runtime.options.job_retention_seconds is not None:
        runtime.spawn(retire_forever(runtime, runtime.options.job_retention_seconds))


@kopf.on.cleanup()
async def hand_over(memo: kopf.Memo, **_: Any) -> None:
    """Stop admitting, settle the holds in flight, write the vouchers, release the Lease."""
    runtime: Runtime = memo.runtime
    runtime.gate.close("this replica is stopping; another takes over")
    settled = False
    with contextlib.suppress(TimeoutError):
        settled = await asyncio.wait_for(
            pending_holds.settle_all(runtime), timeout=runtime.options.webhook_timeout + 5
        )
    writes = [
        writer.written(writer.mark())
        for writer in runtime.writers.values()
        if writer.pending_writes
    ]
    if writes:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), FLUSH_TIMEOUT)
    if runtime.elector is not None and runtime.elector.leading:
        await runtime.elector.release(settled)
    for task in list(runtime.background):
        task.cancel()
    await runtime.hub.close()
