"""ComputeJob handlers on the hub: record the admission, hand the job to the dispatcher.

The hold itself was committed by the admission webhook before the job was stored; here the
job's status is made to say so (voucher, reservation, worst case, GPUs) before the dispatcher
queues it. Deleting a job stops its remote workload, charges what it used and releases the rest.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import kopf

from suanli.api.common import ConditionStatus, format_duration, format_money, set_condition
from suanli.api.computejob import ComputeJob, JobPhase
from suanli.api.meta import GROUP, VERSION
from suanli.api.reasons import JobConditionType, JobReason
from suanli.api.voucherquota import VoucherQuota
from suanli.handlers.ledger_writer import VoucherGoneError
from suanli.handlers.runtime import Runtime
from suanli.handlers.voucher_cache import parse_voucher
from suanli.vouchers.keys import job_key
from suanli.vouchers.ledger import EntryState, Ledger


async def _holding_voucher(runtime: Runtime, job: ComputeJob) -> tuple[VoucherQuota, Ledger] | None:
    """The voucher whose ledger holds this job, found by the job's key."""
    key = job_key(job)
    namespace = job.metadata.namespace or ""
    for parsed in runtime.vouchers.in_namespace(namespace):
        if key in parsed.ledger.entries:
            return parsed.voucher, parsed.ledger
    # The watch may not have delivered the write that holds this job yet: ask the API server.
    for body in await runtime.hub.list("voucherquotas", namespace):
        runtime.vouchers.put(body)
        parsed = parse_voucher(body)
        if key in parsed.ledger.entries:
            return parsed.voucher, parsed.ledger
    return None


@kopf.on.create(GROUP, VERSION, "computejobs", id="computejob-admitted")
async def computejob_admitted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    job = ComputeJob.model_validate(dict(body))
    now = datetime.now(UTC)
    status = job.status
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
        entry = ledger.entries[job_key(job)]
        status.voucher = voucher.metadata.name
        status.reservation = entry.hold if entry.state is EntryState.RESERVED else None
        status.estimated_cost = entry.hold
        status.phase = status.phase or JobPhase.PENDING
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
    patch = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    await runtime.hub.patch_status(
        "computejobs", job.metadata.namespace, job.metadata.name or "", patch
    )
    if found is not None:
        await runtime.dispatcher.job_seen(job)
    await runtime.hub.event(
        dict(body), reason=conditions[-1].reason, message=message, warning=found is None
    )


@kopf.on.resume(GROUP, VERSION, "computejobs", id="computejob-resume")
async def computejob_resume(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """At start-up: queue admitted jobs again, re-attach to those already placed."""
    runtime: Runtime = memo.runtime
    job = ComputeJob.model_validate(dict(body))
    if job.status.voucher is not None:
        await runtime.dispatcher.job_seen(job)


@kopf.on.delete(GROUP, VERSION, "computejobs", id="computejob-release")
async def computejob_release(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    job = ComputeJob.model_validate(dict(body))
    # Stop the remote workload and charge what it used before the rest is released.
    await runtime.dispatcher.job_deleted(job)
    found = await _holding_voucher(runtime, job)
    if found is None:
        return
    voucher = found[0]
    key = job_key(job)
    writer = runtime.ledger_writer(voucher.metadata.namespace or "", voucher.metadata.name or "")
    # Release what is still held, then drop the entry (a charge stays in `spent`), so a new
    # job of the same name can be admitted at once.
    # A voucher that went first (its namespace is being deleted) has nothing left to release.
    with contextlib.suppress(VoucherGoneError):
        await writer.change(lambda ledger: ledger.release(key).forget(key))
