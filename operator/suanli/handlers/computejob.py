"""ComputeJob handlers on the hub: record the admission, hand the job to the dispatcher.

The hold itself was committed by the admission webhook before the job was stored; here the
job's status is made to say so (voucher, reservation, worst case, GPUs) before the dispatcher
queues it. Deleting a job stops its remote workload, charges what it used and releases the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from suanli.api.common import ConditionStatus, format_duration, format_money, set_condition
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.api.kinds import COMPUTEJOBS
from suanli.api.meta import GROUP, VERSION
from suanli.api.names import FINALIZER
from suanli.api.reasons import JobConditionType, JobReason
from suanli.api.voucherquota import VoucherQuota
from suanli.handlers.pending_holds import seen_stored
from suanli.handlers.runtime import Runtime
from suanli.kits.retry import delay_after
from suanli.kube import ConflictError, NotFoundError
from suanli.vouchers.holds import read_hold
from suanli.vouchers.ledger import EntryState, Ledger, VoucherGoneError
from suanli.vouchers.recount import restore_hold

logger = logging.getLogger(__name__)


async def _holding_voucher(runtime: Runtime, job: ComputeJob) -> tuple[VoucherQuota, Ledger] | None:
    """The voucher whose ledger holds this job, found by the job's uid.

    A job the ledger does not list yet but whose hold annotation proves its hold (admitted by
    the previous leader a moment before this one took over) gets its hold back first.
    """
    uid = job.metadata.uid or ""
    namespace = job.metadata.namespace or ""
    hold = read_hold(job.metadata.annotations)
    names = (
        [hold.voucher]
        if hold is not None
        else [p.voucher.metadata.name or "" for p in runtime.vouchers.in_namespace(namespace)]
    )
    now = datetime.now(UTC)
    for name in names:
        writer = runtime.ledger_writer(namespace, name)
        try:
            parsed = await writer.load()
            ledger = runtime.book.ledger((namespace, name))
            if ledger is not None and uid not in ledger.entries and hold is not None:
                ledger = await writer.change(lambda current: restore_hold(current, job, now=now))
        except VoucherGoneError:
            continue
        if ledger is not None and uid in ledger.entries:
            return parsed.voucher, ledger
    return None


@kopf.on.event(GROUP, VERSION, COMPUTEJOBS, id="computejob-events")
async def computejob_event(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    """Every ComputeJob event, and every job listed at start-up (Kopf runs them one at a time
    per object): hold the finalizer, record a new job's admission, hand it to the dispatcher;
    once deleted, stop and charge it, then let it go.

    An event handler with our own finalizer rather than Kopf's on.create, on.resume and
    on.delete, because those also make Kopf keep its last-handled-configuration annotation on
    every job: a second metadata PATCH per job, each passing through the validating webhooks,
    for diffs that nothing here uses. The dispatcher knows which jobs it follows, and the
    job's status says whether its admission has been recorded.
    """
    runtime: Runtime = memo.runtime
    metadata = body.get("metadata") or {}
    finalizers = list(metadata.get("finalizers") or [])
    seen_stored(runtime, str(metadata.get("uid") or ""))
    if type == "DELETED":
        return
    if metadata.get("deletionTimestamp"):
        if FINALIZER in finalizers:
            job = ComputeJob.model_validate(dict(body))
            await _until_done(f"releasing {_name(job)}", lambda: _release(runtime, job))
        return
    if FINALIZER not in finalizers:
        await _add_finalizer(runtime, metadata, finalizers)
    if runtime.dispatcher.knows(str(metadata.get("uid") or "")):
        return  # mostly the echo of our own writes
    job = ComputeJob.model_validate(dict(body))
    if job.status.voucher is None and job.status.phase is None:
        await _until_done(
            f"recording the admission of {_name(job)}", lambda: _record_admission(runtime, job)
        )
    elif job.status.voucher is not None:
        await runtime.dispatcher.job_seen(job)


def _name(job: ComputeJob) -> str:
    return f"ComputeJob {job.metadata.namespace}/{job.metadata.name}"


async def _until_done(what: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` until it succeeds or the job is gone (Kopf does not retry event handlers)."""
    for attempt in itertools.count():
        try:
            await step()
            return
        except NotFoundError:
            return  # the job is gone, and with it anything left to do for it
        except Exception as error:
            delay = delay_after(attempt + 1)
            logger.warning("%s failed (%s); again in %.0fs", what, error, delay)
            await asyncio.sleep(delay)


async def _add_finalizer(
    runtime: Runtime, metadata: Mapping[str, Any], finalizers: list[str]
) -> None:
    # Guarded by the resourceVersion: if the job changed meanwhile the patch is refused, and
    # the event of that change brings us back here.
    patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": metadata["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": [*finalizers, FINALIZER]},
    ]
    with contextlib.suppress(ConflictError, NotFoundError, ApiException):
        await runtime.hub.json_patch(
            COMPUTEJOBS, metadata.get("namespace"), metadata["name"], patch
        )


async def _release(runtime: Runtime, job: ComputeJob) -> None:
    """The job was deleted: stop its workload, charge what it used, release the rest."""
    await runtime.dispatcher.job_deleted(job)
    found = await _holding_voucher(runtime, job)
    if found is not None:
        voucher = found[0]
        uid = job.metadata.uid or ""
        writer = runtime.ledger_writer(
            voucher.metadata.namespace or "", voucher.metadata.name or ""
        )
        # Release what is still held, then fold the entry (its charges stay in `spent`): the
        # job is gone, and its usage records keep what it was charged. A voucher that went
        # first (its namespace is being deleted) has nothing left to release.
        with contextlib.suppress(VoucherGoneError):
            await writer.change(lambda ledger: ledger.close(uid).fold(uid))
    finalizers = list(job.metadata.finalizers or [])
    position = finalizers.index(FINALIZER)
    patch = [
        {"op": "test", "path": f"/metadata/finalizers/{position}", "value": FINALIZER},
        {"op": "remove", "path": f"/metadata/finalizers/{position}"},
    ]
    namespace, name = job.metadata.namespace, job.metadata.name or ""
    try:
        await runtime.hub.json_patch(COMPUTEJOBS, namespace, name, patch)
    except (ApiException, ConflictError) as error:
        if getattr(error, "status", 409) not in (409, 422):  # the list changed: read it again
            raise
        current = await runtime.hub.get(COMPUTEJOBS, namespace, name)
        job.metadata.finalizers = (current.get("metadata") or {}).get("finalizers") or []
        if FINALIZER in job.metadata.finalizers:
            raise


async def _record_admission(runtime: Runtime, job: ComputeJob) -> None:
    """Make the new job's status say what the webhook reserved, then queue it."""
    now = datetime.now(UTC)
    status = job.status.model_copy(deep=True)
    status.total_gpus = job.spec.total_gpus
    status.observed_generation = job.metadata.generation
    found = await _holding_voucher(runtime, job)
    conditions = status.conditions
    if found is None:
        # Admitted while no hold was written cannot happen with the webhook in place; if the
        # webhook was bypassed, say so rather than run the job unpaid.
        status.phase = JobPhase.REJECTED
        message = "No voucher holds a reservation for this job; it will not be dispatched."
        set_condition(
            conditions,
            JobConditionType.RESERVED,
            ConditionStatus.FALSE,
            JobReason.VOUCHER_NOT_FOUND,
            message,
            now=now,
        )
    else:
        voucher, ledger = found
        entry = ledger.entries[job.metadata.uid or ""]
        status.voucher = voucher.metadata.name
        status.reservation = entry.hold if entry.state is EntryState.RESERVED else None
        status.estimated_cost = entry.hold
        status.phase = JobPhase.PENDING
        # No Event for this one: the condition says it, and an Event per admitted job was a
        # third of the operator's writes to the hub in a burst.
        message = (
            f"Reserved {format_money(entry.hold)} {voucher.spec.currency} on voucher "
            f"{voucher.metadata.name}: the worst case of {job.spec.total_gpus} GPU(s) for "
            f"{format_duration(job.spec.max_runtime)} at the highest eligible price."
        )
        set_condition(
            conditions,
            JobConditionType.RESERVED,
            ConditionStatus.TRUE,
            JobReason.VOUCHER_RESERVED,
            message,
            now=now,
        )
    if found is None:
        patch = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
        await runtime.hub.patch_status(
            COMPUTEJOBS, job.metadata.namespace, job.metadata.name or "", patch
        )
        await runtime.hub.event(
            job.model_dump(mode="json", by_alias=True, exclude_none=True),
            reason=JobReason.VOUCHER_NOT_FOUND,
            message=message,
            warning=True,
        )
        return
    # Not written here: the dispatcher's first write (Dispatched, or Queued with the reason)
    # carries it, one status write per job fewer; it writes it alone if that takes a while.
    await runtime.dispatcher.job_seen(job.model_copy(update={"status": status}), unwritten=True)
